"""Failure classes on real runs (Postgres, Temporal, the sandbox runner): a network failure is
retried and passes, a code failure is not retried and shows its assertion line, a config failure
waits for a repair; the API shows each class with its evidence, masked as the log is."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from temporalio.exceptions import ApplicationError

from activities.runs.attempts import recorded_outcome
from core.runs import stage_records
from core.runs.failure_classes import FailureClassification
from core.runs.stage_retries import CLASS_RETRIES
from db.session import driver_connection
from forgeline.statuses.runs import FailureClass
from tests.factories import make_org
from tests.runs.helpers import create_run, executions, make_pipeline, run_row, stage, wait_for
from workflows.runs_models import StageInput, StageSpec

NETWORK_FLAKE = [
    "if [ -f .fetched ]; then echo 'added 12 packages in 1s'; exit 0; fi",
    "touch .fetched",
    "echo 'npm ERR! code ECONNRESET'",
    "echo 'npm ERR! network request to https://registry.npmjs.org/react failed, reason: "
    "read ECONNRESET'",
    "exit 1",
]
PYTEST_FAILURE = [
    "echo '>       assert add(1, 2) == 4'",
    "echo 'E       assert 3 == 4'",
    "echo 'tests/test_math.py:4: AssertionError'",
    "echo '========================= 1 failed, 1 passed in 0.05s ========================='",
    "exit 1",
]


async def wait_finished(session_maker, run_id: uuid.UUID):
    async def done() -> bool:
        return (await run_row(session_maker, run_id)).status in ("success", "failed", "cancelled")

    await wait_for(done, timeout=90)
    return await run_row(session_maker, run_id)


async def trigger(api_client, org, pipeline_id: uuid.UUID, **body) -> uuid.UUID:
    resp = await api_client.post(
        f"/v1/pipelines/{pipeline_id}/runs", json=body, headers=org.headers
    )
    assert resp.status_code == 202, resp.text
    return uuid.UUID(resp.json()["id"])


async def test_network_failure_retries_and_passes_code_failure_does_not(
    api_client, session_maker, worker
) -> None:
    org = await make_org(session_maker)
    pipeline_id = await make_pipeline(
        session_maker,
        org.org_id,
        [stage("install", NETWORK_FLAKE, 0), stage("test", PYTEST_FAILURE, 1)],
    )
    run = await wait_finished(session_maker, await trigger(api_client, org, pipeline_id))
    assert run.status == "failed"
    rows = await executions(session_maker, run.id)
    seen = [(r.stage_name, r.attempt, r.status, r.failure_class) for r in rows]
    # No retry_count on either stage: the network failure is retried for its class alone.
    assert seen == [
        ("install", 1, "failed", "infrastructure"),
        ("install", 2, "success", None),
        ("test", 1, "failed", "code"),
    ]
    detail = (await api_client.get(f"/v1/runs/{run.id}", headers=org.headers)).json()
    stages = {(s["stage_name"], s["attempt"]): s for s in detail["stages"]}
    network = stages[("install", 1)]
    assert network["failure_class"] == "infrastructure"
    assert network["failure_cause"] == "a network connection failed (registry or download)"
    assert "npm ERR! code ECONNRESET" in network["failure_evidence"]
    assert stages[("install", 2)]["failure_evidence"] == []
    code = stages[("test", 1)]
    assert code["failure_class"] == "code"
    assert code["failure_cause"] == "a test assertion failed"
    assert "E       assert 3 == 4" in code["failure_evidence"]
    assert "(code)" in (run.error or "")


async def test_retries_for_a_class_are_bounded(api_client, session_maker, worker) -> None:
    org = await make_org(session_maker)
    outage = ["echo 'curl: (6) Could not resolve host: registry.example'", "exit 6"]
    pipeline_id = await make_pipeline(session_maker, org.org_id, [stage("fetch", outage)])
    run = await wait_finished(session_maker, await trigger(api_client, org, pipeline_id))
    assert run.status == "failed"
    rows = await executions(session_maker, run.id)
    assert [(r.attempt, r.failure_class) for r in rows] == [
        (n, "infrastructure") for n in range(1, CLASS_RETRIES + 2)
    ]


async def test_config_failure_is_not_retried_and_evidence_is_masked(
    api_client, session_maker, worker
) -> None:
    org = await make_org(session_maker)
    secret = "tok-" + uuid.uuid4().hex
    steps = ['echo "using $TOKEN"', "pnpm install --frozen-lockfile"]
    pipeline_id = await make_pipeline(session_maker, org.org_id, [stage("install", steps)])
    run_id = await trigger(
        api_client,
        org,
        pipeline_id,
        variables=[{"name": "TOKEN", "value": secret, "secret": True}],
    )
    run = await wait_finished(session_maker, run_id)
    rows = await executions(session_maker, run.id)
    assert [(r.attempt, r.exit_code, r.failure_class) for r in rows] == [(1, 127, "config")]
    detail = (await api_client.get(f"/v1/runs/{run.id}", headers=org.headers)).json()
    (only,) = detail["stages"]
    assert only["failure_class"] == "config"
    assert any("pnpm" in line for line in only["failure_evidence"])
    assert secret not in str(detail)


async def test_a_failure_that_passes_on_retry_is_flaky(api_client, session_maker, worker) -> None:
    org = await make_org(session_maker)
    once = ["if [ -f .tried ]; then exit 0; fi", "touch .tried", *PYTEST_FAILURE[:-1], "exit 75"]
    pipeline_id = await make_pipeline(
        session_maker,
        org.org_id,
        [stage("test", once, retry_count=1, retryable_exit_codes=[75])],
    )
    run = await wait_finished(session_maker, await trigger(api_client, org, pipeline_id))
    assert run.status == "success"
    rows = await executions(session_maker, run.id)
    assert [(r.attempt, r.status, r.failure_class) for r in rows] == [
        (1, "failed", "flaky"),
        (2, "success", None),
    ]
    assert rows[0].failure_cause == "passed on a retry (first read as: a test assertion failed)"
    assert "E       assert 3 == 4" in rows[0].failure_evidence


@pytest.mark.parametrize(
    ("failure_class", "rerun"),
    [(FailureClass.INFRASTRUCTURE, True), (FailureClass.CODE, False)],
)
async def test_an_attempt_recorded_before_a_crash_keeps_its_class_decision(
    session_maker, settings, failure_class: FailureClass, rerun: bool
) -> None:
    """The worker closed attempt 1 and died before Temporal took its result: attempt 2 reads
    the row and decides as attempt 1 would have (run again for infrastructure, fail for code)."""
    org = await make_org(session_maker)
    pipeline_id = await make_pipeline(session_maker, org.org_id, [stage("s", "true")])
    run = await create_run(session_maker, settings, org.org_id, pipeline_id)
    inp = StageInput(run_id=str(run.id), stage=StageSpec(name="s", script="true"))
    failure = FailureClassification(failure_class, "why", ["evidence"])
    closed = stage_records.ClosedAttempt(
        status="failed",
        exit_code=1,
        duration_ms=1,
        log_size_bytes=0,
        log_line_count=0,
        failure=failure,
    )
    async with driver_connection(session_maker) as conn:
        opened = await stage_records.open_attempt(
            conn,
            run_id=str(run.id),
            stage_name="s",
            attempt=1,
            stage_id=None,
            runner="sandbox",
            container_name="c",
        )
    assert opened is not None

    async def close() -> None:
        async with driver_connection(session_maker) as conn:
            await stage_records.close_attempt(
                conn,
                run_id=str(run.id),
                execution_id=opened.execution_id,
                attempt=1,
                closed=closed,
            )

    # Closed twice at once, as a retried close racing the first does: one row, the same class.
    await asyncio.gather(close(), close())
    if rerun:
        assert await recorded_outcome(session_maker, inp, 1) is None
    else:
        with pytest.raises(ApplicationError) as raised:
            await recorded_outcome(session_maker, inp, 1)
        assert raised.value.non_retryable
    rows = await executions(session_maker, run.id)
    assert [(r.failure_class, r.failure_evidence) for r in rows] == [(failure_class, ["evidence"])]


async def test_a_lost_worker_is_classed_infrastructure(session_maker, settings) -> None:
    org = await make_org(session_maker)
    pipeline_id = await make_pipeline(session_maker, org.org_id, [stage("s", "true")])
    run = await create_run(session_maker, settings, org.org_id, pipeline_id)
    async with driver_connection(session_maker) as conn:
        for attempt in (1, 3):  # attempt 1 left running, attempt 2 never opened
            await stage_records.open_attempt(
                conn,
                run_id=str(run.id),
                stage_name="s",
                attempt=attempt,
                stage_id=None,
                runner="sandbox",
                container_name="c",
            )
    rows = await executions(session_maker, run.id)
    assert [(r.attempt, r.status, r.failure_class) for r in rows] == [
        (1, "failed", "infrastructure"),
        (2, "failed", "infrastructure"),
        (3, "running", None),
    ]
