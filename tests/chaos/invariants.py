"""What must hold once the chaos has settled, each check appending what it finds broken: true
run results, one row per attempt Temporal started, contiguous logs, one usage record per run, no
build-slot claim left, the last deployment live, SSE followers that saw every stored line."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter, defaultdict
from typing import Any

import httpx
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from tests.chaos.scenario import (
    FAIL_EXIT,
    LINE,
    OK_SSE,
    STAGE_LINES,
    Scenario,
)
from tests.deployments.proxy import via_proxy
from workflows.contracts.runs import EXECUTE_STAGE
from workflows.runs_models import StageInput


async def stage_attempts_in_history(client: Client, workflow_id: str) -> dict[str, int]:
    """Per stage, the attempt number Temporal recorded for its stage activity (the last one it
    started): the stage_executions rows must be exactly attempts 1..that."""
    handle = client.get_workflow_handle(workflow_id)
    stages: dict[int, str] = {}
    attempts: dict[str, int] = {}
    last = None
    async for event in handle.fetch_history_events():
        last = event.event_type
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            attrs = event.activity_task_scheduled_event_attributes
            if attrs.activity_type.name != EXECUTE_STAGE.name:
                continue
            (inp,) = await client.data_converter.decode(list(attrs.input.payloads), [StageInput])
            stages[event.event_id] = inp.stage.name
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            started = event.activity_task_started_event_attributes
            name = stages.get(started.scheduled_event_id)
            if name is not None:
                attempts[name] = started.attempt
    if last != EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED:
        closing = EventType.Name(last) if last is not None else "no event"
        raise AssertionError(f"the run's workflow did not complete: its last event is {closing}")
    return attempts


async def check_runs(scenario: Scenario, problems: list[str]) -> Counter[str]:
    rows = await scenario.query(
        "SELECT id::text, run_number, status, error FROM pipeline_runs "
        "WHERE organization_id = :org",
        org=scenario.org_id,
    )
    by_id = {r[0]: r for r in rows}
    for run in scenario.runs:
        row = by_id.get(run.id)
        if row is None:
            problems.append(f"run {run.id} (#{run.number}) has no row")
        elif row[2] != run.expected:
            problems.append(
                f"run #{run.number} ({run.id}, {run.pipeline} pipeline) is {row[2]!r}, expected "
                f"{run.expected!r}; error={row[3]!r}"
            )
    tracked = {r.id for r in scenario.runs}
    refused = [row for row in rows if row[0] not in tracked]
    for row in refused:
        # A run whose workflow could not be started is closed as failed, never left queued.
        if row[2] != "failed":
            problems.append(
                f"run #{row[1]} ({row[0]}), refused with 503 while a service was down, is "
                f"{row[2]!r}: {row[3]!r}"
            )
    if len(refused) > scenario.outage_triggers["503"]:
        problems.append(
            f"{len(refused)} runs exist that no 202 answered, for "
            f"{scenario.outage_triggers['503']} triggers refused with 503: "
            f"{[(r[1], r[2], r[3]) for r in refused]}"
        )
    return Counter(row[2] for row in rows)


async def check_attempts(scenario: Scenario, problems: list[str]) -> tuple[int, int, int]:
    """Rows per attempt against Temporal's history; statuses; numbered log lines per attempt."""
    rows = await scenario.query(
        """
        SELECT se.run_id::text, se.stage_name, se.attempt, se.status, se.exit_code, se.error,
               se.id::text, se.log_line_count, se.log_object_key,
               to_char(se.created_at, 'HH24:MI:SS.MS'), to_char(se.finished_at, 'HH24:MI:SS.MS'),
               se.warnings
        FROM stage_executions se JOIN pipeline_runs r ON r.id = se.run_id
        WHERE r.organization_id = :org
        ORDER BY se.run_id, se.stage_name, se.attempt
        """,
        org=scenario.org_id,
    )
    chunks = await scenario.query(
        """
        SELECT c.stage_execution_id::text, c.seq, c.first_line, c.line_count, c.content
        FROM stage_log_chunks c JOIN stage_executions se ON se.id = c.stage_execution_id
        JOIN pipeline_runs r ON r.id = se.run_id WHERE r.organization_id = :org
        ORDER BY c.stage_execution_id, c.seq
        """,
        org=scenario.org_id,
    )
    logs: dict[str, list[Any]] = defaultdict(list)
    for chunk in chunks:
        logs[chunk[0]].append(chunk)
    attempts: dict[tuple[str, str], list[Any]] = defaultdict(list)
    for row in rows:
        attempts[(row[0], row[1])].append(row)
    assert scenario.stack.client is not None
    retried = reused = 0
    for run in scenario.runs:
        stages = ["count", "tail"] if run.pipeline == "good" else ["count", "fail"]
        try:
            history = await stage_attempts_in_history(
                scenario.stack.client, f"pipeline-run-{run.id}"
            )
        except Exception as exc:
            problems.append(f"run #{run.number} ({run.id}): {exc}")
            history = {}
        for name in stages:
            got = attempts.get((run.id, name), [])
            numbers = [r[2] for r in got]
            where = f"run #{run.number} ({run.id}) stage {name}"
            if not got:
                problems.append(f"{where}: no stage_executions row")
                continue
            retried += len(got) - 1
            if numbers != list(range(1, len(numbers) + 1)):
                problems.append(f"{where}: attempts {numbers} are not 1..n (missing or twice)")
            last = got[-1]
            started = history.get(name, max(numbers))
            # A retry of an attempt that ran to its end (its result lost with Temporal) returns
            # the recorded outcome without running or recording anything: no row of its own.
            ran_to_end = last[3] == "success" or last[4] is not None
            if started < max(numbers) or (started > max(numbers) and not ran_to_end):
                problems.append(
                    f"{where}: Temporal started attempt {started}, rows hold attempts "
                    f"{[(r[2], r[3], r[4], r[5]) for r in got]}"
                )
            reused += started > max(numbers)
            unfinished = [(r[2], r[3]) for r in got if r[3] not in ("success", "failed")]
            if unfinished:
                problems.append(f"{where}: attempts left unfinished: {unfinished}")
            want = "failed" if name == "fail" else "success"
            if last[3] != want:
                problems.append(
                    f"{where}: last attempt {last[2]} is {last[3]!r} (exit {last[4]}), expected "
                    f"{want!r}; error={last[5]!r}"
                )
            successes = [r[2] for r in got if r[3] == "success"]
            if want == "success" and len(successes) != 1:
                problems.append(f"{where}: {len(successes)} successful attempts {successes}")
            if name == "fail":
                ran = [r[2] for r in got if r[4] == FAIL_EXIT]
                if ran != [last[2]]:
                    problems.append(
                        f"{where}: the failing command (exit {FAIL_EXIT}, no retries) finished in "
                        f"attempts {ran}, expected only in the last one ({last[2]})"
                    )
            for row in got:
                check_log(f"{where} attempt {row[2]} ({row[3]})", row, logs[row[6]], problems)
    return len(rows), retried, reused


