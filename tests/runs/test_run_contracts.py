"""Every activity of the runs domain is declared once in workflows/contracts/runs.py, implemented
under the contract's name, and registered under the names recorded histories hold."""

from __future__ import annotations

from temporalio import activity

from activities.runs.run_activities import RunActivities
from activities.runs.stage_bookkeeping import StageBookkeepingActivities
from activities.runs.stage_execution import StageActivities
from workflows.contract import ActivityContract
from workflows.contracts import runs as contracts

# The activity types in histories of PipelineRunWorkflow: renaming one breaks every open run.
RECORDED_NAMES = {
    "prepare_run",
    "start_run",
    "execute_stage",
    "record_stage_skipped",
    "reuse_stage",
    "finish_run",
    "record_lost_attempts",
    "acquire_build_slot",
    "release_build_slot",
}


def _implemented(cls: type) -> dict[str, str]:
    names = {}
    for attr, value in vars(cls).items():
        definition = activity._Definition.from_callable(value)
        if definition is not None and definition.name is not None:
            names[definition.name] = attr
    return names


def test_contracts_keep_the_recorded_names() -> None:
    declared = {c.name for c in vars(contracts).values() if isinstance(c, ActivityContract)}
    assert declared == RECORDED_NAMES


def test_every_contract_is_implemented_once() -> None:
    implemented: dict[str, str] = {}
    for cls in (RunActivities, StageActivities, StageBookkeepingActivities):
        for name, attr in _implemented(cls).items():
            assert name not in implemented, f"{name} implemented twice"
            implemented[name] = f"{cls.__name__}.{attr}"
    assert set(implemented) == RECORDED_NAMES
