"""`forgeline runs ...` against the real API and a real pipeline worker: exit statuses of
--wait (0 success, 1 failed, 2 cancelled), list/show/watch/rerun, logs downloaded and followed
through a connection that drops mid-stream, and one-line problems for bad input."""

from __future__ import annotations

import asyncio
import json
import re
import uuid

from sqlalchemy import select

from db.models.pipelines import PipelineRun
from tests.api_server import ApiServer
from tests.cli.conftest import invoke, spawn
from tests.cli.servers import CuttingProxy
from tests.factories import make_org
from tests.runs.helpers import make_pipeline, run_row, stage, wait_for


async def test_trigger_wait_exit_status_list_show_rerun(api_url, session_maker, worker) -> None:
    org = await make_org(session_maker)
    good = await make_pipeline(
        session_maker, org.org_id, [stage("build", ["echo built-$GREETING"])]
    )
    code, out, err = await invoke(
        "runs", "trigger", str(good), "--var", "GREETING=hi", "--wait", "--interval", "0.2",
        "--output", "json", "--api-url", api_url, key=org.api_key,
    )  # fmt: skip
    assert code == 0, err
    detail = json.loads(out)
    assert detail["status"] == "success" and detail["stages"][0]["stage_name"] == "build"

    code, out, err = await invoke(
        "runs", "logs", detail["id"], "build", "--api-url", api_url, key=org.api_key
    )
    assert code == 0, err
    assert "built-hi" in out
    # A stage name stays one path segment: no traversal to another route.
    for name in ("../../../projects", "build?follow=true", "%2e%2e"):
        code, _, err = await invoke(
            "runs", "logs", detail["id"], name, "--api-url", api_url, key=org.api_key
        )
        assert code == 1 and err.startswith("Error: HTTP 404"), err

    bad = await make_pipeline(
        session_maker,
        org.org_id,
        [
            stage("compile", "echo ok"),
            stage("test", "echo failing; exit 3", 1, depends_on=["compile"]),
        ],
    )
    code, out, err = await invoke(
        "runs", "trigger", str(bad), "--wait", "--interval", "0.2", "--api-url", api_url,
        key=org.api_key,
    )  # fmt: skip
    assert code == 1, err
    # The live view's last frame: the stage graph with statuses and durations.
    assert "compile" in out and "test" in out and "failed" in out
    assert re.search(r"compile\s+success\s+1\s+\d+\.\ds", out), out

    code, out, err = await invoke(
        "runs", "list", str(bad), "--json", "--api-url", api_url, key=org.api_key
    )
    assert code == 0, err
    runs = json.loads(out)
    assert [r["status"] for r in runs] == ["failed"]
    failed_id = runs[0]["id"]

    code, out, err = await invoke(
        "runs", "show", failed_id, "-o", "json", "--api-url", api_url, key=org.api_key
    )
    assert code == 0, err
    shown = {s["stage_name"]: s for s in json.loads(out)["stages"]}
    assert shown["test"]["exit_code"] == 3 and shown["compile"]["status"] == "success"

    # Every stage's log, one after the other.
    code, out, err = await invoke("runs", "logs", failed_id, "--api-url", api_url, key=org.api_key)
    assert code == 0, err
    assert "==> compile <==" in out and "failing" in out

    code, out, err = await invoke(
        "runs", "rerun", failed_id, "--from-failed", "--wait", "--interval", "0.2", "--json",
        "--api-url", api_url, key=org.api_key,
    )  # fmt: skip
    assert code == 1, err
    again = json.loads(out)
    assert again["run_number"] == 2 and again["reuse_from_run_id"] == failed_id
    reused = {s["stage_name"]: s for s in again["stages"]}
    assert reused["compile"]["reused_from_run_id"] == failed_id

    code, out, err = await invoke("runs", "watch", failed_id, "--api-url", api_url, key=org.api_key)
    assert code == 1 and "compile" in out
    code, out, err = await invoke(
        "runs", "watch", failed_id, "--no-exit-status", "--api-url", api_url, key=org.api_key
    )
    assert code == 0


