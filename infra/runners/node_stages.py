"""A Node.js stage in the sandbox: the Node its image stands for (infra/runners/
node_toolchain.py), mounted read-only with its bin first on PATH, so node, npm, npx and corepack
are that version. What a stage installs "globally" (`npm install -g`, `corepack enable`) lands
in a directory of the stage's own in the run's home, never in the shared toolchain. A version
that cannot be provided fails the stage with the reason, never silently the host's Node."""

from __future__ import annotations

import asyncio
import re
import shlex
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

from infra.runners.base import OutputCallback, StageOutcome, StageProcess
from infra.runners.node_toolchain import (
    NODE_TOOLCHAINS,
    NodeRequest,
    NodeToolchain,
    NodeToolchainError,
    NodeToolchains,
    requested_node,
)
from infra.runners.registry_signatures import UNSIGNED_SETUP, registry_unsigned, unsigned_note
from infra.runners.sandbox_args import SandboxConfig

# The toolchains' directory inside every sandbox (the state directory may lie under /tmp).
NODE_TOOLCHAINS_MOUNT = "/opt/forgeline/node"
# Per stage attempt, under the run's home: bin/ (corepack's shims, npm's global commands).
STAGE_DIR = ".cache/forgeline/node"
# A stage that calls a package manager corepack provides (or corepack itself): only then is the
# registry asked whether it signs what it serves.
COREPACK_COMMANDS = re.compile(r"(?<![\w.-])(?:corepack|pnpm|pnpx|yarn|yarnpkg)(?![\w.-])")
# Exit code of a stage whose Node.js could not be provided (the runner's "could not run").
SETUP_EXIT = 125
NODE_MARKER = "forgeline: Node.js:"
# `corepack enable` writes its shims beside the corepack it runs (the read-only toolchain):
# this stand-in, first on PATH, sends them to the stage's own bin/ unless told where.
COREPACK_SHIM = r"""case "$1" in
enable|disable)
  for fl_arg; do
    case "$fl_arg" in --install-directory|--install-directory=*) exec "$FL_COREPACK" "$@";; esac
  done
  fl_cmd=$1; shift
  exec "$FL_COREPACK" "$fl_cmd" --install-directory "${0%/*}" "$@";;
esac
exec "$FL_COREPACK" "$@"
"""

# The checkout and the home are separate mounts: pnpm, finding its default store on another
# device than the project, makes one at the root of the project's mount (/workspace/.pnpm-store,
# which `prettier --check .` then lints). Named, the home's store is used as is (files copied,
# never linked, across the mounts). A stage that names one keeps it.
PNPM_STORE_SETUP = (
    'if [ -z "${npm_config_store_dir+x}${NPM_CONFIG_STORE_DIR+x}${pnpm_config_store_dir+x}" ]; '
    'then export npm_config_store_dir="$HOME/.local/share/pnpm/store" '
    'pnpm_config_store_dir="$HOME/.local/share/pnpm/store"; fi\n'
)


@dataclass(frozen=True)
class NodeStage:
    """A stage rewritten to start with its Node first on PATH, with what its log says first."""

    process: StageProcess
    opening: bytes
    notes: tuple[str, ...] = ()


def sandbox_toolchains(config: SandboxConfig) -> NodeToolchains:
    """The build host's toolchains, under the runner's state directory."""
    root = config.state_dir / NODE_TOOLCHAINS
    return NodeToolchains(root, config.node_registry_url, NODE_TOOLCHAINS_MOUNT)


def node_mount_args(toolchains: NodeToolchains) -> list[str]:
    """bwrap arguments binding the toolchains read-only at NODE_TOOLCHAINS_MOUNT: versions
    installed later appear in sandboxes already started (the directory, not each version)."""
    toolchains.root.mkdir(parents=True, exist_ok=True)
    toolchains.root.chmod(0o755)
    args = ["--perms", "0755", "--dir", "/opt", "--perms", "0755", "--dir", "/opt/forgeline"]
    return [*args, "--ro-bind", str(toolchains.root), NODE_TOOLCHAINS_MOUNT]


