"""The one wrapper around the Docker SDK: images, containers, logs (stage runs and deployments).

The SDK is blocking; the async methods run it in threads. Containers carry `forgeline.*` labels
and deterministic names so a retry can find what an earlier attempt (or a crashed worker) left.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
from docker.errors import APIError, DockerException, ImageNotFound, NotFound
from docker.models.containers import Container

from forgeline.settings import Settings

LABEL_PREFIX = "forgeline."
# Label (after the prefix) with the epoch second after which a container is a leftover.
EXPIRES_AT = "expires_at"


def _expired(value: str | None, now: float) -> bool:
    try:
        return value is not None and float(value) < now
    except ValueError:
        return False


class EngineUnavailable(RuntimeError):
    pass


class ImageUnavailable(RuntimeError):
    """An image the engine does not have and cannot pull (no registry access, wrong name)."""


@dataclass(frozen=True)
class ContainerSpec:
    name: str
    image: str
    command: list[str]
    workdir: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    # host path → container path, read-write
    mounts: Mapping[str, str] = field(default_factory=dict)
    # host path → container path, read-only
    readonly_mounts: Mapping[str, str] = field(default_factory=dict)
    cpus: float | None = None
    memory_mb: int | None = None
    pids_limit: int | None = None
    network: str = "none"
    labels: Mapping[str, str] = field(default_factory=dict)
    ports: Mapping[str, int | None] = field(default_factory=dict)
    # Stage containers: an unprivileged user and no capabilities (apps keep the image's own).
    user: str | None = None
    cap_drop: tuple[str, ...] = ()
    tmpfs: Mapping[str, str] = field(default_factory=dict)
    # Other names the container answers to on `network` (a user-defined network).
    network_aliases: tuple[str, ...] = ()


def docker_client(base_url: str | None, version: str | None = None) -> docker.DockerClient:
    """A client for `base_url` (else DOCKER_HOST) that also applies DOCKER_TLS_VERIFY and
    DOCKER_CERT_PATH: the compose stack's engines answer only over mutual TLS. `version` None
    asks the engine."""
    environment = {**os.environ, "DOCKER_HOST": base_url} if base_url else None
    return docker.from_env(timeout=60, environment=environment, version=version)


class ContainerEngine:
    """A Docker engine connection; construct once per process (worker registration)."""

    def __init__(self, client: docker.DockerClient) -> None:
        self.client = client

    @classmethod
    def connect(cls, settings: Settings | None = None) -> ContainerEngine:
        base_url = settings.docker_host if settings else None
        try:
            client = docker_client(base_url)
            client.ping()
        except DockerException as exc:
            raise EngineUnavailable(f"no Docker engine answers: {exc}") from exc
        return cls(client)

    @staticmethod
    def available(settings: Settings | None = None) -> bool:
        try:
            engine = ContainerEngine.connect(settings)
        except EngineUnavailable:
            return False
        engine.close()
        return True

    def close(self) -> None:
        self.client.close()

    # Images -------------------------------------------------------------------------------
    def image_exists(self, ref: str) -> bool:
        try:
            self.client.images.get(ref)
        except ImageNotFound:
            return False
        return True

    def ensure_image(self, ref: str) -> None:
        """Use a local image when present; pull only when missing."""
        if self.image_exists(ref):
            return
        try:
            self.client.images.pull(ref)
        except DockerException as exc:
            # What the stage's error and the run's error show: the cause and the ways out.
            raise ImageUnavailable(
                f"image {ref} is not on the Docker engine and pulling it failed ({exc}); "
                "pull or load it on the engine, name an image it has, or run stages in the "
                "sandbox (FORGELINE_CONTAINER_RUNNER=sandbox)"
            ) from exc

    def build_image(
        self, context_dir: Path, tag: str, *, dockerfile: str = "Dockerfile", labels: Any = None
    ) -> str:
        image, _logs = self.client.images.build(
            path=str(context_dir), tag=tag, dockerfile=dockerfile, rm=True, labels=labels or {}
        )
        return str(image.id)

    def remove_image(self, ref: str) -> None:
        with contextlib.suppress(ImageNotFound):
            self.client.images.remove(ref, force=True)

    # Containers ---------------------------------------------------------------------------
    def create(self, spec: ContainerSpec) -> Container:
        host_config: dict[str, Any] = {
            "privileged": False,
            "security_opt": ["no-new-privileges"],
            "labels": {**spec.labels, f"{LABEL_PREFIX}managed": "true"},
            "environment": dict(spec.env),
            "volumes": {
                **{host: {"bind": inner, "mode": "rw"} for host, inner in spec.mounts.items()},
                **{h: {"bind": inner, "mode": "ro"} for h, inner in spec.readonly_mounts.items()},
            },
        }
        if spec.network_aliases:
            host_config["network"] = spec.network
            host_config["networking_config"] = {
                spec.network: self.client.api.create_endpoint_config(
                    aliases=list(spec.network_aliases)
                )
            }
        else:
            host_config["network_mode"] = spec.network
        if spec.workdir:
            host_config["working_dir"] = spec.workdir
        if spec.user:
            host_config["user"] = spec.user
        if spec.cap_drop:
            host_config["cap_drop"] = list(spec.cap_drop)
        if spec.tmpfs:
            host_config["tmpfs"] = dict(spec.tmpfs)
        if spec.cpus:
            host_config["nano_cpus"] = int(spec.cpus * 1e9)
        if spec.memory_mb:
            host_config["mem_limit"] = f"{spec.memory_mb}m"
            host_config["memswap_limit"] = f"{spec.memory_mb}m"
        if spec.pids_limit:
            host_config["pids_limit"] = spec.pids_limit
        if spec.ports:
            host_config["ports"] = dict(spec.ports)
        container: Container = self.client.containers.create(
            spec.image, spec.command or None, name=spec.name, detach=True, **host_config
        )
        return container

    def get(self, name: str) -> Container | None:
        try:
            return self.client.containers.get(name)
        except NotFound:
            return None

    def remove(self, name_or_container: str | Container) -> None:
        """Kill and remove; a missing container counts as removed."""
        container = (
            self.get(name_or_container) if isinstance(name_or_container, str) else name_or_container
        )
        if container is None:
            return
        try:
            container.remove(force=True)
        except NotFound:
            return
        except APIError as exc:
            # Another remover got there first (a retry racing the sweep): it is going away.
            if exc.status_code != 409 or "already in progress" not in str(exc):
                raise

    def remove_by_prefix(self, prefix: str) -> int:
        removed = 0
        for container in self.client.containers.list(all=True, filters={"name": prefix}):
            if container.name and container.name.startswith(prefix):
                self.remove(container)
                removed += 1
        return removed

    def remove_expired(self, now: float) -> int:
        """Remove the containers, then the networks, whose `forgeline.expires_at` label is
        before `now` (a stage's leftovers when nothing retried it); unlabelled ones stay."""
        label = f"{LABEL_PREFIX}{EXPIRES_AT}"
        removed = 0
        for container in self.client.containers.list(all=True, filters={"label": label}):
            if _expired(container.labels.get(label), now):
                self.remove(container)
                removed += 1
        for network in self.client.networks.list(filters={"label": label}):
            if _expired((network.attrs.get("Labels") or {}).get(label), now):
                with contextlib.suppress(NotFound, APIError):
                    network.remove()
                    removed += 1
        return removed

    # Networks ------------------------------------------------------------------------------
    def create_network(self, name: str, labels: Mapping[str, str], *, internal: bool) -> None:
        """A user-defined bridge (`internal`: no route out); one already there is reused."""
        if self.client.networks.list(names=[name]):
            return
        self.client.networks.create(
            name,
            driver="bridge",
            internal=internal,
            labels={**labels, f"{LABEL_PREFIX}managed": "true"},
        )

    def remove_network(self, name: str) -> None:
        for network in self.client.networks.list(names=[name]):
            if network.name == name:
                with contextlib.suppress(NotFound):
                    network.remove()

    def remove_networks_by_prefix(self, prefix: str) -> int:
        removed = 0
        for network in self.client.networks.list(filters={"label": f"{LABEL_PREFIX}managed"}):
            if network.name and network.name.startswith(prefix):
                with contextlib.suppress(NotFound, APIError):
                    network.remove()
                    removed += 1
        return removed

    def connect_network(self, container: Container, network: str) -> None:
        self.client.networks.get(network).connect(container)

    def exec_succeeds(self, container: Container, command: list[str]) -> bool:
        """`command` run inside the container exits 0 (False when it cannot run at all)."""
        try:
            result = container.exec_run(command, demux=False)
        except (APIError, NotFound):
            return False
        return bool(result.exit_code == 0)

    def health(self, container: Container) -> str | None:
        """The image's HEALTHCHECK status (None without one); `exited` once it stopped."""
        container.reload()
        state = container.attrs.get("State") or {}
        if state.get("Status") in ("exited", "dead"):
            return "exited"
        health = state.get("Health")
        return str(health.get("Status")) if isinstance(health, dict) else None

    def kill(self, container: Container) -> None:
        with contextlib.suppress(NotFound, APIError):
            container.kill()

    async def stream_logs(self, container: Container) -> AsyncIterator[bytes]:
        """Follow stdout+stderr until the container stops; the SDK iterator runs in a thread.

        The SDK yields small frames; the thread appends them to a deque and wakes the event loop
        only when it was empty, so a chatty container costs one wake-up per batch, not per frame.
        """
        loop = asyncio.get_running_loop()
        frames: deque[bytes | None] = deque()
        ready = asyncio.Event()
        stop = threading.Event()

        def push(item: bytes | None) -> None:
            was_empty = not frames
            frames.append(item)
            if was_empty:
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(ready.set)

        def pump() -> None:
            try:
                for data in container.logs(stream=True, follow=True, stdout=True, stderr=True):
                    if stop.is_set():
                        break
                    while len(frames) > 20_000 and not stop.is_set():
                        time.sleep(0.005)  # the consumer (log storage) is behind: back off
                    push(data)
            except (DockerException, RuntimeError):
                pass
            finally:
                push(None)

        thread = threading.Thread(target=pump, name=f"logs-{container.name}", daemon=True)
        thread.start()
        try:
            while True:
                await ready.wait()
                ready.clear()
                batch: list[bytes] = []
                finished = False
                while frames:
                    item = frames.popleft()
                    if item is None:
                        finished = True
                        break
                    batch.append(item)
                if batch:
                    yield b"".join(batch)
                if finished:
                    return
                if frames:
                    ready.set()
        finally:
            stop.set()

    async def wait(self, container: Container) -> int:
        result = await asyncio.to_thread(container.wait)
        return int(result.get("StatusCode", -1))
