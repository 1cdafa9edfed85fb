"""A stage's service containers on the Docker runner: a network of the attempt's own (internal:
no route out), one container per service answering to its service name there, each waited for
until healthy. Named and labelled after the attempt, so the next attempt of the stage reaps what a
crashed one left (`remove_stale` by name prefix), and labelled with the stage's deadline, past
which the build host's sweep removes them when no attempt came (`infra/runners/janitor.py`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from docker.models.containers import Container

from infra.containers import ContainerEngine, ContainerSpec
from infra.runners.base import ServiceProcess, StageProcess

HEALTH_POLL_SECONDS = 0.5
SERVICE_PIDS_LIMIT = 1024


class ServiceFailed(RuntimeError):
    """A service container did not start or never became healthy."""


def network_name(process: StageProcess) -> str:
    return f"{process.name}-net"


def service_container_name(process: StageProcess, service: ServiceProcess) -> str:
    return f"{process.name}-svc-{service.name}"


async def _wait_healthy(
    engine: ContainerEngine, container: Container, service: ServiceProcess
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + service.health_timeout_seconds
    while True:
        status = await asyncio.to_thread(engine.health, container)
        if status == "exited":
            raise ServiceFailed(
                f"service {service.name} ({service.image}) exited before it was ready"
            )
        if service.health_command is not None:
            command = ["/bin/sh", "-c", service.health_command]
            if await asyncio.to_thread(engine.exec_succeeds, container, command):
                return
        elif status in (None, "healthy"):
            return
        if loop.time() > deadline:
            raise ServiceFailed(
                f"service {service.name} ({service.image}) never became healthy within "
                f"{service.health_timeout_seconds:g}s"
            )
        await asyncio.sleep(HEALTH_POLL_SECONDS)


async def start_services(
    engine: ContainerEngine, process: StageProcess, labels: Mapping[str, str]
) -> list[Container]:
    """The network and the healthy services, or ServiceFailed (the caller removes them with
    `stop_services` either way)."""
    await asyncio.to_thread(engine.create_network, network_name(process), labels, internal=True)
    started: list[Container] = []
    for service in process.services:
        name = service_container_name(process, service)
        await asyncio.to_thread(engine.remove, name)
        try:
            await asyncio.to_thread(engine.ensure_image, service.image)
        except Exception as exc:
            raise ServiceFailed(f"service {service.name}: image {service.image}: {exc}") from exc
        spec = ContainerSpec(
            name=name,
            image=service.image,
            command=[],  # the image's own
            env=service.env,
            network=network_name(process),
            network_aliases=(service.name,),
            labels={**labels, "forgeline.service": service.name},
            memory_mb=process.memory_mb,
            pids_limit=SERVICE_PIDS_LIMIT,
        )
        container = await asyncio.to_thread(engine.create, spec)
        started.append(container)
        await asyncio.to_thread(container.start)
    await asyncio.gather(
        *(_wait_healthy(engine, c, s) for c, s in zip(started, process.services, strict=True))
    )
    return started


async def stop_services(engine: ContainerEngine, process: StageProcess) -> None:
    """Remove the attempt's service containers, then its network (missing ones count as gone)."""
    for service in process.services:
        await asyncio.to_thread(engine.remove, service_container_name(process, service))
    await asyncio.to_thread(engine.remove_network, network_name(process))
