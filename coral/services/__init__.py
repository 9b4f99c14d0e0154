"""What the dashboard does that is not drawing: launching, controlling and exporting runs.

The pages (app.py, pages/) import only coral.services, coral.analysis and coral.config
(tests/services/test_backend_seam.py); the error type and the home they handle are re-exported here.
"""

from coral.errors import CoralError as CoralError
from coral.home import Home as Home
