"""Temporal adapters of the operations domain (the reconciler)."""
