"""Projects, their repository connection and their environments."""
