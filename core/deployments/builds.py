"""Where a deployment's build context comes from (a stored archive, the run's workspace, or a
directory inside the organization's local root) and how its log lines reach the database."""

from __future__ import annotations

import asyncio
import tarfile
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.deployments import release_records
from core.deployments.repository import BuildScope
from db.session import session_scope
from forgeline.local_paths import is_inside_organization_roots
from forgeline.settings import Settings
from infra.image_builds import BuildFailed
from infra.storage import ObjectStore
from workflows.deployment_models import DeploymentSource


def context_allowed(path: Path, settings: Settings, scope: BuildScope) -> bool:
    """A build context on this host: the deployment's own run workspace, or a directory
    inside its organization's local root (never another tenant's files or the host's)."""
    run_id = scope.pipeline_run_id
    if run_id is not None and path == (settings.workspaces_dir / run_id).resolve():
        return True
    return scope.organization_id is not None and is_inside_organization_roots(
        path, settings, scope.organization_id
    )


def build_context(
    settings: Settings,
    store: ObjectStore,
    source: DeploymentSource,
    scratch: Path,
    scope: BuildScope,
) -> Path:
    """The directory to build from; a stored archive is unpacked into `scratch`."""
    if source.context_key:
        archive = scratch / "context.tar.gz"
        with archive.open("wb") as out, store.open(source.context_key) as src:
            while chunk := src.read(1 << 20):
                out.write(chunk)
        target = scratch / "context"
        target.mkdir()
        with tarfile.open(archive) as tar:
            tar.extractall(target, filter="data")
        return target
    if source.context_dir:
        path = Path(source.context_dir).resolve()
        if not context_allowed(path, settings, scope) or not path.is_dir():
            raise BuildFailed(f"build context {source.context_dir!r} is not available")
        return path
    raise BuildFailed("nothing to build: no source directory or stored source archive")


class BuildLog:
    """Build lines numbered in order and written about once a second while the build runs."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], deployment_id: str) -> None:
        self._sessions = sessions
        self._deployment_id = deployment_id
        self._pending: list[tuple[int, str, str, str, datetime | None]] = []
        self.lines = 0

    def line(self, text: str) -> None:
        # Called from the build thread: list.append is atomic, flush drains it.
        self.lines += 1
        self._pending.append((self.lines, "build", "build", text, None))

    async def flush(self) -> None:
        batch = self._pending[: len(self._pending)]
        del self._pending[: len(batch)]
        if batch:
            async with session_scope(self._sessions) as session:
                await release_records.append_logs(session, self._deployment_id, batch)

    async def pump(self, heartbeat: Callable[[str], None]) -> None:
        """Flush and heartbeat until cancelled."""
        while True:
            await asyncio.sleep(1.0)
            heartbeat(f"build line {self.lines}")
            await self.flush()
