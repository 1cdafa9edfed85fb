"""Whether the build's npm registry signs what it serves (npm's `dist.signatures`). A mirror
that strips them makes corepack refuse every pnpm or yarn it downloads ("cannot verify"), on
every pnpm or yarn repository's first run. The runner asks once per registry (corepack's own
packument, the one corepack reads) and, when the registry signs nothing, its Node stages start
with corepack's signature check off (COREPACK_INTEGRITY_KEYS=0, unless the stage sets it):
downloads are still checked against the registry's integrity hashes, and the stage's log says
so. A registry that cannot be asked changes nothing, and a stage without network never asks.
"""

from __future__ import annotations

import threading
from typing import Any

from infra.runners.node_toolchain import NodeToolchainError, NodeToolchains

# Versions of the packument looked at (the newest ones the registry lists).
SAMPLE = 5
_answers: dict[str, bool | None] = {}
_lock = threading.Lock()


def signs(packument: Any) -> bool | None:
    """True when the packument's newest versions carry signatures, False when none does, None
    when it holds no versions with a dist to tell."""
    versions = packument.get("versions") if isinstance(packument, dict) else None
    if not isinstance(versions, dict):
        return None
    dists = [
        meta["dist"]
        for meta in list(versions.values())[-SAMPLE:]
        if isinstance(meta, dict) and isinstance(meta.get("dist"), dict)
    ]
    if not dists:
        return None
    return any(isinstance(d.get("signatures"), list) and d["signatures"] for d in dists)


def registry_unsigned(toolchains: NodeToolchains) -> bool:
    """Whether the toolchains' registry serves no signatures (asked once; blocking)."""
    with _lock:
        if toolchains.registry in _answers:
            return _answers[toolchains.registry] is False
    try:
        answer = signs(toolchains._packument("corepack", abbreviated=True))
    except NodeToolchainError:
        answer = None  # cannot tell: nothing changes (not asked again by this process)
    with _lock:
        _answers[toolchains.registry] = answer
    return answer is False


UNSIGNED_SETUP = '[ -z "${COREPACK_INTEGRITY_KEYS+x}" ] && export COREPACK_INTEGRITY_KEYS=0\n'


def unsigned_note(registry: str) -> str:
    return (
        f"forgeline: the registry {registry} serves no package signatures: corepack's signature "
        "check is off (COREPACK_INTEGRITY_KEYS=0); its downloads are still checked against the "
        "registry's integrity hashes\n"
    )
