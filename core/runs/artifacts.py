"""Artifacts: files a stage declares (globs relative to the workspace) go to the object store.

Declared paths that resolve outside the workspace (`../../etc/passwd`, symlinks out) are refused,
and what is read is checked again on the open file (a concurrent stage of the same run may swap a
path for a symlink between the check and the read); names are sanitised into run-scoped keys
`runs/{run}/artifacts/{stage}/{attempt}/{name}`. At most `max_files` files and `max_bytes` bytes
are uploaded per stage attempt (in path order); what is left out is reported, never dropped
silently.
"""

from __future__ import annotations

import contextlib
import hashlib
import mimetypes
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from infra.storage import ObjectStore, join_key, sanitize_key

MAX_ARTIFACT_FILES = 1000
MAX_ARTIFACT_BYTES = 1024 * 1024 * 1024


@dataclass(frozen=True)
class CollectedFile:
    name: str
    path: Path
    root: Path | None = None


class ArtifactMoved(RuntimeError):
    """The file changed into something outside the workspace after it was collected."""


@contextlib.contextmanager
def opened_inside(file: CollectedFile) -> Iterator[tuple[Path, int]]:
    """The collected file, opened without following a final symlink and verified on the open
    descriptor to be a regular file inside the workspace: (a path to that descriptor, size)."""
    fd = os.open(file.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        info = os.fstat(fd)
        real = Path(os.readlink(f"/proc/self/fd/{fd}"))
        root = (file.root or file.path.parent).resolve()
        if not stat.S_ISREG(info.st_mode) or not real.is_relative_to(root):
            raise ArtifactMoved(f"{file.name}: no longer a file inside the workspace")
        yield Path(f"/proc/self/fd/{fd}"), info.st_size
    finally:
        os.close(fd)


@dataclass(frozen=True)
class UploadedArtifact:
    name: str
    object_key: str
    size_bytes: int
    sha256: str
    content_type: str | None


def artifact_prefix(run_id: str, stage: str, attempt: int) -> str:
    return join_key("runs", run_id, "artifacts", stage, str(attempt))


@dataclass(frozen=True)
class Collected:
    files: list[CollectedFile]
    # Paths refused (outside the workspace, links out of it).
    refused: list[str]
    # Set when more files matched than the limit allows: what was left out, in words.
    over_limit: str | None = None


def collect(workspace: Path, patterns: list[str]) -> tuple[list[CollectedFile], list[str]]:
    """Files matching the declared patterns inside the workspace, and the refusals."""
    found = collect_limited(workspace, patterns, MAX_ARTIFACT_FILES)
    over = [found.over_limit] if found.over_limit else []
    return found.files, [*found.refused, *over]


def collect_limited(workspace: Path, patterns: list[str], max_files: int) -> Collected:
    """Files matching the declared patterns inside the workspace, at most `max_files`."""
    root = workspace.resolve()
    found: dict[str, CollectedFile] = {}
    refused: list[str] = []
    for pattern in patterns:
        candidate = Path(pattern)
        if candidate.is_absolute() or ".." in candidate.parts:
            refused.append(f"{pattern}: outside the workspace")
            continue
        for match in sorted(root.glob(pattern)):
            paths = sorted(match.rglob("*")) if match.is_dir() else [match]
            for path in paths:
                resolved = path.resolve()
                if not resolved.is_relative_to(root):
                    refused.append(f"{path.relative_to(root)}: links outside the workspace")
                    continue
                if not resolved.is_file():
                    continue
                try:
                    name = sanitize_key(path.relative_to(root).as_posix())
                except ValueError:
                    continue
                if name not in found and len(found) >= max_files:
                    return Collected(
                        list(found.values()),
                        refused,
                        f"more than {max_files} files matched the artifact paths: the first "
                        f"{max_files} were uploaded, the others (from {name}) were not "
                        "(limit: FORGELINE_ARTIFACT_MAX_FILES)",
                    )
                found.setdefault(name, CollectedFile(name=name, path=resolved, root=root))
    return Collected(list(found.values()), refused)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def upload(
    store: ObjectStore, prefix: str, files: list[CollectedFile], max_bytes: int | None = None
) -> list[UploadedArtifact]:
    return upload_within(store, prefix, files, max_bytes)[0]


def upload_within(
    store: ObjectStore, prefix: str, files: list[CollectedFile], max_bytes: int | None
) -> tuple[list[UploadedArtifact], str | None]:
    """Uploads in order while the total stays within `max_bytes`; files that would take it
    past are not uploaded, and the second value says so."""
    uploaded: list[UploadedArtifact] = []
    total = 0
    left_out: list[str] = []
    for file in files:
        content_type = mimetypes.guess_type(file.name)[0]
        try:
            with opened_inside(file) as (path, size):
                if max_bytes is not None and total + size > max_bytes:
                    left_out.append(file.name)
                    continue
                total += size
                key = store.put_file(join_key(prefix, file.name), path, content_type)
                digest = _sha256(path)
        except (ArtifactMoved, OSError):
            continue  # replaced by a link or removed since it was collected: not uploaded
        uploaded.append(
            UploadedArtifact(
                name=file.name,
                object_key=key,
                size_bytes=size,
                sha256=digest,
                content_type=content_type,
            )
        )
    note = None
    if left_out:
        note = (
            f"{len(left_out)} artifact files (from {left_out[0]}) were not uploaded: together "
            f"they would exceed the limit of {max_bytes} bytes per stage "
            "(limit: FORGELINE_ARTIFACT_MAX_BYTES)"
        )
    return uploaded, note


def restore(store: ObjectStore, object_key: str, workspace: Path, name: str) -> None:
    """Put a reused stage's artifact back where the stage left it."""
    target = (workspace / sanitize_key(name)).resolve()
    if not target.is_relative_to(workspace.resolve()):
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    with store.open(object_key) as src, target.open("wb") as out:
        while block := src.read(1 << 20):
            out.write(block)
