"""Agent tasks API: start, read, cancel and list AgentTaskWorkflow runs."""
