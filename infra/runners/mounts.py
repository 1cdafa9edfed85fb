"""The host-side mounts of pre-started sandboxes: a shared tmpfs of slot directories, and a run's
workspace bound onto a slot (received by the sandbox through mount propagation).

Binds go through the new mount API (open_tree, mount_setattr, move_mount; Linux 5.12+): the
copy is made `nosuid,nodev` while still detached, so the sandbox never sees it without them,
and it is taken from a descriptor, so no path a build controls is followed.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
from pathlib import Path

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long

# Syscall numbers shared by every Linux architecture since 5.2 (the unified table).
SYS_OPEN_TREE = 428
SYS_MOVE_MOUNT = 429
SYS_MOUNT_SETATTR = 442
OPEN_TREE_CLONE = 1
OPEN_TREE_CLOEXEC = os.O_CLOEXEC
AT_FDCWD = -100
AT_EMPTY_PATH = 0x1000
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_PRIVATE = 1 << 18
MS_SHARED = 1 << 20
MNT_DETACH = 0x2


class MountUnavailable(OSError):
    """This kernel (or the process's privileges) cannot make the mounts a sandbox pool needs."""


class _MountAttr(ctypes.Structure):
    _fields_ = [
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    ]


def _check(result: int, what: str) -> int:
    if result < 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")
    return result


def bind_descriptor(source_fd: int, target: Path) -> None:
    """Bind the directory (or file) `source_fd` refers to onto `target`, `nosuid,nodev`."""
    tree = _check(
        _libc.syscall(
            SYS_OPEN_TREE, source_fd, b"", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH
        ),
        "open_tree",
    )
    try:
        attr = _MountAttr(MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, 0, 0, 0)
        _check(
            _libc.syscall(
                SYS_MOUNT_SETATTR, tree, b"", AT_EMPTY_PATH, ctypes.byref(attr), ctypes.sizeof(attr)
            ),
            "mount_setattr",
        )
        _check(
            _libc.syscall(
                SYS_MOVE_MOUNT, tree, b"", AT_FDCWD, os.fsencode(target), MOVE_MOUNT_F_EMPTY_PATH
            ),
            f"move_mount onto {target}",
        )
    finally:
        os.close(tree)


def bind_path(source: Path, target: Path) -> None:
    """`bind_descriptor` of a path the worker owns (never one a build could have replaced)."""
    fd = os.open(source, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        bind_descriptor(fd, target)
    finally:
        os.close(fd)


def detach(target: Path) -> None:
    """Lazily unmount whatever is mounted on `target` (nothing mounted: no error)."""
    if _libc.umount2(os.fsencode(target), MNT_DETACH) != 0:
        errno = ctypes.get_errno()
        if errno not in (22, 2):  # EINVAL: not a mount point; ENOENT: gone
            raise OSError(errno, f"umount {target}: {os.strerror(errno)}")


def _is_mount_point(path: Path) -> bool:
    target = os.fsencode(path.resolve())
    with open("/proc/self/mountinfo", "rb") as info:
        for line in info:
            fields = line.split(b" ")
            if len(fields) > 4 and fields[4].replace(b"\\040", b" ") == target:
                return True
    return False


def ensure_shared_tmpfs(path: Path) -> None:
    """A small tmpfs at `path` with shared propagation: mounts made under it reach the sandboxes
    that bound a directory of it. Idempotent across processes (a lock file beside it)."""
    path.mkdir(parents=True, exist_ok=True, mode=0o755)
    lock = os.open(path.parent / f".{path.name}.lock", os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _is_mount_point(path):
            return
        options = b"mode=0755,size=16m,nr_inodes=65536"
        if (
            _libc.mount(
                b"forgeline-slots", os.fsencode(path), b"tmpfs", MS_NOSUID | MS_NODEV, options
            )
            != 0
        ):
            errno = ctypes.get_errno()
            raise MountUnavailable(errno, f"mount tmpfs on {path}: {os.strerror(errno)}")
        for flag in (MS_PRIVATE, MS_SHARED):
            if _libc.mount(None, os.fsencode(path), None, flag, None) != 0:
                errno = ctypes.get_errno()
                raise MountUnavailable(errno, f"propagation of {path}: {os.strerror(errno)}")
    finally:
        with contextlib.suppress(OSError):
            fcntl.flock(lock, fcntl.LOCK_UN)
        os.close(lock)


def mount_api_works(scratch: Path) -> str | None:
    """None when detached binds work here (probed once on `scratch`), else why not."""
    source = scratch / "probe-source"
    target = scratch / "probe-target"
    source.mkdir(parents=True, exist_ok=True)
    target.mkdir(parents=True, exist_ok=True)
    try:
        bind_path(source, target)
        detach(target)
    except OSError as exc:
        return str(exc)
    finally:
        with contextlib.suppress(OSError):
            target.rmdir()
        with contextlib.suppress(OSError):
            source.rmdir()
    return None
