"""Stage cache archives: declared paths packed from a run's workspace and unpacked into a later
one. Hostile both ways: packing never follows a symlink (one pointing out of the workspace is
left out) and stops at a size cap; unpacking refuses absolute names, `..`, links leaving the
workspace and device files, with the whole archive refused on the first such member.

`~/...` paths are the stage's home (a runner's home on the host, when it has one): packed under
names starting `~/`, unpacked into the home, each tree checked on its own (a link in the home
never points into the workspace or out). What the worker extracts becomes the owner's of the
directory it lands in (the build user's), so a stage can keep writing there.
"""

from __future__ import annotations

import contextlib
import copy
import os
import stat
import tarfile
from pathlib import Path

from core.runs.cache_tar import host_tar, tar_pack

# A cache archive holds at most this much (uncompressed) by default.
CACHE_MAX_BYTES = 1 << 30
# Archive names of the home's entries start with this.
HOME_PREFIX = "~/"


class CacheTooLarge(ValueError):
    pass


class UnsafeCacheArchive(ValueError):
    """An archive member would land outside the workspace or is not a plain file, dir or link."""


def resolve_cache_paths(
    root: Path, workdir: Path, paths: list[str], home: Path | None = None
) -> list[Path]:
    """The declared paths (relative to the stage's directory, or `~/...` in `home`) that exist
    inside the workspace (or the home); a path leaving it (`..`, absolute, a symlinked parent
    pointing out) is dropped, and so is `~` without a home."""
    out: list[Path] = []
    root = root.resolve()
    for raw in paths:
        base, within = workdir, root
        if raw.startswith(HOME_PREFIX) and home is not None:
            base, within = home, home.resolve()
            raw = raw.removeprefix(HOME_PREFIX)
        if raw.startswith(("/", "~")) or ".." in Path(raw).parts or "\x00" in raw or not raw:
            continue
        candidate = base / raw
        if not candidate.parent.resolve().is_relative_to(within):
            continue
        if candidate.is_symlink() or not candidate.exists():
            continue
        out.append(candidate)
    return out


def _inside(root: Path, link: Path, target: str) -> bool:
    if os.path.isabs(target):
        return False
    return Path(os.path.normpath(link.parent / target)).is_relative_to(root)


def pack(
    root: Path,
    sources: list[Path],
    dest: Path,
    max_bytes: int = CACHE_MAX_BYTES,
    home: Path | None = None,
) -> int:
    """Write `sources` (inside `root`, or `home`) to a gzip tar at `dest`, names relative to
    `root` (or `~/` and relative to `home`): with the host's GNU tar when it has one
    (core/runs/cache_tar.py), else Python's tarfile. Returns the bytes packed; CacheTooLarge
    past `max_bytes` (the partial file removed)."""
    root = root.resolve()
    home = home.resolve() if home is not None else None
    chosen, total = _entries(root, sources, max_bytes, home)
    tools = host_tar()
    try:
        if tools is not None:
            tar_pack(
                tools,
                dest,
                root,
                [name for prefix, name, _ in chosen if not prefix],
                home,
                [name for prefix, name, _ in chosen if prefix],
            )
            return total
        with tarfile.open(dest, "w:gz", compresslevel=1) as tar:
            for prefix, name, path in chosen:
                try:
                    tar.add(path, arcname=prefix + name, recursive=False)
                except OSError:
                    continue  # unreadable (another user's file): left out
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
    return total


def _entries(
    root: Path, sources: list[Path], max_bytes: int, home: Path | None
) -> tuple[list[tuple[str, str, Path]], int]:
    """(prefix, name relative to its tree, path) of what goes in the archive, and the bytes of
    its files: links leaving their tree, sockets, fifos and devices left out; CacheTooLarge
    past `max_bytes`."""
    chosen: list[tuple[str, str, Path]] = []
    total = 0
    for source in sources:
        base, prefix = root, ""
        if home is not None and source.resolve().is_relative_to(home):
            base, prefix = home, HOME_PREFIX
        for path in _walk(source):
            try:
                info = path.lstat()
            except OSError:
                continue  # gone since the walk
            if stat.S_ISLNK(info.st_mode):
                if not _inside(base, path, os.readlink(path)):
                    continue
            elif not (stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode)):
                continue  # sockets, fifos, devices
            elif stat.S_ISREG(info.st_mode):
                total += info.st_size
                if total > max_bytes:
                    raise CacheTooLarge(f"the cache is over {max_bytes} bytes")
            chosen.append((prefix, path.relative_to(base).as_posix(), path))
    return chosen, total


