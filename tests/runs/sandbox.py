"""The isolated runner the run tests use, as the worker does by default."""

from __future__ import annotations

from pathlib import Path

from infra.runners.sandbox_runner import SandboxConfig, SandboxRunner


def sandbox_runner(state_dir: Path, **overrides: object) -> SandboxRunner:
    return SandboxRunner(SandboxConfig(state_dir=state_dir, **overrides))  # type: ignore[arg-type]
