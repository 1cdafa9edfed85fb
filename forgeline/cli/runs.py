"""`forgeline runs ...`: trigger, list, show, watch, logs, cancel and rerun pipeline runs. The
waiting commands exit like `gh run watch --exit-status`: 0 success, 1 failed, 2 cancelled."""

from __future__ import annotations

import os
import time
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import quote

import typer
from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from forgeline.api_client import ForgelineClient
from forgeline.cli.common import (
    Connection,
    api_command,
    console,
    emit,
    err_console,
    run,
    uuid_arg,
)
from forgeline.statuses.runs import FINISHED_RUN_STATUSES, RunStatus

NAME = "runs"
app = typer.Typer(help="Pipeline runs: trigger, follow, cancel, rerun.", no_args_is_help=True)

RUN_COLUMNS = ("id", "run_number", "status", "trigger", "branch", "duration_seconds", "error")
STAGE_COLUMNS = ("stage_name", "attempt", "status", "exit_code", "duration_ms", "failure_class")
EXIT_STATUS: dict[str, int] = {RunStatus.SUCCESS: 0, RunStatus.FAILED: 1, RunStatus.CANCELLED: 2}
# A wait that runs out of time: neither a success nor a failure of the run.
EXIT_TIMEOUT = 3
STATUS_STYLE = {
    "success": "green",
    "failed": "red",
    "timed_out": "red",
    "cancelled": "yellow",
    "running": "cyan",
    "skipped": "dim",
}

RunId = Annotated[str, typer.Argument(callback=uuid_arg, help="Run ID.")]
PipelineId = Annotated[str, typer.Argument(callback=uuid_arg, help="Pipeline ID.")]
Wait = Annotated[bool, typer.Option("--wait", help="Wait; exit 0/1/2 = ok/failed/cancelled.")]
Interval = Annotated[float, typer.Option(min=0.1, max=60, help="Seconds between polls.")]
Timeout = Annotated[
    float, typer.Option(min=1, help="Give up waiting after this many seconds (exit 3).")
]


