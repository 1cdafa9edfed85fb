"""A failed matrix leg (`test (22)`) is examined and repaired on its matrix stage (`test`) of
the pipeline document: a leg is no stage of its own there."""

from __future__ import annotations

from typing import Any

from core.agent.verification import stage_index

MATRIX = {"matrix": {"axes": {"NODE_VERSION": ["20", "22"]}}}


def _stages() -> list[dict[str, Any]]:
    return [
        {"name": "install", "runtime": {}},
        {"name": "test", "runtime": MATRIX},
        {"name": "test (e2e)", "runtime": {}},
        {"name": "test-web", "runtime": MATRIX},
    ]


def test_a_leg_is_its_matrix_stage() -> None:
    stages = _stages()
    assert stage_index(stages, "test (22)") == 1
    assert stage_index(stages, "test-web (20)") == 3


def test_a_stage_named_like_a_leg_is_itself() -> None:
    stages = _stages()
    assert stage_index(stages, "test (e2e)") == 2
    assert stage_index(stages, "install") == 0


def test_unknown_and_hostile_names_find_nothing() -> None:
    stages = _stages()
    assert stage_index(stages, None) is None
    assert stage_index(stages, "install (22)") is None  # no matrix there
    assert stage_index(stages, "tes") is None
    assert stage_index(stages, "test" + " (x" * 5000) == 1
    assert stage_index([{"name": "x"}], "x (1)") is None  # no runtime at all
