"""Pipeline definitions (generated or edited): reads and export."""
