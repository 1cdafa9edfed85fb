"""Replay recorded BillingWorkflow histories (Stripe faults + payment; dunning to cancellation)
against today's workflow code: a non-deterministic change fails here, not in production."""

from __future__ import annotations

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from tests.billing.conftest import HISTORIES
from workflows.billing import BillingCycleWorkflow, BillingWorkflow

RECORDED = sorted(HISTORIES.glob("*.json"))


@pytest.mark.parametrize("path", RECORDED, ids=[p.stem for p in RECORDED])
async def test_replay(path):
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    replayer = Replayer(
        workflows=[BillingWorkflow, BillingCycleWorkflow], data_converter=pydantic_data_converter
    )
    await replayer.replay_workflow(history)


def test_histories_are_recorded():
    assert {p.stem for p in RECORDED} >= {"billing_paid_after_faults", "billing_dunning_cancelled"}
