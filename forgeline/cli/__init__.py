"""`forgeline`: bootstrap an organization and drive the API (projects, repositories,
environments, agent tasks, billing); rotate encryption keys. Output as rich tables, or JSON with
--json. Every sub-app is imported here explicitly: a missing module fails at start."""

from __future__ import annotations

import typer

from forgeline.cli import admin, agent, billing, projects

app = typer.Typer(help="Forgeline: durable, AI-driven CI/CD.", no_args_is_help=True)
app.command()(admin.bootstrap)
app.command("rotate-keys")(admin.rotate_keys)
app.add_typer(projects.projects_app, name="projects")
app.add_typer(projects.repos_app, name="repos")
app.add_typer(projects.envs_app, name="envs")
app.add_typer(agent.app, name=agent.NAME)
app.add_typer(billing.app, name=billing.NAME)

__all__ = ["app"]
