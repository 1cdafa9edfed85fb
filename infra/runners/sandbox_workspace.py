"""A run's workspace as the sandbox hands it to the build user: the checkout given to the build
user, and beside it (never inside: a repository-wide `prettier --check .`, `xo` or `git status`
must not see them) the run's home and temporary directory, made real directories of the build
user's (no link a build left is followed); and the disk all of it takes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from infra.runners.disk_pacing import watch_usage

# Per run, a sibling of the checkout: `home` (the build user's HOME, tool caches shared by the
# run's stages) and `tmp` (mounted at /tmp, so fixed paths like /tmp/x are per run). The
# directory itself stays the worker's and is never mounted: a build cannot replace its entries.
STATE_SUFFIX = ".sandbox"


class SandboxUnavailable(RuntimeError):
    """bubblewrap, setpriv, socat or a writable cgroup hierarchy is missing on this host."""


@dataclass(frozen=True)
class RunDirectories:
    """O_PATH descriptors of the run's home and temporary directory, to mount by descriptor (a
    build cannot turn them into links to host paths between the check and the mount)."""

    home_fd: int
    tmp_fd: int

    def close(self) -> None:
        for fd in (self.home_fd, self.tmp_fd):
            with contextlib.suppress(OSError):
                os.close(fd)


def run_state_dir(root: Path) -> Path:
    """Where the run whose checkout is `root` keeps its home and temporary directory."""
    return root.with_name(root.name + STATE_SUFFIX)


def run_home(root: Path) -> Path:
    return run_state_dir(root) / "home"


def remove_run_state(root: Path) -> None:
    """The run's home and temporary directory, gone with its checkout (blocking)."""
    shutil.rmtree(run_state_dir(root), ignore_errors=True)


def workspace_usage(root: Path, limit: int) -> int:
    """Bytes allocated under `root` (symlinks not followed), stopping early past `limit`."""
    total = 0
    stack = [str(root)]
    while stack:
        with contextlib.suppress(OSError), os.scandir(stack.pop()) as entries:
            for entry in entries:
                with contextlib.suppress(OSError):
                    st = entry.stat(follow_symlinks=False)
                    total += st.st_blocks * 512
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
                if total > limit:
                    return total
    return total


def run_usage(root: Path, limit: int) -> int:
    """Bytes the run's checkout, home and temporary directory take together."""
    used = workspace_usage(root, limit)
    if used > limit:
        return used
    return used + workspace_usage(run_state_dir(root), limit - used)


async def watch_run_disk(
    root: Path, limit: int, every: float, kill: Callable[[], None], over: asyncio.Event
) -> None:
    """Every `every` seconds (slower when the tree is slow to walk; one walk shared by the
    run's watchers) until cancelled: past `limit`, `over` set and the stage killed."""
    await watch_usage(root, limit, every, run_usage)
    over.set()
    await asyncio.to_thread(kill)


def give_to_build_user(root: Path, uid: int, gid: int) -> None:
    """The checkout (written by the worker) becomes the build user's; symlinks are not followed."""
    if root.stat().st_uid == uid:
        return
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            with contextlib.suppress(FileNotFoundError):
                os.lchown(os.path.join(dirpath, name), uid, gid)
    os.chown(root, uid, gid)


def _own_directory(parent_fd: int, name: str, uid: int, gid: int) -> int:
    """An O_PATH descriptor of `name` in `parent_fd`, made a real directory of the build user's:
    a symlink (or file) a build left there is removed first, and no link is followed."""
    for _ in range(3):
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, mode=0o755, dir_fd=parent_fd)
        try:
            fd = os.open(
                name, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent_fd
            )
        except OSError:  # a link or a file: not ours to follow
            with contextlib.suppress(FileNotFoundError, IsADirectoryError):
                os.unlink(name, dir_fd=parent_fd)
            continue
        try:
            os.chown(name, uid, gid, dir_fd=parent_fd, follow_symlinks=False)
        except BaseException:
            os.close(fd)
            raise
        return fd
    raise SandboxUnavailable(f"cannot make {name} a directory of the run")


def prepare_run_directories(root: Path, uid: int, gid: int) -> RunDirectories:
    """The run's home and temporary directory (beside the checkout), the build user's."""
    state = run_state_dir(root)
    with contextlib.suppress(FileExistsError):
        state.mkdir(mode=0o755)
    state_fd = os.open(state, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        home_fd = _own_directory(state_fd, "home", uid, gid)
        try:
            tmp_fd = _own_directory(state_fd, "tmp", uid, gid)
        except BaseException:
            os.close(home_fd)
            raise
    finally:
        os.close(state_fd)
    return RunDirectories(home_fd=home_fd, tmp_fd=tmp_fd)


def ensure_run_home(root: Path, uid: int, gid: int) -> Path:
    """The run's home (a stage's `~`) on the host, ready and the build user's (blocking)."""
    prepare_run_directories(root, uid, gid).close()
    return run_home(root)


def prepare_workspace(root: Path, uid: int, gid: int) -> RunDirectories:
    """The run's home and temporary directory ready, and the whole checkout the build user's."""
    dirs = prepare_run_directories(root, uid, gid)
    try:
        give_to_build_user(root, uid, gid)
    except BaseException:
        dirs.close()
        raise
    return dirs
