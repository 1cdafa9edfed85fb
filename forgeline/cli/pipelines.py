"""`forgeline pipelines ...`: list a project's pipelines, show one with its stages, export it
as GitHub Actions or GitLab CI YAML, pause/resume it, replace its triggers, delete it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from forgeline.cli.common import (
    ApiKey,
    ApiUrl,
    AsJson,
    client,
    emit,
    resolve_project,
    run,
    uuid_arg,
)

NAME = "pipelines"
app = typer.Typer(help="Pipelines of a project.", no_args_is_help=True)

PIPELINE_COLUMNS = ("id", "name", "pipeline_type", "status", "version", "updated_at")
STAGE_COLUMNS = ("position", "name", "stage_type", "depends_on", "timeout_seconds", "retry_count")
PipelineId = Annotated[str, typer.Argument(callback=uuid_arg, help="Pipeline ID.")]


@app.command("list")
def list_pipelines(
    project: Annotated[str, typer.Argument(help="Project ID or slug.")],
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
    as_json: AsJson = False,
) -> None:
    with client(api_url, api_key) as api:
        project_id = resolve_project(api, project)
        items = run(lambda: api.paginate(f"/v1/projects/{project_id}/pipelines"))
    emit(items, PIPELINE_COLUMNS, as_json=as_json, title="Pipelines")


@app.command("show")
def show(
    pipeline: PipelineId, api_url: ApiUrl = None, api_key: ApiKey = None, as_json: AsJson = False
) -> None:
    """A pipeline with its stages and triggers."""
    with client(api_url, api_key) as api:
        detail: dict[str, Any] = run(lambda: api.get(f"/v1/pipelines/{pipeline}"))
    if as_json:
        emit(detail, (), as_json=True)
        return
    emit(detail, PIPELINE_COLUMNS, as_json=False, title=detail["name"])
    emit(detail["stages"], STAGE_COLUMNS, as_json=False, title="Stages")
    if detail.get("triggers"):
        typer.echo("triggers: " + json.dumps(detail["triggers"], sort_keys=True))


@app.command("export")
def export(
    pipeline: PipelineId,
    export_format: Annotated[
        Literal["github-actions", "gitlab-ci"], typer.Option("--format", help="YAML dialect.")
    ] = "github-actions",
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
) -> None:
    """The pipeline as CI YAML on standard output."""
    with client(api_url, api_key) as api:
        text: str = run(lambda: api.text(f"/v1/pipelines/{pipeline}/export", format=export_format))
    typer.echo(text, nl=not text.endswith("\n"))


@app.command("edit")
def edit(
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
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
    as_json: AsJson = False,
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
    with client(api_url, api_key) as api:
        detail = run(lambda: api.patch(f"/v1/pipelines/{pipeline}", body))
    emit(detail, PIPELINE_COLUMNS, as_json=as_json, title="Pipeline updated")


@app.command("delete")
def delete(
    pipeline: PipelineId,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Delete a pipeline (refused while it has runs in progress)."""
    if not yes:
        typer.confirm(f"Delete pipeline {pipeline}?", abort=True)
    with client(api_url, api_key) as api:
        run(lambda: api.delete(f"/v1/pipelines/{pipeline}"))
    typer.echo(f"Pipeline {pipeline} deleted")
