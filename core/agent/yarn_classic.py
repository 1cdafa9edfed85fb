"""Yarn 1 for a repository that declares no package manager release. Node's Docker images add a
Yarn 1 beside node; the official Node.js builds (what a sandboxed stage or a setup-node host
has) ship corepack and no yarn. A stage keeps the image's yarn when there is one, else corepack
provides it (its default yarn is the 1.x line, which reads a v1 lockfile)."""

from __future__ import annotations

from core.agent.images import COREPACK_ENABLE

YARN_CLASSIC = f"(command -v yarn >/dev/null || {COREPACK_ENABLE})"


def with_yarn(command: str) -> str:
    """`command` (which calls yarn) run where yarn exists."""
    return f"{YARN_CLASSIC} && {command}"
