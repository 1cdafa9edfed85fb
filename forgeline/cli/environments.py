"""`forgeline envs show|update|delete`: one deployment environment read, changed (name, type,
protection, approvals, provider config) or deleted; `envs create|list` are beside the projects."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from forgeline.cli.common import Connection, api_command, err_console, uuid_arg
from forgeline.cli.projects import envs_app

# One `envs` group: create and list are declared beside the projects, the rest here.
app = envs_app
EnvironmentId = Annotated[str, typer.Argument(callback=uuid_arg, help="Environment ID.")]
DETAIL_COLUMNS = ("id", "name", "env_type", "provider", "is_protected", "required_approvals")


@api_command(envs_app, "show")
def show(conn: Connection, environment: EnvironmentId) -> None:
    """An environment with its protection and provider."""
    conn.emit(conn.call(lambda api: api.get(f"/v1/environments/{environment}")), DETAIL_COLUMNS)


@api_command(envs_app, "update")
def update(
    conn: Connection,
    environment: EnvironmentId,
    name: Annotated[str | None, typer.Option(help="A new name.")] = None,
    env_type: Annotated[
        str | None, typer.Option("--type", help="development, staging, production or preview.")
    ] = None,
    protected: Annotated[
        bool | None, typer.Option("--protected/--unprotected", help="Require approvals.")
    ] = None,
    approvals: Annotated[
        int | None,
        typer.Option("--required-approvals", min=0, max=10, help="Approvals a deployment needs."),
    ] = None,
    auto_deploy: Annotated[
        bool | None, typer.Option("--auto-deploy/--no-auto-deploy", help="Deploy green runs.")
    ] = None,
    config: Annotated[
        str | None, typer.Option(help="Provider config as a JSON object (replaces it).")
    ] = None,
) -> None:
    """Change only what is given; deployments already made keep the settings they ran with."""
    body: dict[str, Any] = {
        key: value
        for key, value in (
            ("name", name),
            ("env_type", env_type),
            ("is_protected", protected),
            ("required_approvals", approvals),
            ("auto_deploy", auto_deploy),
        )
        if value is not None
    }
    if config is not None:
        try:
            body["config"] = json.loads(config)
        except ValueError as exc:
            err_console.print(f"Error: --config is not valid JSON: {exc}", markup=False)
            raise typer.Exit(2) from exc
    if not body:
        raise typer.BadParameter("nothing to change: give at least one option")
    changed = conn.call(lambda api: api.patch(f"/v1/environments/{environment}", body))
    conn.emit(changed, DETAIL_COLUMNS, title="Environment updated")


@api_command(envs_app, "delete", json_output=False)
def delete(
    conn: Connection,
    environment: EnvironmentId,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete an environment (refused while deployments still refer to it)."""
    if not yes:
        typer.confirm(f"Delete environment {environment}?", abort=True)
    conn.call(lambda api: api.delete(f"/v1/environments/{environment}"))
    typer.echo(f"Deleted environment {environment}")
