"""The run store: one DuckDB writer (the ingestor) that turns event logs into tables."""