def _walk(source: Path) -> list[Path]:
    """`source` and everything under it, never through a symlinked directory."""
    if source.is_symlink() or not source.is_dir():
        return [source]
    found = [source]
    for dirpath, dirnames, filenames in os.walk(source, followlinks=False):
        base = Path(dirpath)
        found.extend(base / d for d in sorted(dirnames))
        found.extend(base / f for f in sorted(filenames))
    return found


def _in_home(name: str) -> bool:
    return name == "~" or name.startswith(HOME_PREFIX)


def _check_member(member: tarfile.TarInfo) -> None:
    """Checked against its own tree: a home member (`~/...`, the prefix taken off) against the
    home, any other against the workspace."""
    name = member.name
    if _in_home(name):
        name = name.removeprefix("~").lstrip("/")
        if member.islnk() and not _in_home(member.linkname):
            raise UnsafeCacheArchive(f"link {member.name!r} leaves the home")
        if member.islnk():
            member = copy.copy(member)
            member.linkname = member.linkname.removeprefix("~").lstrip("/")
    elif member.islnk() and _in_home(member.linkname):
        raise UnsafeCacheArchive(f"link {name!r} leaves the workspace")
    if name.startswith("/") or os.path.isabs(name) or ".." in Path(name).parts or "\x00" in name:
        raise UnsafeCacheArchive(f"member {name!r} leaves the workspace")
    if member.issym() or member.islnk():
        target = member.linkname
        if member.islnk():
            bad = target.startswith("/") or ".." in Path(target).parts
        else:
            bad = not _inside(Path("/w"), Path("/w") / name, target)
        if bad:
            raise UnsafeCacheArchive(f"link {name!r} -> {target!r} leaves the workspace")
    elif not (member.isreg() or member.isdir()):
        raise UnsafeCacheArchive(f"member {name!r} is not a file, directory or link")


def _home_member(member: tarfile.TarInfo) -> tarfile.TarInfo:
    moved = copy.copy(member)
    moved.name = member.name.removeprefix("~").lstrip("/") or "."
    if member.islnk():
        moved.linkname = member.linkname.removeprefix("~").lstrip("/")
    return moved


def unpack(
    archive: Path, root: Path, max_bytes: int = CACHE_MAX_BYTES, home: Path | None = None
) -> int:
    """Extract into `root` (and `~/` members into `home`; without a home they are skipped);
    UnsafeCacheArchive (before anything is written) on a hostile member, CacheTooLarge when the
    members add up past `max_bytes`. Returns the bytes extracted."""
    root = root.resolve()
    with tarfile.open(archive, "r:gz") as tar:
        members = tar.getmembers()
        total = 0
        for member in members:
            _check_member(member)
            total += member.size if member.isreg() else 0
            if total > max_bytes:
                raise CacheTooLarge(f"the cache archive holds over {max_bytes} bytes")
        trees = [(root, [m for m in members if not _in_home(m.name)])]
        if home is not None:
            trees.append((home.resolve(), [_home_member(m) for m in members if _in_home(m.name)]))
        # The data filter checks again against the files already there (a planted symlink).
        for dest, chosen in trees:
            if not chosen:
                continue
            try:
                tar.extractall(dest, members=chosen, filter="data")
            except tarfile.FilterError as exc:
                raise UnsafeCacheArchive(str(exc)) from exc
            give_to_owner(dest, [m.name for m in chosen])
    return total


def give_to_owner(dest: Path, names: list[str]) -> None:
    """What the worker just extracted under `dest` (each name and the directories on its way)
    becomes the owner's of `dest`. Entries the worker does not own are left alone, and no link
    is followed: each step opens the next directory by descriptor without following links."""
    owner = dest.stat()
    me = os.geteuid()
    if owner.st_uid == me:
        return
    done: set[str] = set()
    for name in names:
        parts = [p for p in Path(name).parts if p not in (".", "")]
        fds = [os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)]
        try:
            for i, part in enumerate(parts):
                key = "/".join(parts[: i + 1])
                with contextlib.suppress(OSError):
                    st = os.stat(part, dir_fd=fds[-1], follow_symlinks=False)
                    if key not in done and st.st_uid == me:
                        os.chown(
                            part, owner.st_uid, owner.st_gid, dir_fd=fds[-1], follow_symlinks=False
                        )
                    done.add(key)
                if i + 1 < len(parts):
                    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
                    try:
                        fds.append(os.open(part, flags, dir_fd=fds[-1]))
                    except OSError:
                        break  # a link or a file on the way: nothing past it is touched
        finally:
            for fd in fds:
                os.close(fd)
