"""Accounts: users, organizations, members, invitations, sessions, API keys and the rules that
turn a bearer credential into a Principal."""
