"""`forgeline deploy` and `forgeline deployments ...`: release a run, version or commit to an
environment, list and inspect deployments, decide approvals, roll back and promote. Waiting
commands exit 0 when the deployment is live, 1 when it failed, rolled back or was rejected,
2 when cancelled."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Annotated, Any

import typer

from forgeline.api_client import ForgelineClient
from forgeline.cli.common import (
    Connection,
    api_command,
    connected,
    emit,
    err_console,
    resolve_project,
    run,
    uuid_arg,
)
from forgeline.statuses.deployments import TERMINAL_STATUSES, DeploymentStatus

NAME = "deployments"
app = typer.Typer(
    help="Deployments: list, approve, reject, roll back, promote.", no_args_is_help=True
)

DEPLOYMENT_COLUMNS = ("id", "version", "status", "provider", "url", "created_at", "error")
EXIT_STATUS = {
    DeploymentStatus.ACTIVE: 0,
    DeploymentStatus.SUPERSEDED: 0,
    DeploymentStatus.CANCELLED: 2,
}
EXIT_TIMEOUT = 3
DeploymentId = Annotated[str, typer.Argument(callback=uuid_arg, help="Deployment ID.")]
Wait = Annotated[
    bool,
    typer.Option("--wait", help="Wait until it ends (or awaits approval); exit 0/1/2."),
]
Timeout = Annotated[float, typer.Option(min=1, help="Give up waiting after this many seconds.")]
Reason = Annotated[str, typer.Option("--reason", help="Why (kept in the audit log).")]


def _optional_uuid(value: str | None) -> str | None:
    return None if value is None else uuid_arg(value)


def _wait(
    api: ForgelineClient, deployment_id: str, timeout: float, *, past_gate: bool = False
) -> dict[str, Any]:
    """Poll until the deployment ends or (unless past_gate) stops to wait for an approval."""
    deadline = time.monotonic() + timeout
    stops = {*TERMINAL_STATUSES}
    if not past_gate:
        stops.add(DeploymentStatus.AWAITING_APPROVAL)
    while True:
        detail: dict[str, Any] = run(lambda: api.get(f"/v1/deployments/{deployment_id}"))
        if detail["status"] in stops or time.monotonic() > deadline:
            return detail
        time.sleep(0.5)


def _start(
    conn: Connection,
    request: Callable[[ForgelineClient], Any],
    wait: bool,
    timeout: float,
    title: str,
) -> None:
    """Start a deployment (or a rollback, a promotion): print it, or wait for it and exit with
    its outcome."""
    with conn.client() as api:
        started: dict[str, Any] = run(lambda: request(api))
        if not wait:
            conn.emit(started, DEPLOYMENT_COLUMNS, title=title)
            return
        detail = _wait(api, started["id"], timeout)
    _outcome(conn, detail, title)


def _outcome(conn: Connection, detail: dict[str, Any], title: str) -> None:
    """Print where the deployment stands and exit with it (0 live, 1 failed, 2 cancelled, 3
    still under way; 0 with a note when it awaits approval)."""
    conn.emit(detail, DEPLOYMENT_COLUMNS, title=title)
    status = detail["status"]
    if status == DeploymentStatus.AWAITING_APPROVAL:
        err_console.print(f"Deployment {detail['id']} awaits approval", highlight=False)
        return
    if status not in TERMINAL_STATUSES:
        raise typer.Exit(EXIT_TIMEOUT)
    raise typer.Exit(EXIT_STATUS.get(status, 1))


@connected
def deploy(
    conn: Connection,
    environment: Annotated[str, typer.Argument(callback=uuid_arg, help="Environment ID.")],
    run_id: Annotated[
        str | None, typer.Option("--run", callback=_optional_uuid, help="A successful run's ID.")
    ] = None,
    version: Annotated[str | None, typer.Option(help="A version label (with a source).")] = None,
    commit: Annotated[
        str | None, typer.Option(help="Deploy the newest good run of a commit.")
    ] = None,
    branch: Annotated[str | None, typer.Option(help="With --commit: the run's branch.")] = None,
    source_dir: Annotated[
        str | None, typer.Option(help="A local checkout (development servers only).")
    ] = None,
    output_dir: Annotated[
        str | None, typer.Option(help="Static output directory inside the source.")
    ] = None,
    wait: Wait = False,
    timeout: Timeout = 1800,
) -> None:
    """Deploy a run's build, a commit's or a version to an environment."""
    body: dict[str, Any] = {}
    for key, value in (
        ("pipeline_run_id", run_id),
        ("version", version),
        ("commit_sha", commit),
        ("branch", branch),
        ("source_dir", source_dir),
        ("output_dir", output_dir),
    ):
        if value:
            body[key] = value
    if not (run_id or version or commit):
        raise typer.BadParameter("give --run, --commit or --version")
    _start(
        conn,
        lambda api: api.post(f"/v1/environments/{environment}/deployments", body),
        wait,
        timeout,
        "Deployment started",
    )


@api_command(app, "list")
def list_deployments(
    conn: Connection,
    project: Annotated[str | None, typer.Option(help="Project ID or slug.")] = None,
    env: Annotated[
        str | None, typer.Option("--env", callback=_optional_uuid, help="Environment ID.")
    ] = None,
) -> None:
    """Deployments of an environment or of a whole project, newest first."""
    if (project is None) == (env is None):
        raise typer.BadParameter("give exactly one of --project and --env")
    with conn.client() as api:
        if env is not None:
            path = f"/v1/environments/{env}/deployments"
        else:
            path = f"/v1/projects/{resolve_project(api, str(project))}/deployments"
        items = run(lambda: api.paginate(path))
    conn.emit(items, DEPLOYMENT_COLUMNS, title="Deployments")


@api_command(app, "show")
def show(conn: Connection, deployment: DeploymentId) -> None:
    """A deployment with its approvals, health checks and containers."""
    detail: dict[str, Any] = conn.call(lambda api: api.get(f"/v1/deployments/{deployment}"))
    if conn.printed_json(detail):
        return
    emit(detail, DEPLOYMENT_COLUMNS, as_json=False, title="Deployment")
    approvals = detail.get("approvals")
    if approvals:
        typer.echo(f"approvals: {approvals['approved']}/{approvals['required']}")
    if detail.get("health_checks"):
        emit(
            detail["health_checks"],
            ("check_number", "phase", "ok", "status_code", "latency_ms"),
            as_json=False,
            title="Health checks",
        )


def _decide(conn: Connection, deployment: str, verb: str, reason: str) -> None:
    data = conn.call(
        lambda api: api.post(f"/v1/deployments/{deployment}/{verb}", {"reason": reason})
    )
    conn.emit(data, ("deployment_id", "approved", "status", "required_approvals"), title=verb)


@api_command(app, "approve")
def approve(conn: Connection, deployment: DeploymentId, reason: Reason = "approved") -> None:
    """Approve a deployment waiting at a protected environment's gate."""
    _decide(conn, deployment, "approve", reason)


