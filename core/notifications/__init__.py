"""Notifications: events recorded once, delivered to members (in-app, e-mail) and to the
organization's webhook endpoints and Slack channel."""
