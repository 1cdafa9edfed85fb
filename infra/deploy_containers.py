"""The `docker` provider: run a deployment's image as a container the reverse proxy can reach:
on a Docker network shared with the proxy, or on a free port (30000-39999) of 127.0.0.1 only.

Container names are deterministic (`fl-deploy-{deployment_id}`) so a retried activity finds the
container its crashed predecessor started instead of starting a second one.
"""

from __future__ import annotations

import hashlib
import socket
from dataclasses import dataclass
from datetime import datetime

import docker
from docker.errors import APIError, NotFound
from docker.models.containers import Container

PORT_RANGE = (30000, 39999)
LABEL_MANAGED = "forgeline.deployments"
LABEL_DEPLOYMENT = "forgeline.deployment_id"
LABEL_ENVIRONMENT = "forgeline.environment_id"
BIND_HOST = "127.0.0.1"


def container_name(deployment_id: str) -> str:
    return f"fl-deploy-{deployment_id}"


@dataclass(frozen=True)
class RunningContainer:
    id: str
    name: str
    image: str
    host_port: int
    status: str
    # host:port the reverse proxy dials (the container on the shared network, or the loopback port)
    upstream: str = ""

    @property
    def url(self) -> str:
        return f"http://{self.upstream}"


@dataclass(frozen=True)
class LogLine:
    timestamp: datetime | None
    message: str
    stream: str


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((BIND_HOST, port))
        except OSError:
            return False
    return True


def candidate_ports(deployment_id: str) -> list[int]:
    """Ports to try, starting at a hash of the deployment so concurrent releases rarely collide."""
    low, high = PORT_RANGE
    span = high - low + 1
    start = int(hashlib.sha256(deployment_id.encode()).hexdigest(), 16) % span
    return [low + (start + i) % span for i in range(span)]


