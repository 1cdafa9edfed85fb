"""The stack's child processes (control worker, build host, API, proxy): started in their own
session, stopped with the stack, and the build host started without any key."""

from __future__ import annotations

import ctypes
import logging
import signal
import subprocess
import sys
from pathlib import Path

log = logging.getLogger("forgeline.stack")
ROOT = Path(__file__).resolve().parents[2]


# What a build host's environment never holds (it runs hostile code): the Fernet keys, payment and
# LLM keys, the API key of the CLI.
BUILD_HOST_WITHHELD = ("ENCRYPTION_KEY", "STRIPE", "ANTHROPIC", "FORGELINE_API_KEY")


def build_host_environment(env: dict[str, str], build_database_url: str | None) -> dict[str, str]:
    """The control worker's environment without any key, and with the build database role."""
    kept = {
        name: value
        for name, value in env.items()
        if not any(part in name.upper() for part in BUILD_HOST_WITHHELD)
    }
    if build_database_url:
        kept.pop("DATABASE_URL", None)
        kept["FORGELINE_DATABASE_URL"] = build_database_url
    kept["FORGELINE_BUILD_HOST"] = "true"
    return kept


def _terminate_with_parent() -> None:
    """In the child: SIGTERM when the stack dies, even by SIGKILL (Linux prctl)."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class ChildProcesses:
    """worker.py and uvicorn, each in its own session so Ctrl-C reaches the stack first."""

    def __init__(self) -> None:
        self.children: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, args: list[str], env: dict[str, str]) -> None:
        self.children[name] = subprocess.Popen(
            args,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_terminate_with_parent,
        )

    def exited(self) -> list[tuple[str, int]]:
        return [(n, p.returncode) for n, p in self.children.items() if p.poll() is not None]

    def stop(self, timeout: float) -> None:
        for process in self.children.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for name, process in self.children.items():
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in %ss; killing it", name, timeout)
                process.kill()
                process.wait()
