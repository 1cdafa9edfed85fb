"""Chaos scenarios: the stack's processes run separately and are killed and restarted mid-work."""
