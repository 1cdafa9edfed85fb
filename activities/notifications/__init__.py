"""Temporal adapters of the notifications domain."""
