"""`forgeline pipelines ...`: list a project's pipelines, show one with its stages, export it
as GitHub Actions or GitLab CI YAML, pause/resume it, replace its triggers, delete it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from forgeline.cli.common import (
    Connection,
    ProjectRef,
    api_command,
    emit,
    resolve_project,
    uuid_arg,
)

NAME = "pipelines"
app = typer.Typer(help="Pipelines of a project.", no_args_is_help=True)

PIPELINE_COLUMNS = ("id", "name", "pipeline_type", "status", "version", "updated_at")
STAGE_COLUMNS = ("position", "name", "stage_type", "depends_on", "timeout_seconds", "retry_count")
PipelineId = Annotated[str, typer.Argument(callback=uuid_arg, help="Pipeline ID.")]


@api_command(app, "list")
def list_pipelines(conn: Connection, project: ProjectRef) -> None:
    items = conn.call(
        lambda api: api.paginate(f"/v1/projects/{resolve_project(api, project)}/pipelines")
    )
    conn.emit(items, PIPELINE_COLUMNS, title="Pipelines")


@api_command(app, "show")
def show(conn: Connection, pipeline: PipelineId) -> None:
    """A pipeline with its stages and triggers."""
    detail: dict[str, Any] = conn.call(lambda api: api.get(f"/v1/pipelines/{pipeline}"))
    if conn.printed_json(detail):
        return
    emit(detail, PIPELINE_COLUMNS, as_json=False, title=detail["name"])
    emit(detail["stages"], STAGE_COLUMNS, as_json=False, title="Stages")
    if detail.get("triggers"):
        typer.echo("triggers: " + json.dumps(detail["triggers"], sort_keys=True))


@api_command(app, "export", json_output=False)
def export(
    conn: Connection,
    pipeline: PipelineId,
    export_format: Annotated[
        Literal["github-actions", "gitlab-ci"], typer.Option("--format", help="YAML dialect.")
    ] = "github-actions",
) -> None:
    """The pipeline as CI YAML on standard output."""
    text: str = conn.call(
        lambda api: api.text(f"/v1/pipelines/{pipeline}/export", format=export_format)
    )
    typer.echo(text, nl=not text.endswith("\n"))


@api_command(app, "edit")
def edit(
    conn: Connection,
    pipeline: PipelineId,
    status: Annotated[
        Literal["active", "paused"] | None,
        typer.Option(help="Paused pipelines start no runs; their schedules pause too."),
    ] = None,
    triggers_file: Annotated[
        Path | None,
        typer.Option(
            "--triggers-file",
            exists=True,
            dir_okay=False,
            help="JSON object replacing the triggers ('-' is not accepted: use a file).",
        ),
    ] = None,
) -> None:
    """Pause or resume a pipeline, or replace its triggers (validated by the API)."""
    body: dict[str, Any] = {}
    if status:
        body["status"] = status
    if triggers_file is not None:
        try:
            body["triggers"] = json.loads(triggers_file.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise typer.BadParameter(f"not JSON: {exc}", param_hint="--triggers-file") from exc
    if not body:
        raise typer.BadParameter("nothing to change: give --status or --triggers-file")
    detail = conn.call(lambda api: api.patch(f"/v1/pipelines/{pipeline}", body))
    conn.emit(detail, PIPELINE_COLUMNS, title="Pipeline updated")


@api_command(app, "delete", json_output=False)
def delete(
    conn: Connection,
    pipeline: PipelineId,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
) -> None:
    """Delete a pipeline (refused while it has runs in progress)."""
    if not yes:
        typer.confirm(f"Delete pipeline {pipeline}?", abort=True)
    conn.call(lambda api: api.delete(f"/v1/pipelines/{pipeline}"))
    typer.echo(f"Pipeline {pipeline} deleted")
