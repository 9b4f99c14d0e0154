import sys

from coral.cli import main

sys.exit(main())
