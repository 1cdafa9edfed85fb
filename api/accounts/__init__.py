"""Identity and access: users, organizations, members, sessions, API keys, TOTP."""
