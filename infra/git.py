"""Shallow, bounded git clones of user repositories (agent analysis and pipeline runs).

The URL is re-validated and its address pinned right before cloning (forgeline.url_safety); the
token reaches git only through GIT_ASKPASS and the child's environment, never the URL, argv or
logs; transports are allow-listed; size, file count and wall time are capped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import signal
import stat
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from forgeline.secret_masking import SecretMasker
from forgeline.url_safety import CloneTarget, UnsafeRepositoryUrl, ValidatedUrl, resolve_for_clone

log = logging.getLogger("forgeline.git")

ASKPASS_SCRIPT = """#!/bin/sh
case "$1" in
  Username*|username*) printf '%s\\n' "${FORGELINE_GIT_USERNAME:-x-access-token}" ;;
  *) printf '%s\\n' "$FORGELINE_GIT_TOKEN" ;;
esac
"""
_SHA = re.compile(r"^[0-9a-fA-F]{7,40}$")
_BRANCH = re.compile(r"^(?!-)(?!.*\.\.)[A-Za-z0-9._/+-]{1,200}$")


class GitError(Exception):
    """A clone failed for a reason a retry may fix (network hiccup, remote 5xx)."""


class RepositoryUnavailable(Exception):
    """The repository does not exist, refused our credentials, or the ref is missing."""


class RepositoryTooLarge(Exception):
    """The checkout exceeded the configured size or file-count limit."""


@dataclass(frozen=True)
class CloneLimits:
    max_bytes: int = 200_000_000
    max_files: int = 50_000
    timeout_seconds: float = 300.0


@dataclass(frozen=True)
class CloneResult:
    path: Path
    commit_sha: str
    branch: str | None
    file_count: int
    size_bytes: int


def _tree_usage(root: Path) -> tuple[int, int]:
    files = size = 0
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            files += 1
            with contextlib.suppress(OSError):
                size += os.lstat(os.path.join(dirpath, name)).st_size
    return files, size


def _redact(text: str, secrets: list[str]) -> str:
    """The secrets masked as stage logs mask them: verbatim and as git re-encodes them (a token
    URL-encoded inside a remote URL, base64 inside an auth header)."""
    return SecretMasker(secrets).mask(text)


def _classify(stderr: str) -> Exception:
    lowered = stderr.lower()
    unavailable = (
        "not found",
        "does not appear to be a git repository",
        "authentication failed",
        "could not read username",
        "terminal prompts disabled",
        "permission denied",
        "remote branch",
        "couldn't find remote ref",
        "not our ref",
        "does not exist",
        "unable to find",
    )
    if any(marker in lowered for marker in unavailable):
        return RepositoryUnavailable(stderr.strip().splitlines()[-1] if stderr.strip() else "")
    return GitError(stderr.strip()[-500:] or "git failed")


@dataclass
class _GitRunner:
    env: dict[str, str]
    deadline: float
    limits: CloneLimits
    secrets: list[str]
    on_progress: Callable[[], None] | None

    async def run(self, args: list[str], *, watch: Path | None = None) -> str:
        def check() -> None:
            if time.monotonic() > self.deadline:
                raise GitError("git clone timed out")

        async def check_size() -> None:
            if watch is not None and watch.exists():
                files, size = await asyncio.to_thread(_tree_usage, watch)
                if size > self.limits.max_bytes or files > self.limits.max_files:
                    raise RepositoryTooLarge(_limit_message(files, size, self.limits))

        returncode, stdout, stderr = await run_git(
            args, self.env, on_progress=self.on_progress, check=check, check_async=check_size
        )
        if returncode != 0:
            raise _classify(_redact(stderr.decode(errors="replace"), self.secrets))
        return stdout.decode(errors="replace").strip()


async def run_git(
    args: list[str],
    env: dict[str, str],
    *,
    on_progress: Callable[[], None] | None = None,
    check: Callable[[], None] | None = None,
    check_async: Callable[[], Awaitable[None]] | None = None,
) -> tuple[int, bytes, bytes]:
    """Run git in its own session, every half second calling `on_progress` (heartbeats) and the
    checks (deadline, disk), which stop it by raising; the process is killed on any exit but its
    own. Returns the exit status, stdout and stderr."""
    proc = await asyncio.create_subprocess_exec(
        "git",
        *args,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    communicate = asyncio.ensure_future(proc.communicate())
    try:
        while True:
            done, _ = await asyncio.wait({communicate}, timeout=0.5)
            if done:
                break
            if on_progress:
                on_progress()
            if check:
                check()
            if check_async:
                await check_async()
    except BaseException:
        # The whole session: a child git started (upload-pack of a local remote, ssh, a remote
        # helper) would otherwise live on holding the output pipes, and wait() with them.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(BaseException):
            await proc.wait()
        communicate.cancel()
        raise
    stdout, stderr = communicate.result()
    return proc.returncode or 0, stdout, stderr


def _limit_message(files: int, size: int, limits: CloneLimits) -> str:
    if files > limits.max_files:
        return f"repository has more than {limits.max_files} files (limit)"
    return f"repository is larger than {limits.max_bytes // 1_000_000} MB (limit)"


def clone_environment(target: CloneTarget, *, home: Path, askpass: Path) -> dict[str, str]:
    """The whole environment of a git child: nothing inherited but PATH, and the allowed
    protocol exactly as forgeline.url_safety decided it for this URL."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),  # no user gitconfig, credential helpers or ssh config leak in
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_ASKPASS": str(askpass),
        "GIT_LFS_SKIP_SMUDGE": "1",
        **target.env,
    }