def _variables(pairs: list[str], secret_envs: list[str]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise typer.BadParameter(f"{pair!r} is not NAME=VALUE", param_hint="--var")
        out.append({"name": name, "value": value, "secret": False})
    for name in secret_envs:
        secret = os.environ.get(name)
        if secret is None:
            raise typer.BadParameter(f"{name} is not set", param_hint="--secret-env")
        out.append({"name": name, "value": secret, "secret": True})
    return out


def _seconds(stage: dict[str, Any], now: datetime | None) -> str:
    if stage.get("duration_ms") is not None:
        return f"{stage['duration_ms'] / 1000:.1f}s"
    started = stage.get("started_at")
    if started and now is not None:
        elapsed = now - datetime.fromisoformat(started)
        return f"{max(elapsed.total_seconds(), 0):.0f}s…"
    return ""


def stage_graph(detail: dict[str, Any], now: datetime | None = None) -> Group:
    """The run's stages in order with status, attempt and duration; waiting stages included."""
    head = Text.assemble(
        f"Run #{detail['run_number']} ",
        (str(detail["status"]), STATUS_STYLE.get(str(detail["status"]), "")),
        f"  {detail.get('branch') or ''} {(detail.get('commit_sha') or '')[:12]}",
    )
    table = Table(show_edge=False, box=None, pad_edge=False)
    for column in ("stage", "status", "attempt", "duration", "note"):
        table.add_column(column)
    latest: dict[str, dict[str, Any]] = {}
    for stage in detail.get("stages", []):
        latest[stage["stage_name"]] = stage  # attempts come in order: keep the last
    live = detail.get("live") or {}
    for name in live.get("pending", []) or []:
        latest.setdefault(str(name), {"stage_name": name, "status": "pending"})
    for stage in latest.values():
        status = str(stage["status"])
        note = stage.get("failure_cause") or stage.get("skip_reason") or stage.get("error") or ""
        if stage.get("reused_from_run_id"):
            note = f"reused from {stage['reused_from_run_id']}"
        table.add_row(
            stage["stage_name"],
            Text(status, style=STATUS_STYLE.get(status, "")),
            str(stage.get("attempt") or ""),
            _seconds(stage, now),
            str(note)[:80],
        )
    return Group(head, table)


def _now(detail: dict[str, Any]) -> datetime | None:
    started = detail.get("started_at") or detail.get("queued_at")
    if not started:
        return None
    zone = datetime.fromisoformat(started).tzinfo
    return datetime.now(zone)


def wait_for_run(
    api: ForgelineClient, run_id: str, *, interval: float, timeout: float, live: bool
) -> dict[str, Any]:
    """Poll the run until it finishes (or time runs out), drawing the stage graph live when
    asked to; the last detail read is returned."""
    deadline = time.monotonic() + timeout
    detail: dict[str, Any] = run(lambda: api.get(f"/v1/runs/{run_id}"))
    if not live:
        while detail["status"] not in FINISHED_RUN_STATUSES and time.monotonic() < deadline:
            time.sleep(interval)
            detail = run(lambda: api.get(f"/v1/runs/{run_id}"))
        return detail
    with Live(stage_graph(detail, _now(detail)), console=console, auto_refresh=False) as view:
        while detail["status"] not in FINISHED_RUN_STATUSES and time.monotonic() < deadline:
            time.sleep(interval)
            detail = run(lambda: api.get(f"/v1/runs/{run_id}"))
            view.update(stage_graph(detail, _now(detail)), refresh=True)
    return detail


def exit_for(detail: dict[str, Any]) -> int:
    return EXIT_STATUS.get(str(detail.get("status")), EXIT_TIMEOUT)


def finish(
    conn: Connection,
    api: ForgelineClient,
    started: dict[str, Any],
    *,
    title: str,
    wait: bool,
    interval: float,
    timeout: float,
) -> None:
    """After a run was started: print it, or wait for it and exit with its outcome."""
    if not wait:
        conn.emit(started, RUN_COLUMNS, title=title)
        return
    detail = wait_for_run(
        api, started["id"], interval=interval, timeout=timeout, live=not conn.as_json
    )
    conn.printed_json(detail)
    raise typer.Exit(exit_for(detail))


@api_command(app, "trigger")
def trigger(
    conn: Connection,
    pipeline: PipelineId,
    branch: Annotated[str | None, typer.Option(help="Branch (default: the repository's).")] = None,
    commit: Annotated[str | None, typer.Option(help="Commit SHA (default: branch head).")] = None,
    var: Annotated[list[str] | None, typer.Option("--var", help="NAME=VALUE, repeatable.")] = None,
    secret_env: Annotated[
        list[str] | None,
        typer.Option("--secret-env", help="A secret variable read from this environment name."),
    ] = None,
    environment: Annotated[
        str | None, typer.Option("--env", callback=lambda v: v and uuid_arg(v), help="Env ID.")
    ] = None,
    wait: Wait = False,
    interval: Interval = 1.0,
    timeout: Timeout = 3600,
) -> None:
    """Start a run of a pipeline."""
    body: dict[str, Any] = {
        "trigger": "manual",
        "variables": _variables(var or [], secret_env or []),
    }
    for key, value in (("branch", branch), ("commit_sha", commit), ("environment_id", environment)):
        if value:
            body[key] = value
    with conn.client() as api:
        started: dict[str, Any] = run(lambda: api.post(f"/v1/pipelines/{pipeline}/runs", body))
        if wait and not conn.as_json:
            err_console.print(f"Run #{started['run_number']} {started['id']}", highlight=False)
        finish(
            conn, api, started, title="Run started", wait=wait, interval=interval, timeout=timeout
        )


@api_command(app, "list")
def list_runs(
    conn: Connection,
    pipeline: PipelineId,
    status: Annotated[RunStatus | None, typer.Option(help="Only runs in this status.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="At most this many.")] = 50,
) -> None:
    """Runs of a pipeline, newest first."""
    items = conn.call(
        lambda api: api.paginate(
            f"/v1/pipelines/{pipeline}/runs",
            limit=min(limit, 100),
            most=limit,
            status=status.value if status else None,
        )
    )
    conn.emit(items, RUN_COLUMNS, title="Runs")


@api_command(app, "show")
def show(conn: Connection, run_id: RunId) -> None:
    """A run with its stage executions."""
    detail: dict[str, Any] = conn.call(lambda api: api.get(f"/v1/runs/{run_id}"))
    if conn.printed_json(detail):
        return
    emit(detail, RUN_COLUMNS, as_json=False, title=f"Run #{detail['run_number']}")
    console.print(stage_graph(detail, _now(detail)))


@api_command(app, "watch")
def watch(
    conn: Connection,
    run_id: RunId,
    interval: Interval = 1.0,
    timeout: Timeout = 3600,
    exit_status: Annotated[
        bool, typer.Option("--exit-status/--no-exit-status", help="Exit 1/2 if failed/cancelled.")
    ] = True,
) -> None:
    """The stage graph with live statuses and durations until the run ends."""
    with conn.client() as api:
        detail = wait_for_run(
            api, run_id, interval=interval, timeout=timeout, live=not conn.as_json
        )
    conn.printed_json(detail)
    code = exit_for(detail)
    if exit_status or code == EXIT_TIMEOUT:
        raise typer.Exit(code)


@api_command(app, "logs", json_output=False)
def logs(
    conn: Connection,
    run_id: RunId,
    stage: Annotated[str | None, typer.Argument(help="Stage name (default: every stage).")] = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Stream new lines until the stage ends.")
    ] = False,
    attempt: Annotated[int | None, typer.Option(min=1, max=1000, help="One attempt.")] = None,
) -> None:
    """A stage's log (its latest attempt), or every stage's one after the other; with
    --follow, live lines that survive dropped connections (resumed where they stopped)."""
    if stage is not None and (not stage or len(stage) > 100 or not stage.isprintable()):
        raise typer.BadParameter("1 to 100 printable characters", param_hint="STAGE")
    with conn.client() as api:
        names = _stage_names(api, run_id) if stage is None else [stage]
        for name in names:
            # Quoted whole: a stage name never adds path segments (`..`, `/`, `?`).
            path = f"/v1/runs/{run_id}/stages/{quote(name, safe='')}/logs"
            if not follow:
                text: str = run(lambda path=path: api.text(path, attempt=attempt))
                if len(names) > 1:
                    typer.echo(f"==> {name} <==")
                typer.echo(text, nl=not text.endswith("\n") and bool(text))
                continue
            if len(names) > 1:
                typer.echo(f"==> {name} <==")
            end = run(lambda path=path: _follow(api, path, attempt))
            if end not in ("success", "skipped") and stage is not None:
                err_console.print(f"stage {name} ended: {end}", highlight=False)


def _stage_names(api: ForgelineClient, run_id: str) -> list[str]:
    """The pipeline's stages in order (a run just triggered has no executions yet), then any
    stage the run executed that the pipeline no longer has."""
    detail: dict[str, Any] = run(lambda: api.get(f"/v1/runs/{run_id}"))
    pipeline: dict[str, Any] = run(lambda: api.get(f"/v1/pipelines/{detail['pipeline_id']}"))
    ordered = sorted(pipeline["stages"], key=lambda s: s["position"])
    names = [s["name"] for s in ordered]
    names += [s["stage_name"] for s in detail["stages"]]
    return list(dict.fromkeys(names))


def _follow(api: ForgelineClient, path: str, attempt: int | None) -> str:
    for event in api.events(path, follow="true", attempt=attempt):
        if event.event == "line":
            typer.echo(event.data)
        elif event.event == "attempt":
            err_console.print(f"-- attempt {event.data} --", highlight=False)
        elif event.event == "end":
            return event.data
    return "unknown"


@api_command(app, "cancel")
def cancel(conn: Connection, run_id: RunId) -> None:
    """Cancel a queued or running run (its stages are stopped)."""
    data = conn.call(lambda api: api.post(f"/v1/runs/{run_id}/cancel", {}))
    conn.emit(data, RUN_COLUMNS, title="Cancel requested")


@api_command(app, "rerun")
def rerun(
    conn: Connection,
    run_id: RunId,
    from_failed: Annotated[
        bool, typer.Option("--from-failed", help="Reuse the stages that succeeded.")
    ] = False,
    wait: Wait = False,
    interval: Interval = 1.0,
    timeout: Timeout = 3600,
) -> None:
    """Run a finished run again (same commit and variables) as a new run."""
    mode = "failed" if from_failed else "start"
    with conn.client() as api:
        started: dict[str, Any] = run(
            lambda: api.request("POST", f"/v1/runs/{run_id}/rerun", params={"from": mode})
        )
        finish(
            conn, api, started, title="Rerun started", wait=wait, interval=interval, timeout=timeout
        )
