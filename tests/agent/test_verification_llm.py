"""Verification on the model's path, against the fake Anthropic server: the model calls
run_pipeline (a child verification run), read_stage_log and patch_stage in its tool loop until
the pipeline runs green; hostile calls are refused as tool errors; nothing runs twice."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from db.models.agent import AgentTask, ToolInvocation
from db.models.pipeline_versions import PipelineVersion
from db.models.pipelines import PipelineRun
from db.session import session_scope
from tests.agent import fake_anthropic
from tests.agent.fake_anthropic import Script, Turn
from tests.agent.support import agent_worker, make_project
from tests.agent.verify_repos import NEEDS_ENV, NO_SCAN, node_repo
from tests.factories import make_org
from tests.runs.helpers import pipeline_worker
from tests.runs.sandbox import sandbox_runner
from workflows.agent_models import AgentTaskWorkflowInput
from workflows.agent_task import AgentTaskWorkflow

pytestmark = pytest.mark.timeout(240)
FIXED_TEST = ["cp -n .env.defaults .env", "npm install", "npm test"]


def repair_script() -> Script:
    return Script(
        turns=[
            Turn(
                tool_calls=[
                    ("detect_framework", {}),
                    # Before validation: refused, nothing runs.
                    ("run_pipeline", {}),
                    ("propose_pipeline", {}),
                    ("validate_pipeline", {}),
                ]
            ),
            Turn(tool_calls=[("run_pipeline", {})]),
            Turn(
                tool_calls=[
                    ("read_stage_log", {"stage": "test"}),
                    ("read_stage_log", {"stage": "../../etc/passwd"}),
                    ("read_stage_log", {"stage": "test", "pipeline_run_id": "not-a-uuid"}),
                    ("patch_stage", {"stage": "no-such-stage", "image": "node:20"}),
                    ("patch_stage", {"stage": "test", "commands": "rm -rf /"}),
                ]
            ),
            Turn(tool_calls=[("patch_stage", {"stage": "test", "commands": FIXED_TEST})]),
            Turn(tool_calls=[("run_pipeline", {})]),
            Turn(text="The pipeline runs green: the tests needed .env from .env.defaults."),
        ]
    )


async def test_the_model_runs_reads_patches_and_verifies(
    temporal_client, settings, session_maker, task_queue, tmp_path: Path
) -> None:
    repo = node_repo(tmp_path / "repo", NEEDS_ENV, **{".env.defaults": "GREETING=hello\n"})
    org = await make_org(session_maker)
    project_id = await make_project(session_maker, org.org_id, str(repo))
    task_id = uuid.uuid4()
    data: dict[str, Any] = {"preferences": NO_SCAN, "verify": True}
    async with session_scope(session_maker) as session:
        session.add(
            AgentTask(
                id=task_id,
                organization_id=org.org_id,
                project_id=project_id,
                task_type="generate_pipeline",
                input_data=data,
                workflow_id=f"agent-task-{task_id}",
            )
        )
    script = repair_script()
    runs_queue = f"{task_queue}-runs"
    runner = sandbox_runner(tmp_path / "runner-state")
    try:
        with fake_anthropic.serve(script) as url:
            async with (
                agent_worker(
                    temporal_client, settings, session_maker, task_queue, anthropic_base_url=url
                ),
                pipeline_worker(temporal_client, runs_queue, settings, session_maker, runner),
            ):
                out = await temporal_client.execute_workflow(
                    AgentTaskWorkflow.run,
                    AgentTaskWorkflowInput(
                        task_id=task_id,
                        organization_id=org.org_id,
                        project_id=project_id,
                        task_type="generate_pipeline",
                        verify=True,
                        verification_task_queue=runs_queue,
                    ),
                    id=f"agent-task-{task_id}",
                    task_queue=task_queue,
                )
    finally:
        await runner.close()
    offered = {tool["name"] for tool in script.requests[0]["tools"]}
    assert {"run_pipeline", "read_stage_log", "patch_stage"} <= offered
    assert out.status == "completed", out
    verdict = out.output["verification"]
    assert verdict["verified"] is True, verdict
    # Only the model's two runs: the verification after its loop found the last one green.
    assert verdict["attempts"] == 2
    assert verdict["repairs"] == ["stage test patched: pipeline version 2"]
    results = _tool_results(script)
    assert results["run_pipeline"][0].startswith("error: validate_pipeline must pass")
    assert '"failed_stage":"test"' in results["run_pipeline"][1]
    assert '"green":true' in results["run_pipeline"][2]
    log, traversal, bad_id = results["read_stage_log"]
    assert "ENOENT" in log and ".env" in log
    assert "did not run" in traversal and "must be a UUID" in bad_id
    unknown_stage, bad_commands, patched = results["patch_stage"]
    assert "has no stage 'no-such-stage'" in unknown_stage
    assert "list of strings" in bad_commands
    assert "version 2" in patched
    async with session_maker() as session:
        runs = list(
            await session.scalars(
                select(PipelineRun)
                .where(PipelineRun.metadata_.contains({"verification_task_id": str(task_id)}))
                .order_by(PipelineRun.created_at)
            )
        )
        changes = list(
            await session.scalars(
                select(PipelineVersion.change)
                .where(PipelineVersion.agent_task_id == task_id)
                .order_by(PipelineVersion.version)
            )
        )
        recorded = set(
            await session.scalars(
                select(ToolInvocation.tool_name).where(
                    ToolInvocation.tool_name.in_(("read_stage_log", "patch_stage"))
                )
            )
        )
    assert [r.status for r in runs] == ["failed", "success"]
    assert changes == ["create", "repair"]
    assert recorded == {"read_stage_log", "patch_stage"}


def _tool_results(script: Script) -> dict[str, list[str]]:
    """Each tool's results as the model saw them, in order (from the last request)."""
    names: dict[str, str] = {}
    results: dict[str, list[str]] = {}
    for message in script.requests[-1]["messages"]:
        for block in message["content"] if isinstance(message["content"], list) else []:
            if block.get("type") == "tool_use":
                names[block["id"]] = block["name"]
            if block.get("type") == "tool_result":
                content = block["content"]
                text = content if isinstance(content, str) else content[0]["text"]
                results.setdefault(names[block["tool_use_id"]], []).append(text)
    return results