def check_log(where: str, row: Any, chunks: list[Any], problems: list[str]) -> None:
    """Chunks numbered 0..k with contiguous line numbers; the `line-N` lines 0..m, complete for
    an attempt that ran its command to the end."""
    seqs = [c[1] for c in chunks]
    if seqs != list(range(len(seqs))):
        problems.append(f"{where}: log chunk seqs {seqs} are not contiguous from 0")
    expected_first = 0
    for chunk in chunks:
        if chunk[2] != expected_first:
            problems.append(
                f"{where}: log chunk {chunk[1]} starts at line {chunk[2]}, "
                f"expected {expected_first}"
            )
            break
        expected_first = chunk[2] + chunk[3]
    lines = [line for c in chunks for line in c[4].split("\n")[: c[3]]]
    numbers = [int(m.group(1)) for line in lines if (m := LINE.match(line))]
    if numbers != list(range(len(numbers))):
        problems.append(f"{where}: numbered lines are not contiguous from 0: {numbers}")
    finished = row[3] == "success" or row[4] == FAIL_EXIT
    if finished and len(numbers) != STAGE_LINES[row[1]]:
        layout = [(c[1], c[2], c[3]) for c in chunks]
        problems.append(
            f"{where}: {len(numbers)} numbered lines stored, the command printed "
            f"{STAGE_LINES[row[1]]} (row: {row[9]}-{row[10]} UTC, log_line_count={row[7]}, "
            f"warnings={row[11]}, "
            f"log_object_key={row[8]!r}; "
            f"chunks (seq, first_line, line_count): {layout}; lines: {lines[:30]})"
        )


async def check_api_view(scenario: Scenario, problems: list[str]) -> None:
    """What the API says of each run once it ended: its true result and one entry per row."""
    rows = await scenario.query(
        "SELECT se.run_id::text, count(*) FROM stage_executions se JOIN pipeline_runs r "
        "ON r.id = se.run_id WHERE r.organization_id = :org GROUP BY 1",
        org=scenario.org_id,
    )
    counts = {r[0]: r[1] for r in rows}
    workspaces = scenario.stack.settings.workspaces_dir
    for run in scenario.runs:
        r = await scenario.api.call("GET", f"/v1/runs/{run.id}", "run detail")
        if r is None or r.status_code != 200:
            problems.append(f"run #{run.number}: GET /v1/runs/{run.id} answered {r}")
            continue
        body = r.json()
        if body["status"] != run.expected or len(body["stages"]) != counts.get(run.id, 0):
            problems.append(
                f"run #{run.number} ({run.id}): the API says {body['status']!r} with "
                f"{len(body['stages'])} stage entries; expected {run.expected!r} and "
                f"{counts.get(run.id, 0)} (the stage_executions rows)"
            )
        workspace = workspaces / run.id
        if workspace.exists():
            problems.append(f"run #{run.number} ({run.id}) ended; its workspace is left")


