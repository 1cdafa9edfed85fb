"""`forgeline deploy` and `forgeline deployments ...`: release a run, version or commit to an
environment, list and inspect deployments, decide approvals, roll back and promote. Waiting
commands exit 0 when the deployment is live, 1 when it failed, rolled back or was rejected,
2 when cancelled."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer

from forgeline.api_client import ForgelineClient
from forgeline.cli.common import (
    ApiKey,
    ApiUrl,
    AsJson,
    client,
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


def _wait(api: ForgelineClient, deployment_id: str, timeout: float) -> dict[str, Any]:
    """Poll until the deployment ends or stops to wait for an approval."""
    deadline = time.monotonic() + timeout
    stops = {*TERMINAL_STATUSES, DeploymentStatus.AWAITING_APPROVAL}
    while True:
        detail: dict[str, Any] = run(lambda: api.get(f"/v1/deployments/{deployment_id}"))
        if detail["status"] in stops or time.monotonic() > deadline:
            return detail
        time.sleep(0.5)


def _finish(
    api: ForgelineClient,
    started: dict[str, Any],
    wait: bool,
    timeout: float,
    as_json: bool,
    title: str,
) -> None:
    if not wait:
        emit(started, DEPLOYMENT_COLUMNS, as_json=as_json, title=title)
        return
    detail = _wait(api, started["id"], timeout)
    emit(detail, DEPLOYMENT_COLUMNS, as_json=as_json, title=title)
    status = detail["status"]
    if status == DeploymentStatus.AWAITING_APPROVAL:
        err_console.print(f"Deployment {detail['id']} awaits approval", highlight=False)
        return
    if status not in TERMINAL_STATUSES:
        raise typer.Exit(EXIT_TIMEOUT)
    raise typer.Exit(EXIT_STATUS.get(status, 1))


def deploy(
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
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
    as_json: AsJson = False,
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
    with client(api_url, api_key) as api:
        started = run(lambda: api.post(f"/v1/environments/{environment}/deployments", body))
        _finish(api, started, wait, timeout, as_json, "Deployment started")


@app.command("list")
def list_deployments(
    project: Annotated[str | None, typer.Option(help="Project ID or slug.")] = None,
    env: Annotated[
        str | None, typer.Option("--env", callback=_optional_uuid, help="Environment ID.")
    ] = None,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
    as_json: AsJson = False,
) -> None:
    """Deployments of an environment or of a whole project, newest first."""
    if (project is None) == (env is None):
        raise typer.BadParameter("give exactly one of --project and --env")
    with client(api_url, api_key) as api:
        if env is not None:
            path = f"/v1/environments/{env}/deployments"
        else:
            path = f"/v1/projects/{resolve_project(api, str(project))}/deployments"
        items = run(lambda: api.paginate(path))
    emit(items, DEPLOYMENT_COLUMNS, as_json=as_json, title="Deployments")


@app.command("show")
def show(
    deployment: DeploymentId,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
    as_json: AsJson = False,
) -> None:
    """A deployment with its approvals, health checks and containers."""
    with client(api_url, api_key) as api:
        detail: dict[str, Any] = run(lambda: api.get(f"/v1/deployments/{deployment}"))
    if as_json:
        emit(detail, (), as_json=True)
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


def _decide(
    deployment: str, verb: str, reason: str, api_url: str | None, api_key: str | None, as_json: bool
) -> None:
    with client(api_url, api_key) as api:
        data = run(lambda: api.post(f"/v1/deployments/{deployment}/{verb}", {"reason": reason}))
    emit(
        data,
        ("deployment_id", "approved", "status", "required_approvals"),
        as_json=as_json,
        title=verb,
    )


@app.command("approve")
def approve(
    deployment: DeploymentId,
    reason: Reason = "approved",
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
    as_json: AsJson = False,
) -> None:
    """Approve a deployment waiting at a protected environment's gate."""
    _decide(deployment, "approve", reason, api_url, api_key, as_json)


@app.command("reject")
def reject(
    deployment: DeploymentId,
    reason: Annotated[str, typer.Option("--reason", help="Why (required, audited).")],
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
    as_json: AsJson = False,
) -> None:
    """Reject a deployment waiting for approval."""
    _decide(deployment, "reject", reason, api_url, api_key, as_json)


@app.command("rollback")
def rollback(
    deployment: DeploymentId,
    wait: Wait = False,
    timeout: Timeout = 1800,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
    as_json: AsJson = False,
) -> None:
    """Redeploy the last healthy version before this one (same image, same config)."""
    with client(api_url, api_key) as api:
        started = run(lambda: api.post(f"/v1/deployments/{deployment}/rollback", {}))
        _finish(api, started, wait, timeout, as_json, "Rollback started")


@app.command("promote")
def promote(
    deployment: DeploymentId,
    to: Annotated[str, typer.Option("--to", callback=uuid_arg, help="Target environment ID.")],
    wait: Wait = False,
    timeout: Timeout = 1800,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
    as_json: AsJson = False,
) -> None:
    """Release the same artifact to another environment of the project."""
    with client(api_url, api_key) as api:
        started = run(
            lambda: api.post(f"/v1/deployments/{deployment}/promote", {"target_environment_id": to})
        )
        _finish(api, started, wait, timeout, as_json, "Promotion started")
