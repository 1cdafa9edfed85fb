"""Docker runner: one container per stage attempt from the stage's image, workspace bind-mounted.

No privileged mode, no capabilities, no-new-privileges, the build user (never root, whose uid is
the host's), no host path but the workspace, CPU/memory/pids limits, a private /tmp. No network
unless the stage asks; then, with an engine on this host, still no network of the container's own:
the egress proxy listens on the container's loopback (a socket made in its namespace from here),
the same single way out as the sandbox's. A remote engine (a build host's docker-in-docker) gives
the container the engine's bridge, in the network zone the engine was given. The container name
`fl-{run_id}-{stage}-{attempt}` lets a retry remove whatever its predecessor left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from dataclasses import replace
from pathlib import Path

from infra.containers import EXPIRES_AT, LABEL_PREFIX, ContainerEngine, ContainerSpec
from infra.runners.base import (
    SERVICE_EXIT,
    SERVICE_MARKER,
    OutputCallback,
    Runner,
    StageOutcome,
    StageProcess,
)
from infra.runners.docker_services import (
    ServiceFailed,
    network_name,
    start_services,
    stop_services,
)
from infra.runners.egress_proxy import EgressProxy, listen_in_namespace, proxy_environment
from infra.runners.sandbox_args import SANDBOX_TMP
from infra.runners.sandbox_workspace import give_to_build_user

# How long after its stage's timeout a container left behind (its worker crashed, and no attempt
# came to remove it) is swept away by the build host.
LEFTOVER_GRACE_SECONDS = 600.0
# Inside the container: a read-only directory where `ready` appears once the proxy listens.
EGRESS_SIGNAL_DIR = "/run/forgeline"
WAIT_FOR_EGRESS = (
    "i=0; until [ -e /run/forgeline/ready ]; do i=$((i+1)); "
    '[ "$i" -gt 3000 ] && break; sleep 0.01; done; exec /bin/sh -c "$0"'
)

WORKSPACE_MOUNT = "/workspace"
# The engine's last messages, compared with the end of the streamed output.
TAIL_MESSAGES = 4
TAIL_CHECK_BYTES = 4 * 65536


def missing_suffix(received: bytes, last: bytes) -> bytes:
    """What of `last` (the stored log's end) the stream did not deliver: the part after its
    longest prefix that `received` ends with (all of it when nothing overlaps)."""
    if not last or received.endswith(last):
        return b""
    start = max(0, len(received) - len(last))
    while (pos := received.find(last[:1], start)) >= 0:
        if last.startswith(received[pos:]):
            return last[len(received) - pos :]
        start = pos + 1
    # No overlap: nothing was streamed (all of it is missing), or more than the window was lost
    # (unknown how much: nothing is repeated).
    return b"" if received else last


DEFAULT_PIDS_LIMIT = 512


class DockerRunner(Runner):
    kind = "docker"
    supports_services = True

    def __init__(
        self,
        engine: ContainerEngine,
        default_image: str,
        uid: int = 61000,
        gid: int = 61000,
        *,
        egress: EgressProxy | None = None,
        state_dir: Path | None = None,
    ) -> None:
        """`egress` (with `state_dir`) when the engine runs on this host: network stages then
        reach the internet only through it."""
        self.engine = engine
        self.default_image = default_image
        self.uid = uid
        self.gid = gid
        self.egress = egress
        self.state_dir = state_dir

    async def run(self, process: StageProcess, on_output: OutputCallback) -> StageOutcome:
        root = process.root or process.workspace
        root.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(give_to_build_user, root, self.uid, self.gid)
        image = process.image or self.default_image
        workdir = f"{WORKSPACE_MOUNT}/{process.workdir}" if process.workdir else WORKSPACE_MOUNT
        through_proxy = process.network and self.egress is not None and self.state_dir is not None
        command = ["/bin/sh", "-c", process.script]
        env = {"HOME": WORKSPACE_MOUNT, "TMPDIR": SANDBOX_TMP}
        readonly: dict[str, str] = {}
        signal_dir: Path | None = None
        if through_proxy:
            assert self.state_dir is not None
            signal_dir = self.state_dir / "egress" / process.name
            shutil.rmtree(signal_dir, ignore_errors=True)
            signal_dir.mkdir(parents=True)
            readonly[str(signal_dir)] = EGRESS_SIGNAL_DIR
            command = ["/bin/sh", "-c", WAIT_FOR_EGRESS, process.script]
            env |= proxy_environment()
        # Past this, a container of the attempt is a leftover (`sweep_expired` removes it).
        expires = time.time() + process.timeout_seconds + LEFTOVER_GRACE_SECONDS
        labels = {**process.labels, f"{LABEL_PREFIX}{EXPIRES_AT}": f"{expires:.0f}"}
        spec = ContainerSpec(
            name=process.name,
            image=image,
            command=command,
            workdir=workdir,
            env={**env, **process.env},
            mounts={str(root.resolve()): WORKSPACE_MOUNT},
            readonly_mounts=readonly,
            user=f"{self.uid}:{self.gid}",
            cap_drop=("ALL",),
            tmpfs={SANDBOX_TMP: "rw,nosuid,nodev,size=1g"},
            cpus=process.cpus,
            memory_mb=process.memory_mb,
            pids_limit=process.pids_limit or DEFAULT_PIDS_LIMIT,
            network="bridge" if process.network and not through_proxy else "none",
            labels=labels,
        )
        if process.services:
            # The services' network instead of none (or of the bridge, joined after creation).
            spec = replace(spec, network=network_name(process))
        await asyncio.to_thread(self.engine.remove, process.name)
        egress_server: asyncio.AbstractServer | None = None
        try:
            if process.services:
                try:
                    await start_services(self.engine, process, labels)
                except ServiceFailed as exc:
                    await on_output(f"{SERVICE_MARKER} {exc}\n".encode())
                    return StageOutcome(exit_code=SERVICE_EXIT)
                names = ", ".join(s.name for s in process.services)
                await on_output(f"[forgeline] services ready: {names}\n".encode())
            await asyncio.to_thread(self.engine.ensure_image, image)
            container = await asyncio.to_thread(self.engine.create, spec)
            if process.services and process.network and not through_proxy:
                await asyncio.to_thread(self.engine.connect_network, container, "bridge")
            await asyncio.to_thread(container.start)
            if signal_dir is not None and self.egress is not None:
                egress_server = await self._open_egress(container, signal_dir)

            received = bytearray()  # the last bytes streamed, to find what the stream dropped

            async def pump() -> None:
                async for data in self.engine.stream_logs(container):
                    received.extend(data)
                    if len(received) > 2 * TAIL_CHECK_BYTES:  # trimmed now and then, not per frame
                        del received[:-TAIL_CHECK_BYTES]
                    await on_output(data)

            pump_task = asyncio.create_task(pump())
            try:
                async with asyncio.timeout(process.timeout_seconds):
                    exit_code = await self.engine.wait(container)
            except TimeoutError:
                await asyncio.to_thread(self.engine.kill, container)
                await self.engine.wait(container)
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait_for(pump_task, 5)
                return StageOutcome(exit_code=137, timed_out=True)
            # The log stream ends when the engine has delivered everything: drain it all (a
            # 50 MB log takes seconds after the container exits), bounded by the stage timeout.
            await asyncio.wait_for(pump_task, max(60.0, process.timeout_seconds))
            # A followed stream can end before the engine's last partial message (output with
            # no final newline) reaches it; the stored log has it.
            last = await asyncio.to_thread(
                container.logs, stdout=True, stderr=True, tail=TAIL_MESSAGES
            )
            missing = missing_suffix(bytes(received), last)
            if missing:
                await on_output(missing)
            return StageOutcome(exit_code=exit_code)
        finally:
            if egress_server is not None:
                egress_server.close()
            if signal_dir is not None:
                shutil.rmtree(signal_dir, ignore_errors=True)
            # On success, failure and cancellation alike: the container does not outlive its stage.
            await asyncio.shield(asyncio.to_thread(self.engine.remove, process.name))
            if process.services:
                await asyncio.shield(stop_services(self.engine, process))

    async def _open_egress(self, container: object, signal_dir: Path) -> asyncio.AbstractServer:
        """The proxy on the container's loopback, then the signal its script waits for."""
        assert self.egress is not None

        def pid() -> int:
            container.reload()  # type: ignore[attr-defined]
            return int(container.attrs["State"]["Pid"])  # type: ignore[attr-defined]

        listener = await asyncio.to_thread(listen_in_namespace, await asyncio.to_thread(pid))
        server = await self.egress.serve_socket(listener)
        (signal_dir / "ready").touch()
        return server

    async def sweep_expired(self) -> int:
        return await asyncio.to_thread(self.engine.remove_expired, time.time())

    async def remove_stale(self, prefix: str) -> int:
        removed = await asyncio.to_thread(self.engine.remove_by_prefix, prefix)
        await asyncio.to_thread(self.engine.remove_networks_by_prefix, prefix)
        return removed

    async def close(self) -> None:
        await asyncio.to_thread(self.engine.close)
