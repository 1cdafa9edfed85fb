"""A registry mirror that serves no npm signatures: corepack refuses every pnpm/yarn it
downloads. The repair tells corepack to check none, on the failed stage and on every other
stage that calls corepack (each would fail the same way on the rerun), once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from core.agent.images import COREPACK_ENABLE
from core.agent.repairs import apply_repair, repair_stage
from core.runs.failure_classes import FailureSignals, classify
from forgeline.statuses.runs import FailureClass

LOG = """! Corepack is about to download https://registry.example/pnpm/-/pnpm-10.28.0.tgz
Error: No compatible signature found in package metadata
    at verifySignature (/usr/lib/node_modules/corepack/dist/lib/corepack.cjs:21999:63)
"""
ROOT = Path("/nonexistent")


def _stages() -> list[dict[str, Any]]:
    pnpm = f"{COREPACK_ENABLE} && pnpm install --frozen-lockfile"
    return [
        {"name": "install", "commands": [pnpm], "environment": {"CI": "true"}},
        {"name": "test", "commands": [pnpm, "pnpm test"]},
        {"name": "docs", "commands": ["npm ci", "npm run docs"]},
    ]


def test_the_failed_stage_and_its_corepack_siblings_check_no_signatures() -> None:
    stages = _stages()
    repair = repair_stage(stages[0], [], LOG, ROOT)
    assert repair is not None
    assert "signatures" in repair.diagnosis
    apply_repair(stages, 0, repair)
    assert stages[0]["environment"] == {"CI": "true", "COREPACK_INTEGRITY_KEYS": "0"}
    assert stages[1]["environment"] == {"COREPACK_INTEGRITY_KEYS": "0"}
    assert "environment" not in stages[2]  # npm alone downloads no package manager


def test_the_repair_is_made_once() -> None:
    stages = _stages()
    repair = repair_stage(stages[0], [], LOG, ROOT)
    assert repair is not None
    apply_repair(stages, 0, repair)
    assert repair_stage(stages[0], [], LOG, ROOT) is None


def test_other_corepack_failures_are_not_taken_for_missing_signatures() -> None:
    stages = _stages()
    hostile = "Error: EROFS: read-only file system\n" + "signature " * 10_000
    assert repair_stage(stages[0], [], hostile, ROOT) is None


def test_the_failure_is_classed_as_the_pipeline_s_with_its_cause() -> None:
    found = classify(FailureSignals(exit_code=1, log_tail=LOG))
    assert found.failure_class == FailureClass.CONFIG
    assert "signatures" in found.cause
