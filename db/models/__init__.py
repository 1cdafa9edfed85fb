"""Every ORM model, imported so that Base.metadata knows all tables (Alembic, tests)."""

from __future__ import annotations
