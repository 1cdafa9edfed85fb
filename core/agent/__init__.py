"""Agent domain: repository analysis, pipeline proposals, the agent's tools, task rules and the
writes of its read model."""
