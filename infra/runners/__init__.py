"""Stage runners behind one interface; `create_runner` picks the sandbox, Docker or (development
only, by name) unisolated local processes."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from forgeline.settings import Settings
from infra.runners.base import Runner, StageOutcome, StageProcess, process_name, process_prefix

if TYPE_CHECKING:
    from infra.runners.sandbox_runner import SandboxConfig

# Image for stages that name none (Docker runner only).
DEFAULT_STAGE_IMAGE = "debian:bookworm-slim"

log = logging.getLogger("forgeline.runners")

__all__ = [
    "Runner",
    "RunnerUnavailable",
    "StageOutcome",
    "StageProcess",
    "create_runner",
    "process_name",
    "process_prefix",
]


class RunnerUnavailable(RuntimeError):
    """No isolated runner works on this host, and the unisolated one was not asked for."""


def sandbox_config(settings: Settings) -> SandboxConfig:
    from infra.runners.sandbox_runner import SandboxConfig

    return SandboxConfig(
        state_dir=settings.data_dir / "runner",
        uid=settings.build_uid,
        gid=settings.build_gid,
        memory_mb=settings.build_memory_mb,
        pids_limit=settings.build_pids_limit,
        disk_mb=settings.build_disk_mb,
        cpus=settings.build_cpus,
        toolchain=tuple(settings.build_toolchain_paths),
        ca_bundle=settings.build_ca_bundle,
        pass_host_ca=settings.build_pass_host_ca,
        egress_allow=tuple(settings.build_egress_allow),
        upstream_proxy=settings.build_proxy,
        pool_size=settings.build_sandbox_pool,
        pool_max=settings.build_sandbox_pool_max,
        python_roots=None
        if settings.build_python_roots is None
        else tuple(settings.build_python_roots),
        python_index_url=settings.build_python_index_url,
        node_registry_url=settings.build_node_registry_url,
    )


def create_runner(settings: Settings) -> Runner:
    """`container_runner` = sandbox | docker | unsafe-local | auto (the sandbox when it works
    here, else Docker when an engine answers; never the unisolated runner)."""
    from infra.containers import ContainerEngine, EngineUnavailable
    from infra.runners.docker_runner import DockerRunner
    from infra.runners.egress_proxy import EgressPolicy, EgressProxy
    from infra.runners.local_runner import LocalProcessRunner
    from infra.runners.sandbox_runner import SandboxRunner, sandbox_works

    choice = settings.container_runner
    if choice == "unsafe-local":
        if settings.environment == "production":
            raise RunnerUnavailable("the unisolated local runner is refused in production")
        log.warning(
            "FORGELINE_CONTAINER_RUNNER=unsafe-local: builds run UNISOLATED with this worker's "
            "identity, files and network (development only)"
        )
        return LocalProcessRunner(settings.data_dir / "runner")
    config = sandbox_config(settings)
    if choice == "sandbox":
        return SandboxRunner(config)
    why_not_sandbox = sandbox_works(config) if choice == "auto" else "not chosen"
    if why_not_sandbox is None:
        return SandboxRunner(config)
    try:
        engine = ContainerEngine.connect(settings)
    except EngineUnavailable as exc:
        raise RunnerUnavailable(
            f"no isolated stage runner works here: sandbox: {why_not_sandbox}; docker: {exc}. "
            "Run scripts/ensure-sandbox.sh, or set FORGELINE_CONTAINER_RUNNER=unsafe-local "
            "for development only"
        ) from exc
    local_engine = not settings.docker_host or settings.docker_host.startswith("unix://")
    egress = EgressProxy(
        EgressPolicy.from_strings(settings.build_egress_allow), settings.build_proxy
    )
    return DockerRunner(
        engine,
        settings.default_stage_image,
        settings.build_uid,
        settings.build_gid,
        egress=egress if local_engine else None,
        state_dir=settings.data_dir / "runner" if local_engine else None,
    )
