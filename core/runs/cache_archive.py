"""Stage cache archives: declared paths packed from a run's workspace and unpacked into a later
one. Hostile both ways: packing never follows a symlink (one pointing out of the workspace is
left out) and stops at a size cap; unpacking refuses absolute names, `..`, links leaving the
workspace and device files, with the whole archive refused on the first such member.
"""

from __future__ import annotations

import os
import stat
import tarfile
from pathlib import Path

# A cache archive holds at most this much (uncompressed) by default.
CACHE_MAX_BYTES = 1 << 30


class CacheTooLarge(ValueError):
    pass


class UnsafeCacheArchive(ValueError):
    """An archive member would land outside the workspace or is not a plain file, dir or link."""


def resolve_cache_paths(root: Path, workdir: Path, paths: list[str]) -> list[Path]:
    """The declared paths (relative to the stage's directory) that exist inside the workspace;
    a path leaving it (`..`, absolute, a symlinked parent pointing out) is dropped."""
    out: list[Path] = []
    root = root.resolve()
    for raw in paths:
        if raw.startswith(("/", "~")) or ".." in Path(raw).parts or "\x00" in raw:
            continue
        candidate = workdir / raw
        if not candidate.parent.resolve().is_relative_to(root):
            continue
        if candidate.is_symlink() or not candidate.exists():
            continue
        out.append(candidate)
    return out


def _inside(root: Path, link: Path, target: str) -> bool:
    if os.path.isabs(target):
        return False
    return Path(os.path.normpath(link.parent / target)).is_relative_to(root)


def pack(root: Path, sources: list[Path], dest: Path, max_bytes: int = CACHE_MAX_BYTES) -> int:
    """Write `sources` (inside `root`) to a gzip tar at `dest`, names relative to `root`.
    Returns the bytes packed; CacheTooLarge past `max_bytes` (the partial file removed)."""
    root = root.resolve()
    total = 0
    try:
        with tarfile.open(dest, "w:gz") as tar:
            for source in sources:
                for path in _walk(source):
                    info = path.lstat()
                    name = path.relative_to(root).as_posix()
                    if stat.S_ISLNK(info.st_mode):
                        target = os.readlink(path)
                        if not _inside(root, path, target):
                            continue
                    elif not (stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode)):
                        continue  # sockets, fifos, devices
                    elif stat.S_ISREG(info.st_mode):
                        total += info.st_size
                        if total > max_bytes:
                            raise CacheTooLarge(f"the cache is over {max_bytes} bytes")
                    try:
                        tar.add(path, arcname=name, recursive=False)
                    except OSError:
                        continue  # unreadable (another user's file): left out
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
    return total


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


def _check_member(member: tarfile.TarInfo) -> None:
    name = member.name
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


def unpack(archive: Path, root: Path, max_bytes: int = CACHE_MAX_BYTES) -> int:
    """Extract into `root`; UnsafeCacheArchive (before anything is written) on a hostile member,
    CacheTooLarge when the members add up past `max_bytes`. Returns the bytes extracted."""
    root = root.resolve()
    with tarfile.open(archive, "r:gz") as tar:
        members = tar.getmembers()
        total = 0
        for member in members:
            _check_member(member)
            total += member.size if member.isreg() else 0
            if total > max_bytes:
                raise CacheTooLarge(f"the cache archive holds over {max_bytes} bytes")
        # The data filter checks again against the files already there (a planted symlink).
        try:
            tar.extractall(root, members=members, filter="data")
        except tarfile.FilterError as exc:
            raise UnsafeCacheArchive(str(exc)) from exc
    return total
