"""What the dashboard does that is not drawing: launching, controlling and exporting runs."""
