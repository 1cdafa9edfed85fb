"""GET /v1/projects/{id}/insights."""