async def check_followed_logs(scenario: Scenario, problems: list[str]) -> Counter[str]:
    """What each SSE follower received equals, attempt by attempt, the stored log: every line
    once, in order, across reconnects; and it ended with the stage's final status."""
    answers: Counter[str] = Counter()
    done, pending = await asyncio.wait(scenario.followers, timeout=30)
    for task in pending:
        task.cancel()
        problems.append("an SSE follower was still reading 30 s after every run had ended")
    for task in done:
        followed = task.result()
        answers.update(followed.answers)
        where = f"SSE follow of run {followed.run_id} stage {followed.stage}"
        # A stream cut mid-body (the database went away under it) is resumed; a refusal must be
        # a 503, never another status.
        refused = {a: n for a, n in followed.answers.items() if a.isdigit() and a not in OK_SSE}
        if refused:
            problems.append(f"{where}: connections answered {refused}")
        rows = await scenario.query(
            "SELECT se.attempt, se.status, c.seq, c.line_count, c.content "
            "FROM stage_executions se LEFT JOIN stage_log_chunks c ON c.stage_execution_id = se.id "
            "WHERE se.run_id = :run AND se.stage_name = :stage ORDER BY se.attempt, c.seq",
            run=uuid.UUID(followed.run_id),
            stage=followed.stage,
        )
        stored: dict[int, list[str]] = defaultdict(list)
        final = None
        for attempt, status, _seq, count, content in rows:
            final = status
            if content is not None:
                stored[attempt] += content.split("\n")[:count]
        if followed.end != final:
            problems.append(f"{where}: ended with {followed.end!r}, the last attempt is {final!r}")
        received: dict[int, list[tuple[int, str]]] = defaultdict(list)
        for attempt, number, line in followed.lines:
            received[attempt].append((number, line))
        first = min(received, default=None)
        for attempt, lines in sorted(stored.items()):
            if first is None or attempt < first:
                continue  # ended before the follower connected
            got = received.get(attempt, [])
            if got != list(enumerate(lines)):
                numbers = [n for n, _ in got]
                problems.append(
                    f"{where} attempt {attempt}: received lines {numbers} (reconnects: "
                    f"{dict(followed.answers)}), stored {len(lines)}"
                )
    return answers


async def check_usage_and_claims(scenario: Scenario, problems: list[str]) -> None:
    usage = await scenario.query(
        "SELECT source_refs->>'pipeline_run_id', count(*) FROM usage_records "
        "WHERE organization_id = :org AND usage_type = 'build_minutes' GROUP BY 1",
        org=scenario.org_id,
    )
    per_run = {r[0]: r[1] for r in usage}
    for run in scenario.runs:
        if per_run.get(run.id, 0) != 1:
            problems.append(
                f"run #{run.number} ({run.id}): {per_run.get(run.id, 0)} build_minutes usage "
                f"records, expected 1"
            )
    claims = await scenario.query(
        "SELECT run_workflow_id, holding, grant_pending FROM build_slot_claims "
        "WHERE organization_key = :key",
        key=str(scenario.org_id),
    )
    if claims:
        problems.append(f"{len(claims)} build-slot claims left after every run ended: {claims}")


async def check_deployments(
    scenario: Scenario, problems: list[str]
) -> dict[str, list[tuple[str, ...]]]:
    rows = await scenario.query(
        "SELECT id::text, environment_id::text, version, status, error FROM deployments "
        "WHERE organization_id = :org",
        org=scenario.org_id,
    )
    by_id = {r[0]: r for r in rows}
    proxy_port = scenario.stack.caddy.http_port
    for env_key, ids in scenario.deployments.items():
        last = ids[-1]
        statuses = [(by_id[i][2], by_id[i][3]) for i in ids if i in by_id]
        if by_id.get(last, (None,) * 4)[3] != "active":
            problems.append(
                f"environment {env_key}: the last requested deployment ({scenario.versions[last]}) "
                f"is not active; in request order: {statuses}"
            )
        live = [i for i in ids if i in by_id and by_id[i][3] == "active"]
        if live != [last]:
            problems.append(f"environment {env_key}: active deployments {live}, only {last}")
        r = await scenario.api.call("GET", f"/v1/deployments/{last}", "deployment detail")
        if r is None or r.status_code != 200 or not r.json().get("url"):
            problems.append(f"environment {env_key}: the last deployment's detail has no URL")
            continue
        url, headers = via_proxy(r.json()["url"], proxy_port)
        async with httpx.AsyncClient(timeout=10) as http:
            page = await http.get(url, headers=headers)
        want = f"chaos site {scenario.versions[last]}"
        if page.status_code != 200 or want not in page.text:
            problems.append(
                f"environment {env_key}: its URL serves {page.status_code} {page.text[:120]!r}, "
                f"expected {want!r}"
            )
    return {
        env_key: [
            (scenario.versions[i], by_id[i][3], by_id[i][4])
            if by_id[i][3] in ("failed", "rolled_back")
            else (scenario.versions[i], by_id[i][3])
            for i in ids
            if i in by_id
        ]
        for env_key, ids in scenario.deployments.items()
    }
