"""`forgeline insights project|org`: delivery insight of a project or of the whole organization
over a window (`30d`): success rate, durations, flakiest stages and the DORA metrics."""

from __future__ import annotations

import re
from typing import Annotated, Any

import typer

from forgeline.cli.common import Connection, ProjectRef, api_command, emit, resolve_project

NAME = "insights"
app = typer.Typer(help="Delivery insight of a project or the organization.", no_args_is_help=True)
WINDOW = re.compile(r"^[1-9][0-9]{0,2}d$")


def _window(value: str) -> str:
    if not WINDOW.match(value) or int(value[:-1]) > 365:
        raise typer.BadParameter("Nd with N from 1 to 365 (for example 30d)")
    return value


WindowOption = Annotated[
    str, typer.Option("--window", callback=_window, help="Nd, N from 1 to 365.")
]
PIPELINE_COLUMNS = ("pipeline_name", "runs", "success_rate", "p50_s", "p95_s", "queue_p50_s")
FLAKY_COLUMNS = ("stage_name", "pipeline_id", "runs", "passed_on_retry", "failed_then_passed")
PROJECT_COLUMNS = ("project_slug", "runs", "success_rate", "p50_s", "p95_s", "deployments")
DORA_COLUMNS = (
    "deployments",
    "deployment_frequency_per_day",
    "lead_time_mean_seconds",
    "change_failure_rate",
    "time_to_restore_mean_seconds",
    "unrestored_failures",
)


def _timed(row: dict[str, Any]) -> dict[str, Any]:
    durations = row.get("duration_seconds") or {}
    return {
        **row,
        "p50_s": durations.get("p50"),
        "p95_s": durations.get("p95"),
        "queue_p50_s": (row.get("queue_seconds") or {}).get("p50"),
        "deployments": (row.get("dora") or {}).get("deployments"),
    }


def _show(data: dict[str, Any], heading: str) -> None:
    summary = {"runs": data["runs"], "success_rate": data["success_rate"]}
    emit(summary, ("runs", "success_rate"), as_json=False, title=heading)
    emit(data["dora"], DORA_COLUMNS, as_json=False, title="DORA")
    if data.get("projects"):
        rows = [_timed(p) for p in data["projects"]]
        emit(rows, PROJECT_COLUMNS, as_json=False, title="Projects")
    if data["pipelines"]:
        rows = [_timed(p) for p in data["pipelines"]]
        emit(rows, PIPELINE_COLUMNS, as_json=False, title="Pipelines")
    if data["flakiest_stages"]:
        emit(data["flakiest_stages"], FLAKY_COLUMNS, as_json=False, title="Flakiest stages")


@api_command(app, "project")
def project_insights(conn: Connection, project: ProjectRef, window: WindowOption = "30d") -> None:
    """A project's insight over the window."""

    def read(api: Any) -> Any:
        project_id = resolve_project(api, project)
        return api.get(f"/v1/projects/{project_id}/insights", window=window)

    data: dict[str, Any] = conn.call(read)
    if not conn.printed_json(data):
        _show(data, f"Project insight, last {data['window_days']} days")


@api_command(app, "org")
def organization_insights(conn: Connection, window: WindowOption = "30d") -> None:
    """The organization's insight over the window: all its projects, and each one."""

    def read(api: Any) -> Any:
        organization = api.get("/v1/organizations/current")
        return api.get(f"/v1/organizations/{organization['id']}/insights", window=window)

    data: dict[str, Any] = conn.call(read)
    if not conn.printed_json(data):
        _show(data, f"Organization insight, last {data['window_days']} days")
