"""Test helpers, imported only by tests/ and bench/: never by the product (docs/architecture.md)."""
