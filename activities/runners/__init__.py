"""Stage runners behind one interface; `create_runner` picks Docker or local processes."""

from __future__ import annotations

from activities.runners.base import Runner, StageOutcome, StageProcess, process_name, process_prefix
from forgeline.settings import Settings

# Image for stages that name none (Docker runner only).
DEFAULT_STAGE_IMAGE = "debian:bookworm-slim"

__all__ = [
    "Runner",
    "StageOutcome",
    "StageProcess",
    "create_runner",
    "process_name",
    "process_prefix",
]


def create_runner(settings: Settings) -> Runner:
    """`container_runner` = docker | local | auto (Docker when an engine answers)."""
    from activities.containers import ContainerEngine, EngineUnavailable
    from activities.runners.docker_runner import DockerRunner
    from activities.runners.local_runner import LocalProcessRunner

    if settings.container_runner in ("docker", "auto"):
        try:
            engine = ContainerEngine.connect(settings)
        except EngineUnavailable:
            if settings.container_runner == "docker":
                raise
        else:
            return DockerRunner(engine, DEFAULT_STAGE_IMAGE)
    return LocalProcessRunner(settings.data_dir / "runner")
