"""The task's checkout: cloned once per task, re-cloned at the same commit on another worker,
indexed into project_files, removed when the task ends."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.agent import repository
from core.agent.errors import AgentFailure, task_not_found
from core.agent.progress import Tick
from core.agent.projections import NAMESPACE
from core.agent.repo_files import RepoFiles
from core.integrations.clone_access import (
    InstallationTokenUnavailable,
    InstallationUnusable,
    clone_access,
    clone_plan,
)
from db.models.agent import AgentTask
from db.session import session_scope
from forgeline.crypto import DecryptionFailed
from forgeline.settings import Settings
from forgeline.url_safety import UnsafeRepositoryUrl
from infra.git import (
    CloneLimits,
    CloneResult,
    GitError,
    RepositoryTooLarge,
    RepositoryUnavailable,
    clone_repository,
)
from workflows.agent_models import CheckoutResult

MANIFEST_NAMES = {
    "package.json", "pyproject.toml", "requirements.txt", "go.mod", "Cargo.toml", "pom.xml",
    "build.gradle", "build.gradle.kts", "Gemfile", "composer.json", "Dockerfile",
    "pnpm-workspace.yaml",
}  # fmt: skip
LANGUAGES = {
    ".py": "python", ".js": "javascript", ".mjs": "javascript", ".ts": "typescript",
    ".tsx": "typescript", ".jsx": "javascript", ".go": "go", ".rs": "rust", ".java": "java",
    ".kt": "kotlin", ".rb": "ruby", ".php": "php", ".html": "html", ".css": "css", ".vue": "vue",
    ".svelte": "svelte",
}  # fmt: skip
MAX_INDEXED_FILES = 5_000


class Workspaces:
    """Checkouts of agent tasks under the worker's workspaces directory."""

    def __init__(self, settings: Settings, session_maker: async_sessionmaker[AsyncSession]) -> None:
        self.settings = settings
        self.session_maker = session_maker

    def path(self, task_id: uuid.UUID) -> Path:
        return self.settings.workspaces_dir / "agent" / str(task_id)

    async def check_out(
        self,
        task_id: uuid.UUID,
        project_id: uuid.UUID,
        branch: str | None,
        commit: str | None,
        tick: Tick,
    ) -> CheckoutResult:
        """Clone the project's repository for the task and index its files."""
        result = await self.clone(task_id, project_id, branch, commit, tick)
        await self._index_files(project_id, Path(result.workspace), result.commit_sha)
        return result

    async def clone(
        self,
        task_id: uuid.UUID,
        project_id: uuid.UUID,
        branch: str | None,
        commit: str | None,
        tick: Tick,
    ) -> CheckoutResult:
        async with session_scope(self.session_maker) as session:
            repo = await repository.repository_of(session, project_id)
            if repo is None:
                raise AgentFailure("RepositoryMissing", "the project has no repository connected")
            default_branch = repo.default_branch
            plan = await clone_plan(session, repo.id)
        if plan is None:
            raise AgentFailure("RepositoryMissing", "the project has no repository connected")
        try:
            access = await clone_access(self.settings, plan)
        except DecryptionFailed:
            raise AgentFailure(
                "RepositoryCredentials",
                "the repository access token cannot be decrypted; set it again",
            ) from None
        except InstallationUnusable as exc:
            raise AgentFailure("RepositoryCredentials", exc.detail) from None
        except InstallationTokenUnavailable as exc:
            raise AgentFailure("GitError", exc.detail, retryable=True) from None
        limits = CloneLimits(
            max_bytes=self.settings.repo_max_bytes,
            max_files=self.settings.repo_max_files,
            timeout_seconds=self.settings.git_clone_timeout_seconds,
        )
        use_branch = None if commit else (branch or default_branch)

        async def clone_at(at_branch: str | None) -> CloneResult:
            return await clone_repository(
                access.url,
                self.path(task_id),
                branch=at_branch,
                commit=commit,
                token=access.token,
                allow_local=self.settings.allow_local_repositories,
                operator_host=access.operator_host,
                limits=limits,
                on_progress=tick,
            )

        try:
            try:
                result = await clone_at(use_branch)
            except RepositoryUnavailable:
                # The stored default branch is only a guess (it defaults to "main"): a repository
                # whose default is another branch is cloned at its own HEAD. A branch the task
                # asked for is never swapped for another.
                if commit or branch or use_branch is None:
                    raise
                result = await clone_at(None)
        except UnsafeRepositoryUrl as exc:
            raise AgentFailure(
                "UnsafeRepositoryUrl", f"repository URL refused: {exc.detail}"
            ) from None
        except RepositoryUnavailable as exc:
            raise AgentFailure(
                "RepositoryUnavailable", f"repository unavailable: {exc}".rstrip(": ")
            ) from None
        except RepositoryTooLarge as exc:
            raise AgentFailure("RepositoryTooLarge", str(exc)) from None
        except GitError as exc:
            raise AgentFailure("GitError", f"clone failed: {exc}", retryable=True) from None
        return CheckoutResult(
            workspace=str(result.path),
            commit_sha=result.commit_sha,
            branch=result.branch,
            file_count=result.file_count,
            size_bytes=result.size_bytes,
        )

    async def ensure(self, task_id: uuid.UUID, checkout: CheckoutResult, tick: Tick) -> Path:
        """The workspace of an earlier activity, re-cloned at the same commit on a new worker."""
        root = Path(checkout.workspace)
        if root.is_dir() and (root / ".git").exists():
            return root
        async with session_scope(self.session_maker) as session:
            task = await session.get(AgentTask, task_id)
            if task is None:
                raise task_not_found(task_id)
            project_id = task.project_id
        again = await self.clone(task_id, project_id, None, checkout.commit_sha, tick)
        return Path(again.workspace)

    def remove(self, task_id: uuid.UUID) -> None:
        """The checkout is scratch space; the index lives in project_files, the output in rows."""
        shutil.rmtree(self.path(task_id), ignore_errors=True)

    async def _index_files(self, project_id: uuid.UUID, root: Path, sha: str) -> None:
        files = RepoFiles(root)
        paths = (await asyncio.to_thread(files.walk, MAX_INDEXED_FILES))[:MAX_INDEXED_FILES]
        rows: list[dict[str, Any]] = []
        for rel in paths:
            name = rel.rsplit("/", 1)[-1]
            suffix = "." + name.rsplit(".", 1)[-1] if "." in name else ""
            try:
                size = (root / rel).stat().st_size
            except OSError:
                continue
            rows.append(
                {
                    "id": uuid.uuid5(NAMESPACE, f"{project_id}:{sha}:{rel}"),
                    "project_id": project_id,
                    "commit_sha": sha,
                    "path": rel[:1000],
                    "size_bytes": size,
                    "language": LANGUAGES.get(suffix),
                    "is_manifest": name in MANIFEST_NAMES,
                }
            )
        async with session_scope(self.session_maker) as session:
            await repository.index_files(session, rows)
