"""The one interface every release target implements (build, release, verify, retire, restore,
teardown) and what the targets share. The deployment activities never ask which one they have."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.deployments.health import Probe
from db.models.deployments import Deployment
from forgeline.settings import Settings
from infra.storage import ObjectStore
from workflows.deployment_models import (
    BuildRequest,
    BuildResult,
    DeploymentRuntimeConfig,
    HealthRequest,
    ReleaseRequest,
    ReleaseResult,
    RetireRequest,
)

# Receives each build log line (called from the build's thread).
LineSink = Callable[[str], None]


class ReleaseNotServing(RuntimeError):
    """What was healthy a moment ago does not run now; a retry finds it restarted or fails."""


@dataclass(frozen=True)
class ReleaseContext:
    """What every provider works with: settings, the database and the object store."""

    settings: Settings
    sessions: async_sessionmaker[AsyncSession]
    store: ObjectStore


@dataclass(frozen=True)
class HealthTarget:
    """How a release is probed, and (for what can die, like a container) why it cannot serve."""

    probe: Callable[[], Awaitable[Probe]]
    dead_reason: Callable[[], Awaitable[str | None]] | None = None


class ReleaseProvider(Protocol):
    name: str

    async def build(
        self, req: BuildRequest, context: Path, *, publish_dotfiles: bool, on_line: LineSink
    ) -> BuildResult:
        """The artifact from a build context on this host: an image, or published files."""
        ...

    async def release(self, req: ReleaseRequest) -> ReleaseResult:
        """Serve the artifact on the deployment's own address (not yet the environment's)."""
        ...

    def verify(self, req: HealthRequest, http: httpx.AsyncClient) -> HealthTarget:
        """How the health checks reach the release, the way its visitors will."""
        ...

    async def retire(self, req: RetireRequest) -> list[str]:
        """Move the environment to the kept deployment and remove what served before, or drop
        a failed release; the IDs of the deployments whose containers were removed."""
        ...

    async def restore(self, previous: Deployment) -> None:
        """Make sure an earlier healthy deployment serves the environment again."""
        ...

    async def teardown(self, environment_id: str, config: DeploymentRuntimeConfig) -> list[str]:
        """Remove everything the environment serves; the IDs of removed deployments."""
        ...