@api_command(app, "reject")
def reject(
    conn: Connection,
    deployment: DeploymentId,
    reason: Annotated[str, typer.Option("--reason", help="Why (required, audited).")],
) -> None:
    """Reject a deployment waiting for approval."""
    _decide(conn, deployment, "reject", reason)


@api_command(app, "rollback")
def rollback(
    conn: Connection, deployment: DeploymentId, wait: Wait = False, timeout: Timeout = 1800
) -> None:
    """Redeploy the last healthy version before this one (same image, same config)."""
    _start(
        conn,
        lambda api: api.post(f"/v1/deployments/{deployment}/rollback", {}),
        wait,
        timeout,
        "Rollback started",
    )


@api_command(app, "promote")
def promote(
    conn: Connection,
    deployment: DeploymentId,
    to: Annotated[str, typer.Option("--to", callback=uuid_arg, help="Target environment ID.")],
    wait: Wait = False,
    timeout: Timeout = 1800,
) -> None:
    """Release the same artifact to another environment of the project."""
    body = {"target_environment_id": to}
    _start(
        conn,
        lambda api: api.post(f"/v1/deployments/{deployment}/promote", body),
        wait,
        timeout,
        "Promotion started",
    )


@api_command(app, "watch")
def watch(conn: Connection, deployment: DeploymentId, timeout: Timeout = 1800) -> None:
    """Wait until the deployment ends, through its approval gate; exit 0 live, 1 failed,
    rolled back or rejected, 2 cancelled, 3 still under way at the timeout."""
    with conn.client() as api:
        detail = _wait(api, deployment, timeout, past_gate=True)
    if detail["status"] == DeploymentStatus.AWAITING_APPROVAL:
        conn.emit(detail, DEPLOYMENT_COLUMNS, title="Deployment (still awaiting approval)")
        raise typer.Exit(EXIT_TIMEOUT)
    _outcome(conn, detail, "Deployment")
