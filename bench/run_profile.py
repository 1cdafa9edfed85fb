"""Where one pipeline run's time goes: its history against a bare chain's (workflow tasks,
activity round trips, the gaps between them), and the PostgreSQL statements it sends, by kind.

Used by bench_runs.py after its timed rounds; prints lines, returns nothing the table needs.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import statistics
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import event as sa_event
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio import activity
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from bench.chain_workflow import ChainInput, ChainWorkflow
from workflows.contracts.runs import EXECUTE_STAGE

_WORDS = re.compile(r"[A-Za-z_]+")


@dataclass
class HistoryProfile:
    events: int = 0
    workflow_tasks: list[float] = field(default_factory=list)
    activities: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    # scheduled -> started (the dispatch to a worker) and started -> completed, per activity.
    dispatch: list[float] = field(default_factory=list)
    running: list[float] = field(default_factory=list)
    gaps: list[float] = field(default_factory=list)
    local_activities: int = 0
    first_task_ms: float = 0.0
    last_task_ms: float = 0.0
    total_ms: float = 0.0

    def line(self) -> str:
        acts = ", ".join(
            f"{name} {statistics.median(v):.1f}ms x{len(v)}" for name, v in self.activities.items()
        )
        return (
            f"{self.events} events, {len(self.workflow_tasks)} workflow tasks "
            f"(median {statistics.median(self.workflow_tasks or [0]):.1f} ms, first "
            f"{self.first_task_ms:.1f}, last {self.last_task_ms:.1f}); activities "
            f"scheduled->completed: {acts} (dispatch {statistics.median(self.dispatch or [0]):.1f}"
            f" + running {statistics.median(self.running or [0]):.1f} ms); "
            f"local activities x{self.local_activities}; "
            f"completed->next scheduled median {statistics.median(self.gaps or [0]):.1f} ms; "
            f"start->close {self.total_ms:.0f} ms"
        )


async def history_profile(client: Client, workflow_id: str) -> HistoryProfile:
    profile = HistoryProfile()
    scheduled: dict[int, tuple[str, float]] = {}
    started: dict[int, float] = {}
    task_started = 0.0
    first = last_completed = None
    end = 0.0
    async for event in client.get_workflow_handle(workflow_id).fetch_history_events():
        profile.events += 1
        ts = event.event_time.ToDatetime().timestamp() * 1000
        first = ts if first is None else first
        end = ts
        kind = event.event_type
        if kind == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED:
            task_started = ts
        elif kind == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
            profile.workflow_tasks.append(ts - task_started)
        elif kind == EventType.EVENT_TYPE_MARKER_RECORDED:
            profile.local_activities += 1
        elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            if last_completed is not None:
                profile.gaps.append(ts - last_completed)
            name = event.activity_task_scheduled_event_attributes.activity_type.name
            scheduled[event.event_id] = (name, ts)
        elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            sched_id = event.activity_task_started_event_attributes.scheduled_event_id
            started[sched_id] = ts
            profile.dispatch.append(ts - scheduled[sched_id][1])
        elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            attrs = event.activity_task_completed_event_attributes
            name, t0 = scheduled[attrs.scheduled_event_id]
            if attrs.scheduled_event_id in started:
                profile.running.append(ts - started[attrs.scheduled_event_id])
            profile.activities[name].append(ts - t0)
            last_completed = ts
    if profile.workflow_tasks:
        profile.first_task_ms = profile.workflow_tasks[0]
        profile.last_task_ms = profile.workflow_tasks[-1]
    profile.total_ms = end - (first or end)
    return profile


async def chain_workflow_id(client: Client, steps: int, task_queue: str) -> str:
    """One bare chain with an ID to read its history back."""
    workflow_id = f"bench-chain-profile-{uuid.uuid4()}"
    await client.execute_workflow(
        ChainWorkflow.run, ChainInput(steps=steps), id=workflow_id, task_queue=task_queue
    )
    return workflow_id


class StatementCounter:
    """Every statement the engine's connections send (asyncpg's query logger), by kind: the
    verb and the table it names first."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.counts: Counter[str] = Counter()
        self.elapsed: defaultdict[str, float] = defaultdict(float)
        self.on = False
        sa_event.listen(engine.sync_engine, "connect", self._attach)

    def _attach(self, dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.driver_connection.add_query_logger(self._record)

    def _record(self, query: Any) -> None:
        if self.on:
            kind = statement_kind(query.query)
            self.counts[kind] += 1
            self.elapsed[kind] += query.elapsed * 1000

    def take(self) -> tuple[Counter[str], dict[str, float]]:
        counts, elapsed = self.counts, dict(self.elapsed)
        self.counts, self.elapsed = Counter(), defaultdict(float)
        return counts, elapsed


def statement_kind(sql: str) -> str:
    words = [w.lower() for w in _WORDS.findall(sql[:400])]
    verb = words[0] if words else "?"
    if verb == "with":
        # A data-modifying CTE: name it by the first table it writes.
        for i, w in enumerate(words):
            if w in ("insert", "update", "delete") and i + 2 < len(words):
                return f"with/{w} {words[i + 2] if w != 'update' else words[i + 1]}"
    for marker in ("from", "into", "update"):
        if marker in words[:40]:
            i = words.index(marker)
            if i + 1 < len(words):
                return f"{verb} {words[i + 1]}"
    return verb


def statements_line(counts: Counter[str], elapsed: dict[str, float], runs: int) -> str:
    total = sum(counts.values())
    parts = [
        f"{kind} {n / runs:.1f} ({elapsed.get(kind, 0) / n:.2f} ms)"
        for kind, n in counts.most_common()
    ]
    return f"{total / runs:.1f} statements per run: " + ", ".join(parts)


class StageTimers:
    """Time spent in the stage activity's parts (wrapped on its instance): the sandboxed
    process (of which: waiting for a sandbox from the pool), opening the attempt's row
    (overlapped with the process), closing it."""

    PARTS = ("activity body", "runner.run", "pool take", "open attempt", "close attempt")

    def __init__(self, stage_activities: Any) -> None:
        self.samples: defaultdict[str, list[float]] = defaultdict(list)
        self.on = False
        runner = stage_activities.runner
        closer = stage_activities.closer
        runner.run = self._timed("runner.run", runner.run)
        self.pool = getattr(runner, "pool", None)
        self.misses = 0
        if self.pool is not None:
            self.pool.take = self._timed("pool take", self.pool.take)
        stage_activities._open = self._timed("open attempt", stage_activities._open)
        closer.close = self._timed("close attempt", closer.close)

    def activity(self, fn: Any) -> Any:
        """`execute_stage` timed from its first line to its return (what the history's
        started -> completed adds beyond this is the SDK's: input decoding, result encoding,
        the completion's round trip)."""
        # The signature and type hints stay the method's: the SDK decodes the input by them.
        timed = functools.wraps(fn, updated=())(self._timed("activity body", fn))
        return activity.defn(name=EXECUTE_STAGE.name)(timed)

    def _timed(self, name: str, fn: Any) -> Any:
        async def timed(*args: Any, **kw: Any) -> Any:
            started = time.perf_counter()
            try:
                return await fn(*args, **kw)
            finally:
                if self.on:
                    self.samples[name].append((time.perf_counter() - started) * 1000)

        return timed

    def take(self) -> str:
        parts = [
            f"{name} {statistics.median(v):.1f} ms (max {max(v):.1f}) x{len(v)}"
            for name in self.PARTS
            if (v := self.samples.get(name))
        ]
        self.samples = defaultdict(list)
        if (total := getattr(self.pool, "misses", None)) is not None:
            misses, self.misses = total - self.misses, total
            parts.append(
                f"pool empty at take x{misses} (waiting now: {getattr(self.pool, 'target', '?')})"
            )
        return "stage activity parts (medians): " + ", ".join(parts)


class CpuMeter:
    """CPU seconds used so far by the benchmark's own processes: this one (with the stage
    processes it reaped), the Temporal dev server and PostgreSQL (the postmaster, with the
    backends it reaped, and its live backends), read from /proc. Less sensitive to a shared
    machine's load than wall time: what a run costs, not how long it waited for a core."""

    def __init__(self, work_dir: Path) -> None:
        self.tick = os.sysconf("SC_CLK_TCK")
        self.pids = [os.getpid()]
        for pid_file in (*work_dir.glob("**/temporal.pid"), *work_dir.glob("**/postmaster.pid")):
            with contextlib.suppress(OSError, ValueError, IndexError):
                self.pids.append(int(pid_file.read_text().split()[0]))

    def seconds(self) -> float:
        parents = set(self.pids)
        ticks = 0
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            fields = _stat_fields(entry.name)
            if fields is None:
                continue
            pid, ppid = int(entry.name), int(fields[1])
            if pid in parents:
                ticks += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
            elif ppid in parents:
                # Live: a backend, a waiting sandbox (reaped, it counts in its parent's cutime).
                ticks += int(fields[11]) + int(fields[12])
        return ticks / self.tick


def _stat_fields(pid: str) -> list[str] | None:
    """/proc/<pid>/stat after the command name (field 3 on), or None for a process gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            text = stat.read()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()
