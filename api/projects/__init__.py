"""Projects domain: projects, their git repository and their deployment environments."""
