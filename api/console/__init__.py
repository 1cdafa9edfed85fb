"""The web console: server-rendered pages (Jinja2 + htmx) served by the API process at /."""
