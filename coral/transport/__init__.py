"""Queues and dicts behind one protocol: `local` (embedded SQLite) and `modal`."""
