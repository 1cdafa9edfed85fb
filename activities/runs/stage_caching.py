"""The stage activity's runtime steps: the cache restored before the process starts and saved
after it succeeded (a cache never fails a stage: what went wrong is a line of its log), and the
stage's services as the runner's processes."""

from __future__ import annotations

import asyncio
from pathlib import Path

from core.runs import stage_cache
from core.runs.cache_archive import CacheTooLarge, UnsafeCacheArchive
from core.runs.log_capture import LogCapture
from infra.runners.base import ServiceProcess
from infra.runners.sandbox_workspace import run_state_dir
from infra.storage import ObjectStore
from workflows.runs_models import StageSpec
from workflows.stage_runtime_models import ServiceSpec


def cache_ledger(root: Path) -> Path:
    """The run's record of the cache entries already in its checkout (beside it, the worker's)."""
    return run_state_dir(root) / "caches"


def service_processes(services: list[ServiceSpec]) -> tuple[ServiceProcess, ...]:
    return tuple(
        ServiceProcess(
            name=s.name,
            image=s.image,
            env=dict(s.environment),
            health_command=s.health_command,
            health_timeout_seconds=float(s.health_timeout_seconds),
        )
        for s in services
    )


async def restore_cache(
    store: ObjectStore,
    stage: StageSpec,
    workdir: Path,
    root: Path,
    capture: LogCapture,
    home: Path | None = None,
) -> stage_cache.Restored | None:
    """`home`: the runner's home of the stage on the host (`~/...` cache paths), if it has one."""
    if stage.cache is None:
        return None
    try:
        restored = await asyncio.to_thread(
            stage_cache.restore,
            store,
            stage.cache,
            workdir,
            root,
            home=home,
            ledger=cache_ledger(root),
        )
    except (UnsafeCacheArchive, CacheTooLarge) as exc:
        capture.note(f"[forgeline] cache not restored: {exc}")
        return None
    except Exception as exc:
        capture.note(f"[forgeline] cache not restored: {type(exc).__name__}")
        return None
    if restored.matched is None:
        capture.note(f"[forgeline] cache miss: {restored.key}")
    elif restored.in_place:
        capture.note(f"[forgeline] cache in place: {restored.matched} (this run has it already)")
    else:
        how = "hit" if restored.exact else "restored from restore key"
        capture.note(f"[forgeline] cache {how}: {restored.matched} ({restored.bytes} bytes)")
    return restored


async def save_cache(
    store: ObjectStore,
    stage: StageSpec,
    restored: stage_cache.Restored | None,
    workdir: Path,
    root: Path,
    capture: LogCapture,
    home: Path | None = None,
) -> None:
    if stage.cache is None or (restored is not None and restored.exact):
        return  # like actions/cache, an entry is never overwritten
    cache = stage.cache
    try:
        key = restored.key if restored else stage_cache.cache_key(cache, root)
        size = await asyncio.to_thread(
            stage_cache.save, store, cache, key, workdir, root, home=home, ledger=cache_ledger(root)
        )
    except CacheTooLarge as exc:
        capture.note(f"[forgeline] cache not saved: {exc}")
        return
    except Exception as exc:
        capture.note(f"[forgeline] cache not saved: {type(exc).__name__}")
        return
    if size is not None:
        capture.note(f"[forgeline] cache saved: {key} ({size} bytes)")
