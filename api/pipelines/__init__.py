"""Pipelines API: list, read with stages, export as GitHub Actions or GitLab CI YAML."""
