"""Replay every recorded history (tests/replay/histories, recorded from the code before a change)
over today's workflow classes: a change that would break a running execution fails here, not in
production. How to record: tests/replay/README.md."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from forgeline.payload_codec import encrypted_data_converter, parse_payload_keys
from tests.replay.record import (
    HISTORIES,
    MAX_BYTES,
    RECORDING_KEY,
    package_workflows,
    registered_workflows,
)

RECORDED = sorted(HISTORIES.glob("*.json"))
# What the recordings cover (issue 15): every workflow type the worker registers, and these runs.
REQUIRED = {
    "PipelineRunWorkflow-parallel",
    "PipelineRunWorkflow-retry",
    "PipelineRunWorkflow-skipped",
    "PipelineRunWorkflow-deploy-stage",
    "DeploymentWorkflow-approved",
    "DeploymentWorkflow-rollback-2",
    "EnvironmentDeploymentLock-queued",
    "DeploymentMonitorWorkflow-monitor",
    "PreviewEnvironmentWorkflow-ttl",
    "AgentTaskWorkflow-continue-as-new",
    "BillingWorkflow-stripe-faults",
    "BillingCycleWorkflow-schedule",
    "EchoWorkflow-worker-process",
    "WebhookDeliveryWorkflow-commit-status",
    "CommitStatusWorkflow-commit-status",
    "CommitStatusWorkflow-forge-outage",
    "ScheduledRunWorkflow-schedule-firing",
    "WebhookDeliveryWorkflow-pr-tracking",
    "PullRequestReportWorkflow-pr-preview",
    "PullRequestReportWorkflow-pr-comment-outage",
    "NotificationWorkflow-notification-retry",
    "NotificationRedeliveryWorkflow-notification-redelivery",
}


def recorded_type(path: Path) -> tuple[str, str]:
    """(workflow ID, workflow type name) from the history's first event."""
    started = json.loads(path.read_text())["events"][0]["workflowExecutionStartedEventAttributes"]
    return str(started["workflowId"]), str(started["workflowType"]["name"])


def workflow_classes() -> list[type]:
    """The worker's registered classes; a workflow class it does not register (yet) is taken
    from workflows/ so its replay is still checked (test_every_recorded_type_is_registered
    reports the missing registration)."""
    found = {**package_workflows(), **registered_workflows()}
    return list(found.values())


@pytest.fixture(scope="module")
def replayer() -> Replayer:
    return Replayer(
        workflows=workflow_classes(),
        data_converter=encrypted_data_converter(parse_payload_keys(RECORDING_KEY)),
    )


@pytest.mark.parametrize("path", RECORDED, ids=[p.stem for p in RECORDED])
async def test_replay(path: Path, replayer: Replayer) -> None:
    workflow_id, _ = recorded_type(path)
    history = WorkflowHistory.from_json(workflow_id, path.read_text())
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, f"{path.name}: {result.replay_failure!r}"


def test_every_recorded_type_is_registered() -> None:
    registered = registered_workflows()
    recorded = {recorded_type(path)[1] for path in RECORDED}
    assert recorded - set(registered) == set(), "recorded workflow types the worker lacks"
    assert set(registered) - recorded == set(), "registered workflow types without a history"


def test_histories_are_recorded_and_small() -> None:
    assert REQUIRED - {path.stem for path in RECORDED} == set()
    too_big = [path.name for path in RECORDED if path.stat().st_size > MAX_BYTES]
    assert too_big == []
