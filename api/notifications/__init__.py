"""HTTP routes of notifications: the inbox, preferences, webhook endpoints and Slack."""
