"""The API server process of `make run` and the image: uvicorn serving `api.app:create_app` with
`FORGELINE_API_WORKERS` worker processes on one port (default: one per CPU core available).

Several workers keep the API answering while one of them is busy (a flood of log lines followed
over SSE, a large download): every piece of state they must agree on (API-key rate limits,
sign-in throttles, build slots) is in PostgreSQL, never in a worker's memory.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import tempfile
from pathlib import Path

import uvicorn

from forgeline.settings import Settings, get_settings

CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def cgroup_cpu_limit(cpu_max: Path = CGROUP_CPU_MAX) -> int | None:
    """Whole CPUs a cgroup v2 quota allows this process (`quota period` in cpu.max), rounded up;
    None without a quota."""
    try:
        quota, period = cpu_max.read_text().split()[:2]
        if quota == "max":
            return None
        return max(1, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):
        return None


def available_cores() -> int:
    """CPU cores this process may use: its affinity, lowered by a container's CPU quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    limit = cgroup_cpu_limit()
    return max(1, min(cores, limit) if limit else cores)


def api_workers(settings: Settings) -> int:
    return settings.api_workers or available_cores()


# prometheus-client's multiprocess mode: each worker writes its samples here, a scrape sums them.
MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"


def prepare_metrics_dir(workers: int) -> Path | None:
    """A fresh, empty directory for the workers' metric files when there are several workers
    (stale files of an earlier server would be summed in); None with one worker."""
    if workers <= 1 or os.environ.get(MULTIPROC_DIR_ENV):
        return None
    path = Path(tempfile.mkdtemp(prefix="forgeline-api-metrics-"))
    os.environ[MULTIPROC_DIR_ENV] = str(path)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m forgeline.api_server")
    parser.add_argument("--host", help="bind address (default FORGELINE_API_HOST)")
    parser.add_argument("--port", type=int, help="port (default FORGELINE_API_PORT)")
    parser.add_argument("--no-access-log", action="store_true")
    args = parser.parse_args(argv)
    settings = get_settings()
    workers = api_workers(settings)
    metrics_dir = prepare_metrics_dir(workers)
    try:
        _serve(settings, args, workers)
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def _serve(settings: Settings, args: argparse.Namespace, workers: int) -> None:
    uvicorn.run(
        "api.app:create_app",
        factory=True,
        host=args.host or settings.api_host,
        port=args.port or settings.api_port,
        workers=workers,
        # X-Forwarded-* are trusted from FORWARDED_ALLOW_IPS only (uvicorn's default: loopback).
        proxy_headers=True,
        access_log=not args.no_access_log,
    )


if __name__ == "__main__":
    main()
