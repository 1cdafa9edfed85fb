"""Stage overhead per runner: one no-op stage (`true`) through each runner, interleaved round by
round with the same command started directly (`sh -c true`), the baseline every ratio is to.
The sandbox twice: from its pool of waiting sandboxes (the default), and started per stage.

Run alone: `uv run python -m bench.run --only runners --skip-baseline`.
Rounds: FORGELINE_BENCH_RUNNERS_ROUNDS (40).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

from bench.context import BenchContext, BenchRow
from infra.runners import Runner, StageProcess
from infra.runners.docker_runner import DockerRunner
from infra.runners.local_runner import LocalProcessRunner
from infra.runners.sandbox_runner import SandboxConfig, SandboxRunner

ROUNDS = int(os.environ.get("FORGELINE_BENCH_RUNNERS_ROUNDS", "40"))


def log(message: str) -> None:
    print(f"  runners: {message}", file=sys.stderr, flush=True)


async def direct(workspace: Path) -> float:
    start = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        "/bin/sh", "-c", "true", cwd=workspace, stdout=asyncio.subprocess.PIPE
    )
    await proc.communicate()
    return (time.perf_counter() - start) * 1000


async def through(runner: Runner, workspace: Path, network: bool, image: str | None) -> float:
    async def sink(_: bytes) -> None:
        return None

    process = StageProcess(
        name=f"fl-bench-{uuid.uuid4().hex[:8]}-noop-1",
        script="true",
        workspace=workspace,
        root=workspace,
        timeout_seconds=60,
        network=network,
        image=image,
    )
    start = time.perf_counter()
    outcome = await runner.run(process, sink)
    assert outcome.exit_code == 0, outcome
    return (time.perf_counter() - start) * 1000


async def run(ctx: BenchContext) -> list[BenchRow]:
    work = ctx.work_dir / "runners"
    workspace = work / "ws"
    workspace.mkdir(parents=True, exist_ok=True)
    runners: list[tuple[str, Runner, bool, str | None]] = [
        ("unsafe-local (unisolated)", LocalProcessRunner(work / "local"), False, None),
        ("sandbox", SandboxRunner(SandboxConfig(state_dir=work / "sandbox")), False, None),
        ("sandbox + egress", SandboxRunner(SandboxConfig(state_dir=work / "net")), True, None),
        # Each sandbox started when its stage asks (FORGELINE_BUILD_SANDBOX_POOL=0).
        (
            "sandbox, started with its stage",
            SandboxRunner(SandboxConfig(state_dir=work / "unpooled", pool_size=0)),
            False,
            None,
        ),
        (
            "sandbox + egress, started with its stage",
            SandboxRunner(SandboxConfig(state_dir=work / "unpooled-net", pool_size=0)),
            True,
            None,
        ),
    ]
    try:
        from infra.containers import ContainerEngine
        from tests.runs.images import ensure_busybox_image

        engine = ContainerEngine.connect()
        image = ensure_busybox_image(engine)
        runners.append(("docker", DockerRunner(engine, image), False, image))
    except Exception as exc:  # the table says why the row is missing
        log(f"no docker row: {exc}")
    samples: dict[str, list[float]] = {name: [] for name, *_ in runners}
    baseline: list[float] = []
    for index in range(ROUNDS):
        baseline.append(await direct(workspace))
        for name, runner, network, stage_image in runners:
            if name == "docker" and index >= ROUNDS // 4:
                continue  # a container per stage: fewer rounds suffice to see its cost
            samples[name].append(await through(runner, workspace, network, stage_image))
    for _, runner, *_ in runners:
        await runner.close()
    direct_p50 = statistics.median(baseline)
    rows = [BenchRow("no-op stage, sh -c directly", "latency p50", direct_p50)]
    for name, values in samples.items():
        p50 = statistics.median(values)
        log(f"{name}: p50 {p50:.1f} ms vs sh -c {direct_p50:.1f} ms")
        rows.append(
            BenchRow(
                f"no-op stage, {name} runner",
                "latency p50",
                p50,
                baseline=direct_p50,
                note=f"vs sh -c directly; +{p50 - direct_p50:.1f} ms, {len(values)} rounds",
            )
        )
    return rows
