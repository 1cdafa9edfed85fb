"""The organization's audit trail, read-only for admins."""
