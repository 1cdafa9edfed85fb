"""A lint stage that runs pre-commit, whose hook repositories are on a git host the build network
does not reach, is repaired to run the linters the config pins (ruff, black, flake8, isort) from
the package registries; other hooks, hostile configs and other failures are left alone."""

from __future__ import annotations

import asyncio
from pathlib import Path

from core.agent.precommit_tools import configured_linters
from core.agent.repairs import repair_stage

CONFIG = """repos:
  - repo: https://github.com/astral-sh/ruff-pre-commit
    rev: 76e47323a83cd9795e4ff9a1de1c0d2eef610f17  # frozen: v0.11.11
    hooks:
      - id: ruff
      - id: ruff-format
  - repo: https://github.com/pre-commit/pre-commit-hooks
    rev: v5.0.0
    hooks:
      - id: trailing-whitespace
  - repo: https://github.com/psf/black
    rev: 24.3.0
    hooks:
      - id: black
"""
LOG = """[INFO] Initializing environment for https://github.com/astral-sh/ruff-pre-commit.
An unexpected error has occurred: CalledProcessError: command: ('/usr/bin/git', 'fetch')
    fatal: unable to access 'https://github.com/a/b/': CONNECT tunnel failed, response 502
"""
PRE_COMMIT = "uv run --locked --group pre-commit pre-commit run --all-files"


def _mkdir(path: Path) -> Path:
    path.mkdir()
    return path


def _stage(*commands: str) -> dict[str, object]:
    return {"name": "lint", "image": "python:3.13", "commands": list(commands)}


def _repo(root: Path, config: str) -> Path:
    (root / ".pre-commit-config.yaml").write_text(config)
    return root


def test_unreachable_hooks_become_the_pinned_linters(tmp_path: Path) -> None:
    stage = _stage("pip install uv && uv sync --frozen", PRE_COMMIT)
    repair = repair_stage(stage, [], LOG, _repo(tmp_path, CONFIG))
    assert repair is not None
    assert repair.stage["commands"] == [
        "pip install uv && uv sync --frozen",
        "pip install ruff==0.11.11 black==24.3.0",
        "ruff check .",
        "ruff format --check .",
        "black --check .",
    ]
    assert "network" in repair.diagnosis


def test_other_failures_and_other_stages_are_left_alone(tmp_path: Path) -> None:
    root = _repo(tmp_path, CONFIG)
    assert repair_stage(_stage(PRE_COMMIT), [], "would reformat x.py\n", root) is None
    assert repair_stage(_stage("ruff check ."), [], LOG, root) is None
    # A config with no tool known here: no guess.
    only_hooks = "repos:\n  - repo: x\n    rev: v1\n    hooks:\n      - id: end-of-file-fixer\n"
    other = _repo(_mkdir(tmp_path / "b"), only_hooks)
    assert repair_stage(_stage(PRE_COMMIT), [], LOG, other) is None


def test_hostile_configs_yield_no_shell(tmp_path: Path) -> None:
    evil = "repos:\n  - repo: x\n    rev: '1; rm -rf /'\n    hooks:\n      - id: ruff\n"
    assert configured_linters(evil) == ["pip install ruff", "ruff check ."]
    assert configured_linters("\x00\xff" * 500_000) == []
    assert configured_linters(None) == []
    many = "repos:\n" + "  - repo: x\n    rev: v1\n    hooks:\n      - id: ruff\n" * 50_000
    assert configured_linters(many) == ["pip install ruff==1", "ruff check ."]


async def test_concurrent_repairs_agree(tmp_path: Path) -> None:
    root = _repo(tmp_path, CONFIG)
    stage = _stage(PRE_COMMIT)
    found = await asyncio.gather(
        *(asyncio.to_thread(repair_stage, stage, [], LOG, root) for _ in range(8))
    )
    assert len({tuple(r.stage["commands"]) for r in found if r is not None}) == 1
