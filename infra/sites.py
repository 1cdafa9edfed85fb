"""The `static` provider: a site's files published under an object-store prefix, then laid out
in a directory of their own that the reverse proxy's file server serves on the site's own host
name (`<environment>.<project>.<apps domain>`), never on the API's origin.

Publishing reads the build output without following anything out of it: symbolic links are
published only when they point at a regular file inside the published tree (as a copy of that
file), hard links only when every link of the file is inside the tree; FIFOs, sockets and
devices are refused; dotfiles are left out unless the environment sets `publish_dotfiles`, and
`.git` is never published.
"""

from __future__ import annotations

import contextlib
import errno
import json
import mimetypes
import os
import shutil
import stat
import uuid
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Protocol

MANIFEST = ".forgeline-manifest.json"
# Public web paths that start with a dot but are meant to be served (RFC 8615).
ALWAYS_PUBLISHED_DOT_DIRS = frozenset({".well-known"})
NEVER_PUBLISHED = frozenset({".git"})
_TMP_PREFIX = ".publishing-"


class SiteStore(Protocol):
    def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> object: ...

    def get_bytes(self, key: str) -> bytes: ...

    def exists(self, key: str) -> bool: ...


class SitePublishRefused(ValueError):
    """The build output holds something that must not be published (the message says what)."""


def site_prefix(deployment_id: str) -> str:
    return f"deployments/{deployment_id}/site"


def site_url(public_base_url: str, deployment_id: str) -> str:
    """The API's compatibility path for a site (served sandboxed; the site's host is canonical)."""
    return f"{public_base_url.rstrip('/')}/v1/sites/{deployment_id}/"


def content_type(path: str) -> str:
    return mimetypes.guess_type(path)[0] or "application/octet-stream"


@dataclass(frozen=True)
class SiteFile:
    relative: str  # the published path
    source: Path  # the regular file whose bytes are published (a link's target for links)
    device: int
    inode: int


def _hidden(name: str, publish_dotfiles: bool) -> bool:
    if name in NEVER_PUBLISHED:
        return True
    if not name.startswith(".") or name in ALWAYS_PUBLISHED_DOT_DIRS:
        return False
    return not publish_dotfiles


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def collect_site_files(root: Path, *, publish_dotfiles: bool = False) -> list[SiteFile]:
    """Every file to publish under root, checked; SitePublishRefused names the first offender."""
    tree = Path(os.path.realpath(root))
    if not tree.is_dir():
        raise SitePublishRefused("the static output is not a directory")
    files: list[SiteFile] = []
    seen_links: dict[tuple[int, int], int] = {}
    linked: dict[tuple[int, int], tuple[str, int]] = {}

    def walk(directory: Path, relative: PurePosixPath) -> None:
        with os.scandir(directory) as entries:
            ordered = sorted(entries, key=lambda e: e.name)
        for entry in ordered:
            rel = relative / entry.name
            info = entry.stat(follow_symlinks=False)
            if stat.S_ISREG(info.st_mode):
                # Every name of an inode inside the tree counts, published or not.
                key = (info.st_dev, info.st_ino)
                seen_links[key] = seen_links.get(key, 0) + 1
            if _hidden(entry.name, publish_dotfiles):
                continue
            path = Path(entry.path)
            if stat.S_ISLNK(info.st_mode):
                files.append(_link_target(tree, path, rel, publish_dotfiles))
            elif stat.S_ISDIR(info.st_mode):
                walk(path, rel)
            elif stat.S_ISREG(info.st_mode):
                files.append(SiteFile(rel.as_posix(), path, info.st_dev, info.st_ino))
                if info.st_nlink > 1:
                    linked[(info.st_dev, info.st_ino)] = (rel.as_posix(), info.st_nlink)
            else:
                raise SitePublishRefused(
                    f"{rel.as_posix()} is {_kind(info.st_mode)}: not published"
                )

    walk(tree, PurePosixPath())
    for key, (name, links) in linked.items():
        if seen_links.get(key, 0) < links:
            raise SitePublishRefused(
                f"{name} is a hard link to a file outside the published directory: not published"
            )
    return files


