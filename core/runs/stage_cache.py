"""Stage caches keyed like actions/cache: `key` = prefix + hash of the key files; restored before
the stage (the exact key, else the newest entry under each restore-key prefix in order), saved
after it succeeds unless the exact key was hit. Entries belong to one pipeline.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
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


def restore(
    store: ObjectStore,
    cache: StageCache,
    workdir: Path,
    root: Path,
    max_bytes: int = CACHE_MAX_BYTES,
    home: Path | None = None,
) -> Restored:
    """Unpack the best entry into the workspace (`~/...` paths into `home`). Blocking (run it
    in a thread)."""
    key = cache_key(cache, root)
    matched: str | None = key if store.exists(_entry(cache, key) + _ARCHIVE) else None
    exact = matched is not None
    for prefix in cache.restore_keys if matched is None else []:
        matched = _newest(store, cache, prefix)
        if matched is not None:
            break
    if matched is None:
        return Restored(key=key, matched=None, exact=False)
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "cache.tar.gz"
        with store.open(_entry(cache, matched) + _ARCHIVE) as src, archive.open("wb") as out:
            while chunk := src.read(1 << 20):
                out.write(chunk)
        size = unpack(archive, root, max_bytes, home)
    return Restored(key=key, matched=matched, exact=exact, bytes=size)


def save(
    store: ObjectStore,
    cache: StageCache,
    key: str,
    workdir: Path,
    root: Path,
    max_bytes: int = CACHE_MAX_BYTES,
    home: Path | None = None,
) -> int | None:
    """Pack the declared paths under `key`; None when none of them exists. Blocking."""
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
    return size
