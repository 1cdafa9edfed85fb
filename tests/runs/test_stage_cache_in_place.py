"""A cache entry a run restored or saved once is in place for the run's later stages
(core/runs/stage_cache.py's ledger beside the checkout): a test matrix no longer downloads and
unpacks the same node_modules once per leg over the one the install stage left."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from activities.runs.stage_caching import cache_ledger
from core.runs import stage_cache
from core.runs.cache_archive import UnsafeCacheArchive
from infra.storage import LocalObjectStore
from workflows.stage_runtime_models import StageCache


def _cache() -> StageCache:
    return StageCache(paths=["node_modules"], key_files=["package.json"], prefix="deps", scope="p1")


def _run(tmp_path: Path, name: str) -> Path:
    root = tmp_path / "workspaces" / name
    root.mkdir(parents=True)
    (root / "package.json").write_text('{"name": "x"}')
    return root


@pytest.fixture
def store(tmp_path: Path) -> LocalObjectStore:
    return LocalObjectStore(tmp_path / "objects")


def _install(root: Path, marker: str = "v1") -> None:
    (root / "node_modules" / "dep").mkdir(parents=True, exist_ok=True)
    (root / "node_modules" / "dep" / "index.js").write_text(marker)


def test_a_saved_entry_is_in_place_for_the_runs_later_stages(
    tmp_path: Path, store: LocalObjectStore
) -> None:
    root = _run(tmp_path, "run-1")
    ledger = cache_ledger(root)
    assert not ledger.is_relative_to(root)  # beside the checkout, never in it
    first = stage_cache.restore(store, _cache(), root, root, ledger=ledger)
    assert first.matched is None
    _install(root)
    stage_cache.save(store, _cache(), first.key, root, root, ledger=ledger)
    later = stage_cache.restore(store, _cache(), root, root, ledger=ledger)
    assert later.exact and later.in_place and later.bytes == 0
    # Another run (its own checkout) unpacks it, once.
    other = _run(tmp_path, "run-2")
    hit = stage_cache.restore(store, _cache(), other, other, ledger=cache_ledger(other))
    assert hit.exact and not hit.in_place and hit.bytes > 0
    assert (other / "node_modules" / "dep" / "index.js").read_text() == "v1"
    again = stage_cache.restore(store, _cache(), other, other, ledger=cache_ledger(other))
    assert again.in_place


def test_without_a_ledger_every_restore_unpacks(tmp_path: Path, store: LocalObjectStore) -> None:
    root = _run(tmp_path, "run-1")
    _install(root)
    key = stage_cache.cache_key(_cache(), root)
    stage_cache.save(store, _cache(), key, root, root)
    assert stage_cache.restore(store, _cache(), root, root).bytes > 0
    assert stage_cache.restore(store, _cache(), root, root).bytes > 0


def test_concurrent_legs_unpack_an_entry_once(tmp_path: Path, store: LocalObjectStore) -> None:
    seed = _run(tmp_path, "seed")
    _install(seed)
    stage_cache.save(store, _cache(), stage_cache.cache_key(_cache(), seed), seed, seed)
    root = _run(tmp_path, "run-1")
    unpacked: list[int] = []
    lock = threading.Lock()
    real = stage_cache._unpack_entry

    def counting(*args: object, **kwargs: object) -> int:
        with lock:
            unpacked.append(1)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    stage_cache._unpack_entry = counting
    try:
        with ThreadPoolExecutor(6) as pool:
            results = list(
                pool.map(
                    lambda _: stage_cache.restore(
                        store, _cache(), root, root, ledger=cache_ledger(root)
                    ),
                    range(6),
                )
            )
    finally:
        stage_cache._unpack_entry = real
    assert unpacked == [1]
    assert sum(1 for r in results if r.in_place) == 5


def test_a_restore_that_fails_midway_leaves_the_entry_unrecorded(
    tmp_path: Path, store: LocalObjectStore
) -> None:
    seed = _run(tmp_path, "seed")
    _install(seed)
    key = stage_cache.cache_key(_cache(), seed)
    stage_cache.save(store, _cache(), key, seed, seed)
    root = _run(tmp_path, "run-1")
    real = stage_cache._unpack_entry

    def crash(*args: object, **kwargs: object) -> int:
        raise OSError("the worker's disk filled up midway")

    stage_cache._unpack_entry = crash
    try:
        with pytest.raises(OSError):
            stage_cache.restore(store, _cache(), root, root, ledger=cache_ledger(root))
    finally:
        stage_cache._unpack_entry = real
    retry = stage_cache.restore(store, _cache(), root, root, ledger=cache_ledger(root))
    assert not retry.in_place and retry.bytes > 0


def test_a_hostile_entry_is_refused_and_never_recorded(
    tmp_path: Path, store: LocalObjectStore
) -> None:
    import io
    import tarfile

    root = _run(tmp_path, "run-1")
    key = stage_cache.cache_key(_cache(), root)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("../escape")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    store.put_bytes(f"caches/p1/{key}.tar.gz", buf.getvalue(), "application/gzip")
    ledger = cache_ledger(root)
    for _ in range(2):  # refused each time: a refusal never counts as in place
        with pytest.raises(UnsafeCacheArchive):
            stage_cache.restore(store, _cache(), root, root, ledger=ledger)
    assert not (tmp_path / "workspaces" / "escape").exists()


def test_a_build_cannot_plant_the_ledger(tmp_path: Path, store: LocalObjectStore) -> None:
    """The ledger is the worker's, outside the checkout and the home a build writes to: files
    a build leaves in its checkout named like ledger entries change nothing."""
    seed = _run(tmp_path, "seed")
    _install(seed)
    key = stage_cache.cache_key(_cache(), seed)
    stage_cache.save(store, _cache(), key, seed, seed)
    root = _run(tmp_path, "run-1")
    planted = root / "caches"
    planted.mkdir()
    (planted / stage_cache._ledger_name(_cache(), key)).touch()
    restored = stage_cache.restore(store, _cache(), root, root, ledger=cache_ledger(root))
    assert not restored.in_place and restored.bytes > 0
