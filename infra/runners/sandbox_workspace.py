"""A run's workspace as the sandbox hands it to the build user: its home and temporary
directory made real directories of the build user's (no link a build left is followed), the
checkout given to the build user, and the disk it takes."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

# Per run, inside the workspace: the build user's home (caches shared by the run's stages) and
# its temporary directory (also mounted at /tmp, so fixed paths like /tmp/x are per run).
SANDBOX_DIR = ".forgeline-sandbox"


class SandboxUnavailable(RuntimeError):
    """bubblewrap, setpriv, socat or a writable cgroup hierarchy is missing on this host."""


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
            fd = os.open(name, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent_fd)
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
    raise SandboxUnavailable(f"cannot make {name} a directory of the workspace")


def prepare_workspace(root: Path, uid: int, gid: int) -> int:
    """The run's home and temporary directory inside it, the whole of it the build user's, and
    the temporary directory's descriptor to mount at /tmp (by descriptor: a build cannot turn
    it into a link to a host path between this check and the mount).

    On the first stage (a fresh checkout no build has touched yet) git is told to ignore them:
    a pipeline checking for a clean tree must not see them."""
    fresh = root.stat().st_uid != uid
    root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY)
    try:
        sandbox_fd = _own_directory(root_fd, SANDBOX_DIR, uid, gid)
        try:
            os.close(_own_directory(sandbox_fd, "home", uid, gid))
            tmp_fd = _own_directory(sandbox_fd, "tmp", uid, gid)
        finally:
            os.close(sandbox_fd)
    finally:
        os.close(root_fd)
    git = root / ".git"
    if fresh and git.is_dir() and not git.is_symlink():
        (git / "info").mkdir(exist_ok=True)
        exclude = git / "info" / "exclude"
        known = exclude.read_text() if exclude.is_file() else ""
        if f"/{SANDBOX_DIR}/" not in known.splitlines():
            with exclude.open("a") as handle:
                lead = "" if not known or known.endswith("\n") else "\n"
                handle.write(f"{lead}/{SANDBOX_DIR}/\n")
    give_to_build_user(root, uid, gid)
    return tmp_fd