def _link_target(tree: Path, link: Path, rel: PurePosixPath, publish_dotfiles: bool) -> SiteFile:
    name = rel.as_posix()
    target = Path(os.path.realpath(link))
    if not target.is_relative_to(tree):
        raise SitePublishRefused(
            f"{name} is a symbolic link to a path outside the published directory: not published"
        )
    inside = target.relative_to(tree)
    if any(_hidden(part, publish_dotfiles) for part in inside.parts):
        raise SitePublishRefused(f"{name} is a symbolic link to a hidden file: not published")
    info = target.lstat()
    if stat.S_ISDIR(info.st_mode):
        raise SitePublishRefused(
            f"{name} is a symbolic link to a directory: not published (copy the files instead)"
        )
    if not stat.S_ISREG(info.st_mode):
        raise SitePublishRefused(f"{name} points at {_kind(info.st_mode)}: not published")
    if info.st_nlink > 1:
        raise SitePublishRefused(f"{name} is a symbolic link to a hard-linked file: not published")
    return SiteFile(name, target, info.st_dev, info.st_ino)


def read_site_file(item: SiteFile) -> bytes:
    """The file's bytes, opened without following a link and checked to be the file walked."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(item.source, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise SitePublishRefused(f"{item.relative} changed into a symbolic link") from exc
        raise
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode) or (info.st_dev, info.st_ino) != (
            item.device,
            item.inode,
        ):
            raise SitePublishRefused(f"{item.relative} changed while it was published")
        return handle.read()


def publish_directory(
    store: SiteStore, root: Path, prefix: str, *, publish_dotfiles: bool = False
) -> list[str]:
    """Upload every publishable file under root to `{prefix}/{relative path}` plus a manifest.

    Keys are a pure function of deployment and path: a retry (or a concurrent duplicate)
    overwrites with the same bytes, never duplicates. The manifest is written last.
    """
    items = collect_site_files(root, publish_dotfiles=publish_dotfiles)
    names = [item.relative for item in items]
    if "index.html" not in names:
        raise FileNotFoundError("the static output has no index.html")
    for item in items:
        store.put_bytes(
            f"{prefix}/{item.relative}", read_site_file(item), content_type(item.relative)
        )
    store.put_bytes(f"{prefix}/{MANIFEST}", json.dumps(names).encode(), "application/json")
    return names


def manifest(store: SiteStore, prefix: str) -> list[str]:
    return list(json.loads(store.get_bytes(f"{prefix}/{MANIFEST}")))


def _safe_relative(name: str) -> PurePosixPath:
    pure = PurePosixPath(name)
    if pure.is_absolute() or not pure.parts or any(p in ("", ".", "..") for p in pure.parts):
        raise SitePublishRefused(f"unsafe path {name!r} in the site manifest")
    return pure


def materialize_site(store: SiteStore, prefix: str, sites_dir: Path, deployment_id: str) -> Path:
    """The deployment's directory for the proxy's file server, written from the store.

    Written in a fresh temporary directory and renamed into place: the directory either does
    not exist or is complete, a crash mid-way leaves only a temporary directory nobody serves,
    and a concurrent duplicate's rename loses harmlessly to the first one.
    """
    name = str(uuid.UUID(deployment_id))
    target = sites_dir / name
    if target.is_dir():
        return target
    sites_dir.mkdir(parents=True, exist_ok=True)
    scratch = sites_dir / f"{_TMP_PREFIX}{name}-{uuid.uuid4().hex}"
    scratch.mkdir(mode=0o755)
    try:
        for relative in manifest(store, prefix):
            path = scratch.joinpath(*_safe_relative(relative).parts)
            path.parent.mkdir(parents=True, exist_ok=True)
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
            fd = os.open(path, flags, 0o644)
            with os.fdopen(fd, "wb") as out:
                out.write(store.get_bytes(f"{prefix}/{relative}"))
        try:
            os.rename(scratch, target)
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST) or not target.is_dir():
                raise
    finally:
        if scratch.exists():
            shutil.rmtree(scratch, ignore_errors=True)
    return target


def remove_site(sites_dir: Path, deployment_id: str) -> None:
    """Delete a deployment's served directory and any temporary one a crash left behind."""
    name = str(uuid.UUID(deployment_id))
    for leftover in sites_dir.glob(f"{_TMP_PREFIX}{name}-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    target = sites_dir / name
    if target.is_dir():
        # Renamed away first: the file server never sees a half-deleted site.
        doomed = sites_dir / f"{_TMP_PREFIX}{name}-removed-{uuid.uuid4().hex}"
        with contextlib.suppress(FileNotFoundError):
            os.rename(target, doomed)
            shutil.rmtree(doomed, ignore_errors=True)


def resolve_site_key(prefix: str, path: str) -> str | None:
    """Object key for a request path (directory → index.html); None for escapes like `..`."""
    pure = PurePosixPath("/" + path)
    if ".." in pure.parts:
        return None
    relative = str(pure)[1:]
    if relative == "" or path.endswith("/"):
        relative = f"{relative.rstrip('/')}/index.html".lstrip("/")
    if relative == MANIFEST:
        return None
    return f"{prefix}/{relative}"
