"""`make bench`: the Temporal baseline plus every bench/bench_*.py, printed as one table.

Each `bench/bench_<name>.py` exposes `async def run(ctx: BenchContext) -> list[BenchRow]`.
Everything runs against one embedded dev server with the same flags as `make run`.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import shutil
import sys
import tempfile
import traceback
from pathlib import Path

from temporalio.contrib.pydantic import pydantic_data_converter

from bench.context import BenchContext, BenchRow
from forgeline.embedded.postgres import free_port
from forgeline.embedded.temporal import EmbeddedTemporal
from infra.runners.local_runner import watch_children_with_pidfd

BENCH_DIR = Path(__file__).resolve().parent
CHAIN_LENGTHS = (1, 5, 20)


def baseline_rows(ctx: BenchContext) -> list[BenchRow]:
    rows = []
    for n, result in sorted(ctx.baseline.items()):
        name = f"baseline chain N={n}"
        rows.append(BenchRow(name, "latency p50", result.p50_ms))
        rows.append(BenchRow(name, "latency p95", result.p95_ms))
        rows.append(BenchRow(name, "per activity p50", result.per_step_ms))
        if result.throughput_wps is not None:
            rows.append(
                BenchRow(
                    name,
                    f"throughput @{result.concurrency}",
                    result.throughput_wps,
                    unit="wf/s",
                )
            )
    return rows


def render(rows: list[BenchRow]) -> str:
    header = ("benchmark", "metric", "value", "unit", "baseline", "ratio", "note")
    lines = [header]
    for row in rows:
        lines.append(
            (
                row.bench,
                row.metric,
                f"{row.value:.2f}",
                row.unit,
                f"{row.baseline:.2f}" if row.baseline is not None else "",
                f"{row.ratio:.2f}x" if row.ratio is not None else "",
                row.note,
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = []
    for index, line in enumerate(lines):
        out.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(line)).rstrip())
        if index == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=20, help="sequential runs per chain length")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument(
        "--throughput-workflows", type=int, default=100, help="workflows per throughput run"
    )
    parser.add_argument("--only", action="append", help="run only bench_<name>.py (repeatable)")
    parser.add_argument("--skip-baseline", action="store_true")
    args = parser.parse_args(argv)
    # As worker.py does: the benches host their workers in this process.
    watch_children_with_pidfd()

    work_dir = Path(tempfile.mkdtemp(prefix="fl-bench-"))
    temporal = EmbeddedTemporal(work_dir / "temporal", port=free_port(), ui_port=None)
    temporal.start()
    failures = 0
    ctx: BenchContext | None = None
    try:
        await temporal.wait_ready()
        from temporalio.client import Client

        client = await Client.connect(temporal.address, data_converter=pydantic_data_converter)
        ctx = BenchContext(client=client, temporal_address=temporal.address, work_dir=work_dir)
        if not args.skip_baseline:
            from bench.baseline import measure_chain

            for n in CHAIN_LENGTHS:
                print(f"baseline: chain of {n} ...", file=sys.stderr, flush=True)
                ctx.baseline[n] = await measure_chain(
                    client,
                    n,
                    args.repeats,
                    concurrency=args.concurrency,
                    throughput_workflows=args.throughput_workflows,
                )
        rows = baseline_rows(ctx)
        for path in sorted(BENCH_DIR.glob("bench_*.py")):
            name = path.stem.removeprefix("bench_")
            if args.only and name not in args.only:
                continue
            print(f"bench: {path.name} ...", file=sys.stderr, flush=True)
            try:
                module = importlib.import_module(f"bench.{path.stem}")
                rows += await module.run(ctx)
            except Exception:
                failures += 1
                traceback.print_exc()
                rows.append(BenchRow(path.stem, "FAILED", float("nan"), unit="", note="see log"))
        print(render(rows))
    finally:
        if ctx is not None:
            ctx.close()
        temporal.stop()
        shutil.rmtree(work_dir, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