def operator_clone_target(url: str) -> CloneTarget:
    """The target of a remote on the forge the operator configured (a repository connected
    through the GitHub App): its host is the operator's choice, not a tenant's, so it is not
    held to public addresses (GitHub Enterprise on a private network); redirects and every other
    transport stay refused."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http") or not parts.hostname:
        raise UnsafeRepositoryUrl("the forge's URL must be http(s)://host")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise UnsafeRepositoryUrl("the forge's repository URL must carry no credentials or query")
    if scheme == "http" and parts.hostname not in ("127.0.0.1", "::1", "localhost"):
        # A token must not cross a network in clear: plain http only to this machine.
        raise UnsafeRepositoryUrl("the forge's URL must be https (http only on loopback)")
    config = (
        "protocol.allow=never",
        "protocol.ext.allow=never",
        f"protocol.{scheme}.allow=always",
        "http.followRedirects=false",
        "core.askPass=true",
    )
    validated = ValidatedUrl(
        url=url, kind="https", host=parts.hostname, port=parts.port, path=parts.path
    )
    env = {"GIT_TERMINAL_PROMPT": "0", "GIT_ALLOW_PROTOCOL": scheme}
    return CloneTarget(validated=validated, git_config=config, env=env)


def clone_config(target: CloneTarget) -> list[str]:
    """`-c` options of every git command of a clone: no hooks, no fsmonitor, no submodules."""
    return [
        *("-c", "core.fsmonitor=false", "-c", "core.hooksPath=/dev/null"),
        *("-c", "submodule.recurse=false"),
        *target.git_args(),
    ]


async def clone_repository(
    url: str,
    dest: Path,
    *,
    branch: str | None = None,
    commit: str | None = None,
    token: str | None = None,
    allow_local: bool = False,
    operator_host: bool = False,
    limits: CloneLimits | None = None,
    on_progress: Callable[[], None] | None = None,
) -> CloneResult:
    """Clone `url` at `branch` (or exactly `commit`) into `dest` (replaced if present);
    `operator_host`: the URL is on the forge the operator configured (see
    operator_clone_target), not a tenant's URL to check."""
    limits = limits or CloneLimits()
    if branch is not None and not _BRANCH.match(branch):
        raise UnsafeRepositoryUrl(f"invalid branch name {branch!r}")
    if commit is not None and not _SHA.match(commit):
        raise UnsafeRepositoryUrl(f"invalid commit {commit!r}")
    # Re-resolve now: DNS may have changed since the URL was stored; pin the checked address.
    target = (
        operator_clone_target(url)
        if operator_host
        else await resolve_for_clone(url, allow_local=allow_local)
    )
    remote = target.validated.url
    if target.validated.kind == "local":
        local = Path(remote).expanduser().resolve()
        if not local.exists():
            raise RepositoryUnavailable(f"local repository {remote} does not exist")
        remote = local.as_uri()  # file:// so --depth applies

    if dest.exists():
        shutil.rmtree(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="forgeline-git-") as scratch:
        askpass = Path(scratch) / "askpass.sh"
        askpass.write_text(ASKPASS_SCRIPT)
        askpass.chmod(stat.S_IRWXU)
        env = clone_environment(target, home=Path(scratch), askpass=askpass)
        if token:
            env["FORGELINE_GIT_TOKEN"] = token
        config = clone_config(target)
        git = _GitRunner(
            env=env,
            deadline=time.monotonic() + limits.timeout_seconds,
            limits=limits,
            secrets=[token] if token else [],
            on_progress=on_progress,
        )
        try:
            if commit:
                await git.run([*config, "init", "-q", str(dest)])
                fetch = ["fetch", "-q", "--depth", "1", "--no-tags", remote, commit]
                await git.run([*config, "-C", str(dest), *fetch], watch=dest)
                await git.run(
                    [*config, "-C", str(dest), "checkout", "-q", "--detach", "FETCH_HEAD"]
                )
            else:
                args = [*config, "clone", "-q", "--depth", "1", "--single-branch", "--no-tags"]
                if branch:
                    args += ["--branch", branch]
                await git.run([*args, "--", remote, str(dest)], watch=dest)
            sha = await git.run(["-C", str(dest), "rev-parse", "HEAD"])
        except BaseException:
            shutil.rmtree(dest, ignore_errors=True)
            raise
    files, size = await asyncio.to_thread(_tree_usage, dest)
    if size > limits.max_bytes or files > limits.max_files:
        shutil.rmtree(dest, ignore_errors=True)
        raise RepositoryTooLarge(_limit_message(files, size, limits))
    return CloneResult(path=dest, commit_sha=sha, branch=branch, file_count=files, size_bytes=size)