class DockerReleaser:
    """Start, inspect, log and remove deployment containers through one Docker client."""

    def __init__(self, client: docker.DockerClient, *, network: str | None = None) -> None:
        self._docker = client
        self._network = network or None

    def find(self, deployment_id: str) -> Container | None:
        try:
            return self._docker.containers.get(container_name(deployment_id))
        except NotFound:
            return None

    def _describe(self, container: Container, container_port: int) -> RunningContainer | None:
        container.reload()
        image = container.attrs.get("Config", {}).get("Image", "")
        if self._network:
            networks = container.attrs.get("NetworkSettings", {}).get("Networks") or {}
            if self._network not in networks:
                return None
            return RunningContainer(
                id=container.id or "",
                name=container.name or "",
                image=image,
                host_port=0,
                status=container.status,
                upstream=f"{container.name}:{container_port}",
            )
        bindings = (container.attrs.get("HostConfig", {}).get("PortBindings") or {}).get(
            f"{container_port}/tcp"
        ) or []
        if not bindings:
            return None
        host_port = int(bindings[0]["HostPort"])
        return RunningContainer(
            id=container.id or "",
            name=container.name or "",
            image=image,
            host_port=host_port,
            status=container.status,
            upstream=f"{BIND_HOST}:{host_port}",
        )

    def run(
        self,
        *,
        deployment_id: str,
        environment_id: str,
        image: str,
        container_port: int,
        environment: dict[str, str],
    ) -> RunningContainer:
        """Idempotent: an existing running container of this deployment is returned as is."""
        existing = self.find(deployment_id)
        if existing is not None:
            described = self._describe(existing, container_port)
            if described is not None and existing.status == "running":
                return described
            existing.remove(force=True)
        labels = {
            LABEL_MANAGED: "1",
            LABEL_DEPLOYMENT: deployment_id,
            LABEL_ENVIRONMENT: environment_id,
        }
        if self._network:
            # The proxy shares this network and dials the container by name: nothing published.
            container = self._docker.containers.run(  # type: ignore[call-overload]
                image,
                name=container_name(deployment_id),
                detach=True,
                environment=environment,
                network=self._network,
                labels=labels,
                restart_policy={"Name": "unless-stopped", "MaximumRetryCount": 0},
            )
            described = self._describe(container, container_port)
            if described is None:
                raise RuntimeError(f"container {container.name} is not on {self._network}")
            return described
        last_error: Exception | None = None
        for port in candidate_ports(deployment_id)[:50]:
            if not _port_free(port):
                continue
            try:
                container = self._docker.containers.run(  # type: ignore[call-overload]
                    image,
                    name=container_name(deployment_id),
                    detach=True,
                    environment=environment,
                    ports={f"{container_port}/tcp": (BIND_HOST, port)},
                    labels=labels,
                    restart_policy={"Name": "unless-stopped", "MaximumRetryCount": 0},
                )
            except APIError as exc:
                # Someone took the port between our probe and Docker's bind: try the next one.
                last_error = exc
                leftover = self.find(deployment_id)
                if leftover is not None:
                    leftover.remove(force=True)
                if "port is already allocated" in str(exc) or "address already in use" in str(exc):
                    continue
                raise
            described = self._describe(container, container_port)
            if described is None:
                raise RuntimeError(f"container {container.name} has no published port")
            return described
        raise RuntimeError(f"no free host port in {PORT_RANGE}: {last_error}")

    def dead_reason(self, deployment_id: str) -> str | None:
        """Why the container cannot serve (exited, restarting, gone), or None while it runs."""
        container = self.find(deployment_id)
        if container is None:
            return "container is gone"
        container.reload()
        state = container.attrs.get("State", {})
        if state.get("Status") == "running" and not state.get("Restarting"):
            return None
        return f"container {state.get('Status')} (exit code {state.get('ExitCode')})"

    def logs(self, deployment_id: str, *, tail: int = 500) -> list[LogLine]:
        container = self.find(deployment_id)
        if container is None:
            return []
        lines: list[LogLine] = []
        for stream in ("stdout", "stderr"):
            raw = container.logs(
                stdout=stream == "stdout", stderr=stream == "stderr", timestamps=True, tail=tail
            )
            for line in raw.decode("utf-8", "replace").splitlines():
                stamp, _, message = line.partition(" ")
                lines.append(LogLine(_parse_stamp(stamp), message, stream))
        lines.sort(key=lambda item: (item.timestamp is None, item.timestamp))
        return lines

    def managed(self, environment_id: str) -> list[Container]:
        return list(
            self._docker.containers.list(
                all=True, filters={"label": [f"{LABEL_ENVIRONMENT}={environment_id}"]}
            )
        )

    def describe(self, deployment_id: str, container_port: int) -> RunningContainer | None:
        """The running container of a deployment as the proxy reaches it, or None."""
        container = self.find(deployment_id)
        if container is None or container.status != "running":
            return None
        return self._describe(container, container_port)

    def remove(self, deployment_id: str) -> bool:
        container = self.find(deployment_id)
        if container is None:
            return False
        container.remove(force=True)
        return True

    def retire_others(self, environment_id: str, keep_deployment_id: str) -> list[str]:
        """Remove every container of the environment except the one now serving."""
        removed: list[str] = []
        for container in self.managed(environment_id):
            if container.labels.get(LABEL_DEPLOYMENT) == keep_deployment_id:
                continue
            removed.append(container.labels.get(LABEL_DEPLOYMENT, container.name or ""))
            container.remove(force=True)
        return removed

    def remove_environment(self, environment_id: str) -> list[str]:
        removed = []
        for container in self.managed(environment_id):
            removed.append(container.labels.get(LABEL_DEPLOYMENT, container.name or ""))
            container.remove(force=True)
        return removed


def _parse_stamp(stamp: str) -> datetime | None:
    # Docker prints RFC 3339 with nanoseconds; Python keeps microseconds.
    try:
        head, _, frac = stamp.rstrip("Z").partition(".")
        return datetime.fromisoformat(f"{head}.{(frac + '000000')[:6]}+00:00")
    except ValueError:
        return None
