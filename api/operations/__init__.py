"""Operational reads: workflow executions, infrastructure resources, project files."""
