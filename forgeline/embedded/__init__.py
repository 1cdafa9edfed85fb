"""Embedded services for `make run` and the tests: PostgreSQL and the Temporal dev server."""
