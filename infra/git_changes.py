"""Paths changed between two commits of a repository, from a blobless fetch (trees only): the
pushed range, or a pull request's head against its merge base with the target branch.

The remote is checked and pinned as for clones (forgeline.url_safety); the token reaches git
only through GIT_ASKPASS; ref names and SHAs reach git as data after `--end-of-options`.
"""

from __future__ import annotations

import asyncio
import re
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path

from forgeline.url_safety import resolve_for_clone
from infra.git import (
    ASKPASS_SCRIPT,
    GitError,
    clone_config,
    clone_environment,
    operator_clone_target,
    run_git,
)

_SHA = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")
BASE_REF = "refs/forgeline/base"
DEFAULT_MAX_PATHS = 3000
DEFAULT_TIMEOUT_SECONDS = 120.0


async def _git(
    args: list[str], env: dict[str, str], timeout: float, on_progress: Callable[[], None] | None
) -> bytes:
    deadline = asyncio.get_running_loop().time() + timeout

    def check() -> None:
        if asyncio.get_running_loop().time() > deadline:
            raise GitError("git timed out computing changed paths")

    returncode, stdout, stderr = await run_git(args, env, on_progress=on_progress, check=check)
    if returncode != 0:
        # stderr never carries the token (askpass); the first line says enough.
        first = stderr.decode(errors="replace").strip().splitlines()[:1]
        raise GitError(f"git {args[-1][:40]!r}: {first[0][:300] if first else 'failed'}")
    return stdout


async def changed_paths(
    url: str,
    *,
    head: str,
    before: str | None = None,
    base_branch: str | None = None,
    base_sha: str | None = None,
    token: str | None = None,
    allow_local: bool = False,
    operator_host: bool = False,
    max_paths: int = DEFAULT_MAX_PATHS,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
    on_progress: Callable[[], None] | None = None,
) -> list[str] | None:
    """Paths changed by `before..head` (a push), or by `head` since its merge base with
    `base_sha` / `base_branch` (a pull request). None when git cannot tell (no base) or more than
    `max_paths` changed: path filters then match. `operator_host` as for clone_repository."""
    for sha in (head, before, base_sha):
        if sha is not None and not _SHA.match(sha):
            raise GitError(f"not a commit SHA: {sha[:80]!r}")
    if before is None and base_sha is None and base_branch is None:
        return None
    target = (
        operator_clone_target(url)
        if operator_host
        else await resolve_for_clone(url, allow_local=allow_local)
    )
    remote = target.validated.url
    if target.validated.kind == "local":
        remote = Path(remote).expanduser().resolve().as_uri()
    with tempfile.TemporaryDirectory(prefix="forgeline-changes-") as scratch:
        root = Path(scratch)
        askpass = root / "askpass.sh"
        askpass.write_text(ASKPASS_SCRIPT)
        askpass.chmod(stat.S_IRWXU)
        env = clone_environment(target, home=root, askpass=askpass)
        if token:
            env["FORGELINE_GIT_TOKEN"] = token
        repo = str(root / "repo.git")
        config = clone_config(target)

        async def git(*args: str) -> bytes:
            return await _git([*config, *args], env, timeout, on_progress)

        await git("init", "-q", "--bare", repo)
        wants = [head]
        if before is not None:
            wants.append(before)
        elif base_sha is not None:
            wants.append(base_sha)
        else:
            assert base_branch is not None
            wants.append(f"+refs/heads/{base_branch}:{BASE_REF}")
        await git(
            "-C",
            repo,
            "fetch",
            "-q",
            "--no-tags",
            "--filter=blob:none",
            "--end-of-options",
            remote,
            *wants,
        )
        base = before or base_sha or BASE_REF
        spec = f"{base}..{head}" if before is not None else f"{base}...{head}"
        out = await git(
            "-C", repo, "diff", "--name-only", "--no-renames", "-z", "--end-of-options", spec
        )
    paths = [p.decode("utf-8", "replace") for p in out.split(b"\0") if p]
    if len(paths) > max_paths:
        return None
    return paths