async def _only_run(session_maker, pipeline_id: uuid.UUID) -> PipelineRun:
    async def exists() -> bool:
        async with session_maker() as session:
            row = await session.scalar(
                select(PipelineRun).where(PipelineRun.pipeline_id == pipeline_id)
            )
            return row is not None and row.status == "running"

    await wait_for(exists, timeout=60)
    async with session_maker() as session:
        row: PipelineRun | None = await session.scalar(
            select(PipelineRun).where(PipelineRun.pipeline_id == pipeline_id)
        )
    assert row is not None
    return row


async def test_wait_exits_2_when_cancelled_and_a_duplicate_cancel_is_readable(
    api_url, session_maker, worker
) -> None:
    org = await make_org(session_maker)
    pipeline_id = await make_pipeline(
        session_maker, org.org_id, [stage("forever", "while true; do echo tick; sleep 0.2; done")]
    )
    waiting = spawn(
        "runs", "trigger", str(pipeline_id), "--wait", "--interval", "0.2", "--json",
        "--api-url", api_url, key=org.api_key,
    )  # fmt: skip
    try:
        run = await _only_run(session_maker, pipeline_id)
        # The same cancel twice at once: both are answered, neither with a traceback.
        cancels = [
            spawn("runs", "cancel", str(run.id), "--api-url", api_url, key=org.api_key)
            for _ in range(2)
        ]
        results = []
        for proc in cancels:
            _out, cancel_err = await asyncio.to_thread(proc.communicate, timeout=60)
            results.append((proc.returncode, _out, cancel_err))
        for code, _out, err in results:
            assert code in (0, 1), err
            assert "Traceback" not in err
            if code == 1:
                assert err.startswith("Error: HTTP 409") and err.count("\n") == 1
        assert any(code == 0 for code, _, _ in results)
        out, err = await asyncio.to_thread(waiting.communicate, timeout=90)
    finally:
        if waiting.poll() is None:
            waiting.kill()
    assert waiting.returncode == 2, err
    assert json.loads(out)["status"] == "cancelled"
    assert (await run_row(session_maker, run.id)).status == "cancelled"


async def test_follow_resumes_after_dropped_connections(api_url, session_maker, worker) -> None:
    org = await make_org(session_maker)
    pipeline_id = await make_pipeline(
        session_maker,
        org.org_id,
        [stage("count", "for i in $(seq 1 120); do echo line-$i; sleep 0.01; done")],
    )
    port = int(api_url.rsplit(":", 1)[1])
    # Two streams cut mid-event: the follower resumes from its last complete event each time.
    with CuttingProxy(port, cuts=2, after_bytes=700) as proxy:
        code, out, err = await invoke(
            "runs", "trigger", str(pipeline_id), "--json", "--api-url", api_url, key=org.api_key
        )
        assert code == 0, err
        run_id = json.loads(out)["id"]
        code, out, err = await invoke(
            "runs", "logs", run_id, "count", "--follow", "--api-url", proxy.url, key=org.api_key
        )
    assert code == 0, err
    lines = [line for line in out.splitlines() if line.startswith("line-")]
    assert lines == [f"line-{i}" for i in range(1, 121)]
    follows = [r for r in proxy.requests if b"follow=true" in r.split(b"\r\n", 1)[0]]
    assert len(follows) >= 3
    assert b"last-event-id" not in follows[0].lower()
    assert all(b"last-event-id: 1:" in r.lower() for r in follows[1:])