def setup_script(
    toolchain: NodeToolchain, name: str, script: str, unsigned_registry: bool = False
) -> str:
    """The stage's own bin/ made (with the corepack stand-in when the toolchain has corepack),
    the toolchain and it first on PATH, then the stage's script in a shell of its own."""
    q = shlex.quote
    corepack = f"{toolchain.bin_dir}/corepack"
    return (
        f'fl_node="$HOME"/{q(f"{STAGE_DIR}/{name}")}\n'
        # Whatever an earlier process of this name left goes first.
        'rm -rf "$fl_node" && mkdir -p "$fl_node/bin" || exit 125\n'
        f"if [ -x {q(corepack)} ]; then\n"
        f"  {{ echo '#!/bin/sh'; echo FL_COREPACK={q(q(corepack))}; "
        "cat <<'FORGELINE_COREPACK'\n"
        f"{COREPACK_SHIM}FORGELINE_COREPACK\n"
        '  } > "$fl_node/bin/corepack" && chmod 755 "$fl_node/bin/corepack" || exit 125\n'
        "fi\n"
        f'export PATH="$fl_node/bin:"{q(toolchain.bin_dir)}":$PATH" NPM_CONFIG_PREFIX="$fl_node"\n'
        # Node's own fetch (corepack 0.35+, undici) takes the egress proxy only when told to.
        '[ -n "${HTTPS_PROXY:-}" ] && export NODE_USE_ENV_PROXY="${NODE_USE_ENV_PROXY:-1}"\n'
        + (UNSIGNED_SETUP if unsigned_registry else "")
        + PNPM_STORE_SETUP
        + "unset fl_node\n"
        f"exec /bin/sh -c {q(script)}\n"
    )


def prepare_node_stage(
    process: StageProcess,
    request: NodeRequest,
    toolchain: NodeToolchain,
    registry: str,
    unsigned_registry: bool = False,
) -> NodeStage:
    where = f"{toolchain.bin_dir} first on PATH" + (
        f", downloaded from {registry}" if toolchain.downloaded else ""
    )
    warning = f"forgeline: warning: {toolchain.note}\n" if toolchain.note else ""
    opening = f"{warning}forgeline: Node.js {toolchain.version} for {request.source} ({where})\n"
    if toolchain.host:  # the host's own Node, as every stage had before: nothing to say
        opening = warning
    if unsigned_registry:
        opening += unsigned_note(registry)
    script = setup_script(toolchain, process.name, process.script, unsigned_registry)
    notes = (toolchain.note,) if toolchain.note else ()
    return NodeStage(replace(process, script=script), opening.encode(), notes)


async def run_node_aware(
    process: StageProcess,
    on_output: OutputCallback,
    toolchains: NodeToolchains,
    run: Callable[[StageProcess, OutputCallback], Awaitable[StageOutcome]],
) -> StageOutcome:
    """`run` the stage; a Node.js stage with its image's Node, or failed with the reason."""
    request = requested_node(process.image)
    if request is None:
        return await run(process, on_output)
    try:
        toolchain = await asyncio.to_thread(toolchains.provide, request)
    except (NodeToolchainError, OSError) as exc:
        message = str(exc)
        if not isinstance(exc, NodeToolchainError):
            message = f"{request.source} asks for {request.wanted}, not installed: {exc}"
        await on_output(f"{NODE_MARKER} {message}: the stage does not run\n".encode())
        return StageOutcome(exit_code=SETUP_EXIT, notes=(message,))
    unsigned = (
        process.network
        and COREPACK_COMMANDS.search(process.script) is not None
        and await asyncio.to_thread(registry_unsigned, toolchains)
    )
    stage = prepare_node_stage(process, request, toolchain, toolchains.registry, unsigned)
    await on_output(stage.opening)
    outcome = await run(stage.process, on_output)
    return replace(outcome, notes=(*outcome.notes, *stage.notes))


def wrap_runner(
    toolchains: NodeToolchains,
    run: Callable[[StageProcess, OutputCallback], Awaitable[StageOutcome]],
) -> Callable[[StageProcess, OutputCallback], Awaitable[StageOutcome]]:
    """`run` made Node-aware (for a runner that hands its stage function to another layer)."""

    async def node_aware(process: StageProcess, on_output: OutputCallback) -> StageOutcome:
        return await run_node_aware(process, on_output, toolchains, run)

    return node_aware
