"""`bench_billing` run with counters on its scheduled path: the activities executed and their
durations (a worker interceptor), the SQL statements each activity type sent (cursor events on
the bench's engine), when the fan-out's page was recorded and committed, and how many invoice
steps were still running when it committed.

    FORGELINE_BENCH_BILLING_ORGS=2000 uv run python -m bench.profile_billing

Same sizes and server flags as `python -m bench.run --only billing --skip-baseline`; the counters
cost a little CPU, so compare its wall times only with its own runs.
"""

from __future__ import annotations

import asyncio
import collections
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio import activity
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput, Interceptor

import bench.bench_billing as bench_billing
import db.session
from bench.context import BenchContext
from bench.run import render
from forgeline.embedded.postgres import free_port
from forgeline.embedded.temporal import EmbeddedTemporal

INVOICE = "create_invoice"


class Counters:
    def __init__(self) -> None:
        self.durations: dict[str, list[float]] = collections.defaultdict(list)
        self.statements: dict[str, collections.Counter[str]] = collections.defaultdict(
            collections.Counter
        )
        self.fan_out: list[tuple[float, str]] = []  # (perf_counter, event) of the fan-out
        self.invoices: list[tuple[float, float]] = []  # (start, end) of each invoice step

    def report(self) -> list[str]:
        lines: list[str] = []
        if self.fan_out:
            start = min(t for t, _ in self.fan_out)
            firsts: dict[str, float] = {}
            for t, what in sorted(self.fan_out):
                firsts.setdefault(what, t - start)
            lines.append("fan-out, first of each event (s after its activity started):")
            lines += [f"  {at:7.2f}  {what}" for what, at in firsts.items()]
            commits = [t for t, what in self.fan_out if what == "COMMIT"]
            if commits and self.invoices:
                commit = commits[0]
                running = [(a, b) for a, b in self.invoices if a < commit < b]
                lines.append(
                    f"invoice steps running across the page's commit: {len(running)} "
                    f"(waited until it: {sum(commit - a for a, _ in running):.2f} s in all)"
                )
        for kind, values in sorted(self.durations.items()):
            values.sort()
            lines.append(
                f"activity {kind}: {len(values)} x, mean {sum(values) / len(values) * 1000:.1f} ms,"
                f" p50 {values[len(values) // 2] * 1000:.1f} ms, max {values[-1] * 1000:.1f} ms"
            )
        for kind, counter in sorted(self.statements.items()):
            lines.append(f"SQL sent by {kind}: {sum(counter.values())}")
            lines += [f"  {count:6d}  {text}" for text, count in counter.most_common()]
        return lines


COUNTERS = Counters()


def _activity_type() -> str | None:
    try:
        return activity.info().activity_type
    except RuntimeError:
        return None


class _Timed(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        kind, started = _activity_type() or "?", time.perf_counter()
        if kind != INVOICE:
            COUNTERS.fan_out.append((started, "activity started"))
        try:
            return await self.next.execute_activity(input)
        finally:
            ended = time.perf_counter()
            COUNTERS.durations[kind].append(ended - started)
            if kind == INVOICE:
                COUNTERS.invoices.append((started, ended))


class TimedActivities(Interceptor):
    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _Timed(next)


def _count_statements(engine: AsyncEngine) -> None:
    def sent(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        kind = _activity_type()
        if kind is not None:
            text = re.sub(r"\s+", " ", statement).strip()[:72]
            COUNTERS.statements[kind][text] += 1
            if kind != INVOICE:
                COUNTERS.fan_out.append((time.perf_counter(), text[:40]))

    def committed(_conn: Any) -> None:
        kind = _activity_type()
        if kind is not None and kind != INVOICE:
            COUNTERS.fan_out.append((time.perf_counter(), "COMMIT"))

    event.listen(engine.sync_engine, "before_cursor_execute", sent)
    event.listen(engine.sync_engine, "commit", committed)


def _instrument() -> None:
    """The bench's engine counts statements; its worker times activities."""
    create_engine, worker = db.session.create_engine, vars(bench_billing)["Worker"]

    def counted_engine(*args: Any, **kwargs: Any) -> AsyncEngine:
        engine = create_engine(*args, **kwargs)
        _count_statements(engine)
        return engine

    def timed_worker(*args: Any, **kwargs: Any) -> Any:
        kwargs["interceptors"] = [TimedActivities()]
        return worker(*args, **kwargs)

    vars(db.session)["create_engine"] = counted_engine
    vars(bench_billing)["Worker"] = timed_worker


async def main() -> int:
    _instrument()
    work_dir = Path(tempfile.mkdtemp(prefix="fl-bench-billing-"))
    temporal = EmbeddedTemporal(work_dir / "temporal", port=free_port(), ui_port=None)
    temporal.start()
    ctx: BenchContext | None = None
    try:
        await temporal.wait_ready()
        client = await Client.connect(temporal.address, data_converter=pydantic_data_converter)
        ctx = BenchContext(client=client, temporal_address=temporal.address, work_dir=work_dir)
        rows = await bench_billing.run(ctx)
        print(render(rows))
        print("\n".join(COUNTERS.report()))
    finally:
        if ctx is not None:
            ctx.close()
        temporal.stop()
        shutil.rmtree(work_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
