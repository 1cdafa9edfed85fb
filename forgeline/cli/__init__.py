"""`forgeline`: bootstrap an organization or sign up, and drive the API (members, projects,
repositories, environments, pipelines, runs, deployments, agent tasks, billing, notifications);
rotate encryption keys.
Output as rich tables, or JSON with --output json (or --json). Every sub-app is imported here
explicitly: a missing module fails at start."""

from __future__ import annotations

from typing import Annotated

import typer

from forgeline.cli import (
    accounts,
    admin,
    agent,
    billing,
    common,
    config,
    deployments,
    environments,
    insights,
    notifications,
    pipelines,
    projects,
    runs,
)
from forgeline.cli.output import ForgelineGroup

app = typer.Typer(
    help="Forgeline: durable, AI-driven CI/CD. Every read command takes --output json.",
    no_args_is_help=True,
    cls=ForgelineGroup,
)


@app.callback()
def main(
    profile: Annotated[
        str | None,
        typer.Option(
            "--profile",
            envvar="FORGELINE_PROFILE",
            help="Config profile (server URL and key) from $XDG_CONFIG_HOME/forgeline/config.toml.",
        ),
    ] = None,
) -> None:
    common.selected_profile = profile


app.command()(admin.bootstrap)
app.command("rotate-keys")(admin.rotate_keys)
app.command("signup")(accounts.signup)
app.command("login")(accounts.login)
app.add_typer(accounts.members_app, name="members")
app.add_typer(accounts.invitations_app, name="invitations")
app.add_typer(projects.projects_app, name="projects")
app.add_typer(projects.repos_app, name="repos")
app.add_typer(environments.app, name="envs")
app.add_typer(agent.app, name=agent.NAME)
app.add_typer(billing.app, name=billing.NAME)
app.add_typer(runs.app, name=runs.NAME)
app.add_typer(pipelines.app, name=pipelines.NAME)
app.command("deploy")(deployments.deploy)
app.add_typer(deployments.app, name=deployments.NAME)
app.add_typer(notifications.app, name=notifications.NAME)
app.add_typer(insights.app, name=insights.NAME)
app.add_typer(config.app, name=config.NAME)

__all__ = ["app"]
