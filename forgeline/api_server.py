"""The API server process of `make run` and the image: uvicorn serving `api.app:create_app` with
`FORGELINE_API_WORKERS` worker processes on one port (default: one per CPU core available).

Several workers keep the API answering while one of them is busy (a flood of log lines followed
over SSE, a large download): every piece of state they must agree on (API-key rate limits,
sign-in throttles, build slots) is in PostgreSQL, never in a worker's memory.
"""

from __future__ import annotations

import argparse
import os

import uvicorn

from forgeline.settings import Settings, get_settings


def available_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def api_workers(settings: Settings) -> int:
    return settings.api_workers or available_cores()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m forgeline.api_server")
    parser.add_argument("--host", help="bind address (default FORGELINE_API_HOST)")
    parser.add_argument("--port", type=int, help="port (default FORGELINE_API_PORT)")
    parser.add_argument("--no-access-log", action="store_true")
    args = parser.parse_args(argv)
    settings = get_settings()
    uvicorn.run(
        "api.app:create_app",
        factory=True,
        host=args.host or settings.api_host,
        port=args.port or settings.api_port,
        workers=api_workers(settings),
        # X-Forwarded-* are trusted from FORWARDED_ALLOW_IPS only (uvicorn's default: loopback).
        proxy_headers=True,
        access_log=not args.no_access_log,
    )


if __name__ == "__main__":
    main()
