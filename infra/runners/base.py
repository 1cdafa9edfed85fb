"""The one interface every stage runner implements (Docker containers, local process groups)."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

OutputCallback = Callable[[bytes], Awaitable[None]]

_NAME_UNSAFE = re.compile(r"[^a-zA-Z0-9_.-]")


def process_name(run_id: str, stage: str, attempt: int) -> str:
    """Deterministic per attempt, so a retry can find and remove its predecessors."""
    return f"{process_prefix(run_id, stage)}{attempt}"


def process_prefix(run_id: str, stage: str) -> str:
    safe_stage = _NAME_UNSAFE.sub("_", stage)[:60]
    return f"fl-{run_id}-{safe_stage}-"


@dataclass(frozen=True)
class ServiceProcess:
    """A container started beside a stage, reachable by `name` from it (Docker runner)."""

    name: str
    image: str
    env: dict[str, str] = field(default_factory=dict)
    # Run inside the service until it exits 0; None: the image's HEALTHCHECK, else started.
    health_command: str | None = None
    health_timeout_seconds: float = 60.0


@dataclass(frozen=True)
class StageProcess:
    """What to run for one attempt of one stage; `script` runs under `sh -c`."""

    name: str
    script: str
    # The directory the script starts in (the run's workspace or a directory inside it).
    workspace: Path
    timeout_seconds: float
    image: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    cpus: float | None = None
    memory_mb: int | None = None
    pids_limit: int | None = None
    network: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    # The run's whole workspace, when `workspace` is a directory inside it: isolating runners
    # mount the root and start in `workspace`.
    root: Path | None = None
    disk_mb: int | None = None
    services: tuple[ServiceProcess, ...] = ()

    @property
    def workdir(self) -> str:
        """`workspace` relative to `root` ("" when they are the same directory)."""
        if self.root is None:
            return ""
        relative = self.workspace.resolve().relative_to(self.root.resolve())
        return "" if str(relative) == "." else str(relative)


@dataclass(frozen=True)
class StageOutcome:
    exit_code: int
    timed_out: bool = False
    # What the runner did otherwise than the stage asked (a Python version the host lacks),
    # recorded with the stage's result.
    notes: tuple[str, ...] = ()


class Runner(ABC):
    kind: str
    # Starts a stage's service containers beside it (else a stage with services is refused).
    supports_services = False

    @abstractmethod
    async def run(self, process: StageProcess, on_output: OutputCallback) -> StageOutcome:
        """Run to completion or timeout. On asyncio cancellation the process is killed first."""

    @abstractmethod
    async def remove_stale(self, prefix: str) -> int:
        """Kill and remove leftovers (earlier attempts, a crashed worker's) named `prefix*`."""

    async def stage_home(self, root: Path) -> Path | None:
        """The host directory a stage of the run whose workspace is `root` sees as `~`, ready
        before the stage starts (the stage cache restores `~/...` paths into it); None when the
        runner's home is not on the host (`~` cache paths are then not kept)."""
        return None

    def service_refusal(self, process: StageProcess) -> str | None:
        """None when this runner starts the stage's services, else why not (a line for its log)."""
        if self.supports_services:
            return None
        names = ", ".join(s.name for s in process.services)
        return (
            f"{SERVICE_MARKER} refused: the {self.kind} runner cannot start service "
            f"containers ({names}); run this pipeline on a Docker build host "
            "(FORGELINE_CONTAINER_RUNNER=docker)\n"
        )

    async def sweep_expired(self) -> int:
        """Remove leftovers whose stage's deadline has passed (none for runners whose
        processes cannot outlive their worker)."""
        return 0

    async def close(self) -> None:
        return None


# A stage whose services did not start ends with this exit code (Docker's "could not run").
SERVICE_EXIT = 125
# Forgeline's own line about it in the stage's log (its failure class is `config`).
SERVICE_MARKER = "forgeline: stage services:"


async def run_stage(
    runner: Runner, process: StageProcess, on_output: OutputCallback
) -> StageOutcome:
    """`runner.run`, except that a runner that cannot start the services a stage declares
    refuses it, with the reason in the stage's log."""
    refusal = runner.service_refusal(process) if process.services else None
    if refusal is not None:
        await on_output(refusal.encode())
        return StageOutcome(exit_code=SERVICE_EXIT)
    return await runner.run(process, on_output)