async def test_follow_survives_an_api_server_restart(
    api_url, settings, session_maker, worker
) -> None:
    org = await make_org(session_maker)
    pipeline_id = await make_pipeline(
        session_maker,
        org.org_id,
        [stage("count", "for i in $(seq 1 150); do echo line-$i; sleep 0.02; done")],
    )
    first = ApiServer(settings).start()
    try:
        code, out, err = await invoke(
            "runs", "trigger", str(pipeline_id), "--json", "--api-url", api_url, key=org.api_key
        )
        assert code == 0, err
        run_id = json.loads(out)["id"]
        follow = asyncio.create_task(
            invoke("runs", "logs", run_id, "count", "-f", "--api-url", first.url, key=org.api_key)
        )
        await _only_run(session_maker, pipeline_id)
        await asyncio.sleep(0.5)
        # The server goes away with the stream open, and comes back on the same address.
        await asyncio.to_thread(first.stop, force=True)
        assert not follow.done()
        assert (await run_row(session_maker, uuid.UUID(run_id))).status == "running"
        second = ApiServer(settings, first.port).start()
        try:
            code, out, err = await asyncio.wait_for(follow, timeout=120)
        finally:
            await asyncio.to_thread(second.stop)
    finally:
        if first.thread.is_alive():
            await asyncio.to_thread(first.stop, force=True)
    assert code == 0, err
    lines = [line for line in out.splitlines() if line.startswith("line-")]
    assert lines == [f"line-{i}" for i in range(1, 151)]


async def test_follow_every_stage_of_a_run_just_triggered(api_url, session_maker, worker) -> None:
    org = await make_org(session_maker)
    pipeline_id = await make_pipeline(
        session_maker,
        org.org_id,
        [
            stage("first", "for i in 1 2 3; do echo a-$i; sleep 0.05; done"),
            stage("second", "echo b-1", 1, depends_on=["first"]),
        ],
    )
    code, out, err = await invoke(
        "runs", "trigger", str(pipeline_id), "--json", "--api-url", api_url, key=org.api_key
    )
    assert code == 0, err
    code, out, err = await invoke(
        "runs", "logs", json.loads(out)["id"], "--follow", "--api-url", api_url, key=org.api_key
    )
    assert code == 0, err
    lines = [line for line in out.splitlines() if line.startswith(("==>", "a-", "b-"))]
    assert lines == ["==> first <==", "a-1", "a-2", "a-3", "==> second <==", "b-1"]


async def test_bad_input_is_one_readable_line(api_url, session_maker) -> None:
    org = await make_org(session_maker)
    for args in (
        ("runs", "show", "../../v1/projects"),
        ("runs", "logs", "not-a-uuid", "build"),
        ("runs", "trigger", "1; rm -rf /"),
        ("deployments", "approve", "x" * 5000),
    ):
        code, _out, err = await invoke(*args, "--api-url", api_url, key=org.api_key)
        assert code == 2 and "is not an ID" in err and "Traceback" not in err

    # Another organization's (or no) pipeline: the API's 404 as one line, exit 1.
    code, _, err = await invoke(
        "runs", "trigger", str(uuid.uuid4()), "--api-url", api_url, key=org.api_key
    )
    assert code == 1 and err.startswith("Error: HTTP 404") and err.count("\n") == 1

    pipeline_id = await make_pipeline(session_maker, org.org_id, [stage("s", "true")])
    code, _, err = await invoke(
        "runs", "trigger", str(pipeline_id), "--var", "1BAD=x", "--branch", "a..b",
        "--api-url", api_url, key=org.api_key,
    )  # fmt: skip
    assert code == 1 and err.startswith("Error: HTTP 422") and err.count("\n") == 1
    assert "variables" in err and "branch" in err

    code, _, err = await invoke(
        "runs",
        "trigger",
        str(pipeline_id),
        "--var",
        "NOEQUALS",
        "--api-url",
        api_url,
        key=org.api_key,
    )
    assert code == 2 and "NAME=VALUE" in err
    code, _, err = await invoke(
        "runs", "list", str(pipeline_id), "--output", "yaml", "--api-url", api_url, key=org.api_key
    )
    assert code == 2 and "--output" in err
