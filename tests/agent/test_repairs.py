"""Rule-based repairs of a failed verification stage: each rule repairs the pipeline's fault
from the evidence and the checkout, and leaves the repository's own failures alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from core.agent.images import COREPACK_ENABLE
from core.agent.repairs import repair_stage


def stage(*commands: str, **extra: Any) -> dict[str, Any]:
    return {"name": "test", "commands": list(commands), "environment": {}, **extra}


def test_a_src_layout_module_goes_on_the_import_path(tmp_path: Path) -> None:
    (tmp_path / "src" / "calc").mkdir(parents=True)
    log = "ModuleNotFoundError: No module named 'calc.core'"
    repaired = repair_stage(stage("python -m pytest"), [log], "", tmp_path)
    assert repaired is not None
    assert repaired.stage["environment"] == {"PYTHONPATH": "src"}
    # Applied once: the same failure again is not the path any more.
    assert repair_stage(repaired.stage, [log], "", tmp_path) is None


def test_a_missing_third_party_module_is_not_repaired(tmp_path: Path) -> None:
    log = "ModuleNotFoundError: No module named 'requests'"
    assert repair_stage(stage("python -m pytest"), [log], "", tmp_path) is None


def test_npm_ci_without_a_lockfile_becomes_npm_install(tmp_path: Path) -> None:
    log = "npm ERR! The `npm ci` command can only install with an existing package-lock.json"
    repaired = repair_stage(stage("npm ci --no-audit", "npm test"), [], log, tmp_path)
    assert repaired is not None
    assert repaired.stage["commands"] == ["npm install --no-audit", "npm test"]


def test_a_package_manager_the_image_lacks_is_enabled(tmp_path: Path) -> None:
    repaired = repair_stage(stage("pnpm install"), ["sh: 1: pnpm: not found"], "", tmp_path)
    assert repaired is not None and repaired.stage["commands"][0] == COREPACK_ENABLE


def test_a_script_the_package_does_not_declare_is_dropped(tmp_path: Path) -> None:
    log = 'npm ERR! Missing script: "lint"'
    repaired = repair_stage(stage("npm install", "npm run lint"), [log], "", tmp_path)
    assert repaired is not None and repaired.stage["commands"] == ["npm install"]


def test_an_env_example_is_copied_only_when_the_repository_ships_one(tmp_path: Path) -> None:
    log = "Error: ENOENT: no such file or directory, open '.env'"
    assert repair_stage(stage("npm test"), [log], "", tmp_path) is None
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / ".env.sample").write_text("A=1\n")
    repaired = repair_stage(stage("npm test", working_directory="app"), [log], "", tmp_path)
    assert repaired is not None and repaired.stage["commands"][0] == "cp -n .env.sample .env"


def test_an_assertion_failure_is_the_repositorys_own(tmp_path: Path) -> None:
    lines = ["AssertionError [ERR_ASSERTION]: arithmetic is broken", "FAILED (failures=1)"]
    assert repair_stage(stage("npm test"), lines, "\n".join(lines), tmp_path) is None


def test_hostile_evidence_neither_escapes_the_checkout_nor_hangs(tmp_path: Path) -> None:
    # A working directory outside the checkout is read as the checkout's root.
    outside = tmp_path.parent / "elsewhere"
    (outside / "src" / "evil").mkdir(parents=True, exist_ok=True)
    log = "ModuleNotFoundError: No module named 'evil'"
    assert (
        repair_stage(stage("pytest", working_directory="../elsewhere"), [log], "", tmp_path) is None
    )
    huge = "x" * 2_000_000 + " No such file or directory " + "y" * 2_000_000
    assert repair_stage(stage("true"), [huge], "\x00\x1b[31m" * 10_000, tmp_path) is None
