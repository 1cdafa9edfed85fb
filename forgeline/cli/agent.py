"""`forgeline agent ...`: start an agent task on a project, wait for it, print the pipeline YAML."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer

from forgeline.api_client import ForgelineClient
from forgeline.cli.common import (
    Connection,
    ProjectRef,
    api_command,
    console,
    emit,
    err_console,
    resolve_project,
    run,
)
from forgeline.statuses.agent import TERMINAL_TASK_STATUSES, AgentTaskStatus

NAME = "agent"
app = typer.Typer(help="AI agent tasks: generate and troubleshoot pipelines.", no_args_is_help=True)
TASK_COLUMNS = ("id", "task_type", "status", "tokens_used", "error")


def _export(api: ForgelineClient, pipeline_id: str, fmt: str) -> str:
    # The export endpoint answers YAML, not JSON: read the body as text.
    text: str = api.text(f"/v1/pipelines/{pipeline_id}/export", format=fmt)
    return text


def _wait(api: ForgelineClient, task_id: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    with console.status("agent working...") as status:
        while True:
            task: dict[str, Any] = run(lambda: api.get(f"/v1/agent-tasks/{task_id}"))
            if task["status"] in TERMINAL_TASK_STATUSES or time.monotonic() > deadline:
                return task
            # The workflow's live phase: turns, then the verification runs one by one.
            phase = (task.get("live") or {}).get("phase")
            if phase:
                status.update(f"agent: {phase}...")
            time.sleep(1.0)


def _print_verification(verdict: dict[str, Any]) -> bool:
    """The verification's verdict in words; whether the pipeline ran green."""
    # markup=False: repairs, diagnoses and evidence quote the repository's own log lines.
    for repair in verdict.get("repairs") or []:
        console.print(f"repaired: {repair}", markup=False, highlight=False)
    runs = len(verdict.get("runs") or [])
    if verdict.get("verified"):
        console.print(
            f"verified: run {verdict.get('run_id')} green ({runs} runs)",
            style="green",
            markup=False,
        )
        return True
    where = verdict.get("failed_stage") or "the run"
    err_console.print(
        f"not verified ({verdict.get('stop_reason')}): stage {where}, "
        f"{verdict.get('failure_class') or 'unclassified'}: {verdict.get('diagnosis')}",
        style="red",
        markup=False,
        highlight=False,
    )
    for line in verdict.get("evidence") or []:
        err_console.print(f"  | {line}", markup=False, highlight=False)
    return False


@api_command(app, "generate")
def generate(
    conn: Connection,
    project: ProjectRef,
    branch: Annotated[str | None, typer.Option(help="Branch to analyse.")] = None,
    framework: Annotated[str | None, typer.Option(help="Framework hint.")] = None,
    deploy_provider: Annotated[
        str | None, typer.Option(help="forgeline (default), vercel, netlify, docker or none.")
    ] = None,
    fmt: Annotated[
        str, typer.Option("--format", help="github-actions or gitlab-ci")
    ] = "github-actions",
    wait: Annotated[bool, typer.Option(help="Wait and print the generated YAML.")] = True,
    timeout: Annotated[float, typer.Option(help="Seconds to wait.")] = 300.0,
    verify: Annotated[
        bool, typer.Option(help="Run the pipeline on the commit and repair it until green.")
    ] = False,
    verify_attempts: Annotated[
        int, typer.Option(min=1, max=10, help="Verification runs at most.")
    ] = 3,
) -> None:
    """Generate a validated CI/CD pipeline for the project's repository."""
    input_data: dict[str, Any] = {}
    if verify:
        input_data.update(verify=True, verify_attempts=verify_attempts)
    if branch:
        input_data["branch"] = branch
    if framework:
        input_data["framework_hint"] = framework
    if deploy_provider:
        input_data["preferences"] = {"deploy_provider": deploy_provider}
    with conn.client() as api:
        project_id = resolve_project(api, project)
        body = {"task_type": "generate_pipeline", "input_data": input_data}
        task = run(lambda: api.post(f"/v1/projects/{project_id}/agent-tasks", body))
        if wait:
            task = _wait(api, task["id"], timeout)
        conn.emit(task, TASK_COLUMNS, title="Agent task")
        output = task.get("output_data") or {}
        if (
            task["status"] == AgentTaskStatus.COMPLETED
            and output.get("pipeline_id")
            and not conn.as_json
        ):
            console.print(
                f"[green]{output.get('detected_framework')}[/green] "
                f"(confidence {output.get('confidence')}), pipeline {output['pipeline_id']}"
            )
            typer.echo(run(lambda: _export(api, output["pipeline_id"], fmt)))
            verdict = output.get("verification")
            if verdict is not None and not _print_verification(verdict):
                raise typer.Exit(1)
        elif task["status"] == "failed":
            err_console.print(f"[red]{task.get('error')}[/red]")
            raise typer.Exit(1)


@api_command(app, "show")
def show(conn: Connection, task_id: str) -> None:
    """A task with its executions, steps and tool calls."""
    task = conn.call(lambda api: api.get(f"/v1/agent-tasks/{task_id}"))
    if conn.printed_json(task):
        return
    emit(task, TASK_COLUMNS, as_json=False, title="Agent task")
    for execution in task.get("executions", []):
        for step in execution["steps"]:
            tools = ", ".join(
                f"{t['tool_name']}={t['status']}" for t in step.get("tool_invocations", [])
            )
            console.print(f"{step['step_number']:>3} {step['description'] or ''} [{tools}]")


@api_command(app, "export", json_output=False)
def export(
    conn: Connection,
    pipeline_id: str,
    fmt: Annotated[str, typer.Option("--format")] = "github-actions",
) -> None:
    """Print a pipeline as GitHub Actions or GitLab CI YAML."""
    typer.echo(conn.call(lambda api: _export(api, pipeline_id, fmt)))
