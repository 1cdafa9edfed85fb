"""Replay recorded DeploymentWorkflow histories against today's code: approvals granted, rejected
and still waiting under the single-decision gate (before the approval-quorum patch), and a quorum
of two distinct approvers (a repeated approval among them) after it. A change that breaks running
deployments fails here, not in production."""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from activities.deployments.registration import WORKFLOWS
from forgeline.payload_codec import encrypted_data_converter, parse_payload_keys

HISTORIES = Path(__file__).parent / "histories"
RECORDED = sorted(HISTORIES.glob("*.json"))
# The payload key the histories were recorded with: a key for these test fixtures only.
RECORDING_KEY = "LV3zioP6lqAhlpm2o4nXLI-JgYrjyQuNSYd8Vz3qf28="


@pytest.mark.parametrize("path", RECORDED, ids=[p.stem for p in RECORDED])
async def test_replay(path: Path) -> None:
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    replayer = Replayer(
        workflows=WORKFLOWS,
        data_converter=encrypted_data_converter(parse_payload_keys(RECORDING_KEY)),
    )
    await replayer.replay_workflow(history)


def test_histories_are_recorded() -> None:
    assert {p.stem for p in RECORDED} >= {
        "deployment_approved_v1",
        "deployment_rejected_v1",
        "deployment_waiting_v1",
        "deployment_two_approvals_v2",
    }
