"""`forgeline pipelines ...`: list a project's pipelines, show one with its stages, create one
from a YAML document, edit its document (in $EDITOR or from a file), pause/resume it, replace
its triggers, export it (its own YAML, GitHub Actions, GitLab CI), list its versions and diff
two of them, archive it."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from forgeline.api_client import ApiError
from forgeline.cli.common import (
    Connection,
    ProjectRef,
    api_command,
    emit,
    err_console,
    fail,
    resolve_project,
    uuid_arg,
)
from forgeline.safe_parsing import MAX_DOCUMENT_BYTES

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
        Literal["github-actions", "gitlab-ci", "forgeline"],
        typer.Option(
            "--format", help="YAML dialect (forgeline: its own document, a .forgeline.yml)."
        ),
    ] = "github-actions",
) -> None:
    """The pipeline as YAML on standard output."""
    if export_format == "forgeline":
        text = conn.call(lambda api: api.get_yaml(f"/v1/pipelines/{pipeline}")).text
    else:
        text = conn.call(
            lambda api: api.text(f"/v1/pipelines/{pipeline}/export", format=export_format)
        )
    typer.echo(text, nl=not text.endswith("\n"))


def _read_document(path: Path) -> str:
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_DOCUMENT_BYTES + 1)
    except OSError as exc:
        raise typer.BadParameter(f"cannot read it: {exc.strerror}", param_hint="--file") from exc
    if len(raw) > MAX_DOCUMENT_BYTES:
        raise typer.BadParameter(f"larger than {MAX_DOCUMENT_BYTES} bytes", param_hint="--file")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise typer.BadParameter("not UTF-8 text", param_hint="--file") from exc


def _in_editor(text: str) -> tuple[str, Path]:
    """The text after $VISUAL/$EDITOR (default vi) edited it; the file is kept until sent."""
    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR")
    if not editor:
        if not sys.stdin.isatty():
            # A script has no one to type into vi: say what to do instead.
            raise typer.BadParameter("no editor: set $EDITOR, or pass --file")
        editor = "vi"
    handle, name = tempfile.mkstemp(prefix="forgeline-pipeline-", suffix=".yml")
    path = Path(name)
    with os.fdopen(handle, "w", encoding="utf-8") as out:
        out.write(text)
    status = subprocess.run([*shlex.split(editor), str(path)], check=False).returncode
    if status != 0:
        err_console.print(f"Editor exited with {status}; nothing sent (your text: {path})")
        raise typer.Exit(1)
    return _read_document(path), path


@api_command(app, "edit")
def edit(
    conn: Connection,
    pipeline: PipelineId,
    file: Annotated[
        Path | None,
        typer.Option(
            "--file", "-f", dir_okay=False, help="A YAML document replacing the definition."
        ),
    ] = None,
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
    """Edit the pipeline's YAML document in $EDITOR (or send --file), saved as a new version
    unless it changed meanwhile; or pause/resume it, or replace its triggers."""
    body: dict[str, Any] = {}
    if status:
        body["status"] = status
    if triggers_file is not None:
        try:
            body["triggers"] = json.loads(triggers_file.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise typer.BadParameter(f"not JSON: {exc}", param_hint="--triggers-file") from exc
    if body:
        if file is not None:
            raise typer.BadParameter("--file replaces everything: give it alone")
        detail = conn.call(lambda api: api.patch(f"/v1/pipelines/{pipeline}", body))
        conn.emit(detail, PIPELINE_COLUMNS, title="Pipeline updated")
        return
    url = f"/v1/pipelines/{pipeline}"
    current = conn.call(lambda api: api.get_yaml(url))
    kept: Path | None = None
    if file is not None:
        text = _read_document(file)
    else:
        text, kept = _in_editor(current.text)
    if text == current.text:
        typer.echo("No changes", err=True)
        return
    with conn.client() as api:
        try:
            saved = api.send_yaml("PUT", url, text, if_match=current.etag)
        except ApiError as exc:
            if kept is not None:
                err_console.print(f"Your edit is kept in {kept}", markup=False)
            fail(exc)
    if kept is not None:
        kept.unlink(missing_ok=True)
    version = (saved.etag or "").strip('"')
    if conn.printed_json({"id": pipeline, "version": int(version) if version.isdigit() else None}):
        return
    typer.echo(f"Pipeline {pipeline} saved as version {version}")


@api_command(app, "create")
def create(
    conn: Connection,
    project: ProjectRef,
    file: Annotated[
        Path, typer.Option("--file", "-f", dir_okay=False, help="The pipeline's YAML document.")
    ],
) -> None:
    """A new pipeline of the project from a YAML document (Forgeline's pipeline format)."""
    text = _read_document(file)
    with conn.client() as api:
        project_id = resolve_project(api, project)
        try:
            created = api.send_yaml("POST", f"/v1/projects/{project_id}/pipelines", text)
            detail = api.get(str(created.location))
        except ApiError as exc:
            fail(exc)
    conn.emit(detail, PIPELINE_COLUMNS, title="Pipeline created")


VERSION_COLUMNS = ("version", "change", "author_user_id", "agent_task_id", "created_at")


@api_command(app, "versions")
def versions(
    conn: Connection,
    pipeline: PipelineId,
    diff: Annotated[
        tuple[int, int] | None,
        typer.Option(
            "--diff", help="Show what changed from version A to version B.", metavar="A B"
        ),
    ] = None,
) -> None:
    """The pipeline's versions, newest first (each change is one), or the diff of two."""
    url = f"/v1/pipelines/{pipeline}"
    if diff is not None:
        old, new = diff
        if min(old, new) < 1:
            raise typer.BadParameter("versions are numbered from 1", param_hint="--diff")
        answer = conn.call(lambda api: api.get(f"{url}/diff", **{"from": old, "to": new}))
        if not conn.printed_json(answer):
            typer.echo(answer["diff"], nl=False)
        return
    items = conn.call(lambda api: api.get(f"{url}/versions", limit=200))["items"]
    conn.emit(items, VERSION_COLUMNS, title="Versions")


@api_command(app, "delete", json_output=False)
def delete(
    conn: Connection,
    pipeline: PipelineId,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
) -> None:
    """Delete (archive) a pipeline: it starts no more runs and leaves lists; its runs and
    versions are kept. Refused while it has runs in progress."""
    if not yes:
        typer.confirm(f"Delete pipeline {pipeline}?", abort=True)
    conn.call(lambda api: api.delete(f"/v1/pipelines/{pipeline}"))
    typer.echo(f"Pipeline {pipeline} deleted (archived; its runs are kept)")
