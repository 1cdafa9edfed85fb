"""Stage caches keyed like actions/cache: `key` = prefix + hash of the key files; restored before
the stage (the exact key, else the newest entry under each restore-key prefix in order), saved
after it succeeds unless the exact key was hit. Entries belong to one pipeline.

A run's stages share one checkout and home, so an entry restored or saved once in a run is
already in place for its later stages: a ledger beside the checkout (the worker's, never the
build's) names those entries, and a stage whose entry is in it skips the download and the
extraction (before, each leg of a test matrix unpacked the same `node_modules` over the one
the install stage had left). Stages restoring at once take turns per entry.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from core.runs.cache_archive import CACHE_MAX_BYTES, pack, resolve_cache_paths, unpack
from infra.storage import ObjectNotFound, ObjectStore, join_key
from workflows.stage_runtime_models import StageCache

# At most this many entries under one restore prefix are compared for the newest.
RESTORE_CANDIDATES = 100
_ARCHIVE = ".tar.gz"
_META = ".json"


def cache_key(cache: StageCache, root: Path) -> str:
    """The exact key: the prefix, then a hash of the key files' contents. Key files are named
    from the repository's root whatever the stage's directory, as `hashFiles()` names them in
    the exported workflows (missing files count as absent; a file outside the workspace is
    never read)."""
    digest = hashlib.sha256()
    root = root.resolve()
    for name in cache.key_files:
        path = (root / name).resolve()
        digest.update(name.encode() + b"\0")
        if path.is_relative_to(root) and path.is_file():
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return f"{cache.prefix}-{digest.hexdigest()[:32]}"


def _entry(cache: StageCache, key: str) -> str:
    return join_key("caches", cache.scope, key)


@dataclass(frozen=True)
class Restored:
    key: str
    # The entry restored: the exact key, a restore-key match, or None (a miss).
    matched: str | None
    exact: bool
    bytes: int = 0
    # The run had restored or saved the entry already: nothing was unpacked.
    in_place: bool = False


def _newest(store: ObjectStore, cache: StageCache, prefix: str) -> str | None:
    best: tuple[float, str] | None = None
    listed = [k for k in store.list(join_key("caches", cache.scope)) if k.endswith(_META)]
    names = [k.rsplit("/", 1)[-1][: -len(_META)] for k in listed]
    for name in [n for n in names if n.startswith(prefix)][:RESTORE_CANDIDATES]:
        try:
            saved = float(json.loads(store.get_bytes(_entry(cache, name) + _META))["saved_at"])
        except (ObjectNotFound, ValueError, KeyError, TypeError):
            continue
        if best is None or saved > best[0]:
            best = (saved, name)
    return best[1] if best else None


def _ledger_name(cache: StageCache, key: str) -> str:
    return hashlib.sha256(_entry(cache, key).encode()).hexdigest()[:40]


def in_place(ledger: Path | None, cache: StageCache, key: str) -> bool:
    """Whether this run already restored or saved the entry `key` (its files are in place)."""
    return ledger is not None and (ledger / _ledger_name(cache, key)).is_file()


def mark_in_place(ledger: Path | None, cache: StageCache, key: str) -> None:
    if ledger is None:
        return
    ledger.mkdir(mode=0o700, parents=True, exist_ok=True)
    (ledger / _ledger_name(cache, key)).touch()


@contextlib.contextmanager
def _turn(ledger: Path | None, cache: StageCache, key: str) -> Iterator[None]:
    """One stage of the run at a time restores the entry `key` (the others wait, then find it
    in place)."""
    if ledger is None:
        yield
        return
    ledger.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(ledger / f"{_ledger_name(cache, key)}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def restore(
    store: ObjectStore,
    cache: StageCache,
    workdir: Path,
    root: Path,
    max_bytes: int = CACHE_MAX_BYTES,
    home: Path | None = None,
    ledger: Path | None = None,
) -> Restored:
    """Unpack the best entry into the workspace (`~/...` paths into `home`), unless the run's
    `ledger` says it is in place already (Restored.bytes 0, Restored.in_place). Blocking (run
    it in a thread)."""
    key = cache_key(cache, root)
    with _turn(ledger, cache, key):
        if in_place(ledger, cache, key):
            return Restored(key=key, matched=key, exact=True, in_place=True)
        matched: str | None = key if store.exists(_entry(cache, key) + _ARCHIVE) else None
        exact = matched is not None
        for prefix in cache.restore_keys if matched is None else []:
            matched = _newest(store, cache, prefix)
            if matched is not None:
                break
        if matched is None:
            return Restored(key=key, matched=None, exact=False)
        if in_place(ledger, cache, matched):
            return Restored(key=key, matched=matched, exact=exact, in_place=True)
        restored = _unpack_entry(store, cache, matched, root, max_bytes, home)
        mark_in_place(ledger, cache, matched)
    return Restored(key=key, matched=matched, exact=exact, bytes=restored)


def _unpack_entry(
    store: ObjectStore,
    cache: StageCache,
    matched: str,
    root: Path,
    max_bytes: int,
    home: Path | None,
) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "cache.tar.gz"
        with store.open(_entry(cache, matched) + _ARCHIVE) as src, archive.open("wb") as out:
            while chunk := src.read(1 << 20):
                out.write(chunk)
        return unpack(archive, root, max_bytes, home)


def save(
    store: ObjectStore,
    cache: StageCache,
    key: str,
    workdir: Path,
    root: Path,
    max_bytes: int = CACHE_MAX_BYTES,
    home: Path | None = None,
    ledger: Path | None = None,
) -> int | None:
    """Pack the declared paths under `key` (then in place for the run's later stages); None
    when none of them exists. Blocking."""
    sources = resolve_cache_paths(root, workdir, cache.paths, home)
    if not sources:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "cache.tar.gz"
        size = pack(root, sources, archive, max_bytes, home)
        store.put_file(_entry(cache, key) + _ARCHIVE, archive, "application/gzip")
    meta = {"saved_at": time.time(), "bytes": size, "paths": cache.paths}
    # Written last: an entry without its metadata is never a restore-key candidate.
    store.put_bytes(_entry(cache, key) + _META, json.dumps(meta).encode(), "application/json")
    mark_in_place(ledger, cache, key)
    return size
