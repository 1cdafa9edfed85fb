"""Typed activity contracts, one pure module per domain."""
