"""Stage logs: numbered lines from stored chunks or the object store, and the SSE
follower that carries on across a stage's retried attempts until the stage is really done.

Logs are read a bounded page at a time (no connection held while a client reads, no log held
in memory whole), and a reader hands the event loop back every few hundred lines, so a client
reading a flooding stage's log cannot starve other requests."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client

from core.runs import repository
from core.runs.service import stage_still_running
from db.models.pipelines import StageExecution, StageLogChunk
from db.session import session_scope
from forgeline.statuses.runs import FINISHED_STAGE_STATUSES, StageStatus
from infra.storage import ObjectStore

# An attempt that ended like this is the stage's last one: only a failure is ever retried.
FINAL_STAGE = (
    StageStatus.SUCCESS,
    StageStatus.CANCELLED,
    StageStatus.SKIPPED,
    StageStatus.TIMED_OUT,
)
FOLLOW_POLL_SECONDS = 0.5
# Between a failed attempt and the next one Postgres cannot tell "retry pending" from "done" while
# other stages keep the run going; the workflow can, but a query costs a workflow task: ask it at
# most this often, and only in that gap.
FOLLOW_QUERY_SECONDS = 2.0
# Stored chunks read per query (a chunk holds at most ~320 KB): the most a reader holds at once.
PAGE_CHUNKS = 16
# Lines handed on between two yields to the event loop.
LINES_PER_TURN = 64
# Bytes per write of a download.
DOWNLOAD_BLOCK_BYTES = 64 * 1024


@dataclass(frozen=True)
class LogReader:
    """What reading and following logs needs from the process serving them."""

    session_maker: async_sessionmaker[AsyncSession]
    # The object store holding logs moved out of Postgres (asked for only when one is read).
    store: Callable[[], ObjectStore]
    # The Temporal client (may raise when Temporal is unreachable).
    temporal: Callable[[], Awaitable[Client]]
    # Whether the client reading has gone.
    disconnected: Callable[[], Awaitable[bool]]


def _store_lines(store: ObjectStore, key: str, after: int) -> Iterator[tuple[int, str]]:
    """Lines of a log moved to the object store, numbered from 0, after `after`."""
    with store.open(key) as stream:
        buffer = b""
        number = 0
        while block := stream.read(1 << 16):
            buffer += block
            *lines, buffer = buffer.split(b"\n")
            for raw in lines:
                if number > after:
                    yield number, raw.decode("utf-8", errors="replace")
                number += 1
        if buffer and number > after:
            yield number, buffer.decode("utf-8", errors="replace")


def _take(iterator: Iterator[tuple[int, str]], count: int) -> list[tuple[int, str]]:
    return [item for _, item in zip(range(count), iterator, strict=False)]


def chunk_lines(first_line: int, line_count: int, content: str) -> Iterator[tuple[int, str]]:
    """The numbered lines of one stored chunk. Lines hold neither CR nor LF (the capture cuts
    at both), so splitting at LF gives back exactly the lines stored; `str.splitlines` would
    also cut at form feeds, U+2028 and the like and number lines twice."""
    for offset, line in enumerate(content.split("\n")[:line_count]):
        yield first_line + offset, line


async def chunk_log_lines(
    session_maker: async_sessionmaker[AsyncSession], execution_id: uuid.UUID, after: int
) -> AsyncIterator[tuple[int, str]]:
    """(line number, text) of an attempt's stored chunks after line `after` (-1 for all), read
    PAGE_CHUNKS chunks per query, each page on a connection returned before its lines go out."""
    last_seq: int | None = None
    while True:
        query = select(
            StageLogChunk.seq,
            StageLogChunk.first_line,
            StageLogChunk.line_count,
            StageLogChunk.content,
        ).where(StageLogChunk.stage_execution_id == execution_id)
        if last_seq is None:
            query = query.where(StageLogChunk.first_line + StageLogChunk.line_count > after + 1)
        else:
            query = query.where(StageLogChunk.seq > last_seq)
        async with session_maker() as session:
            query = query.order_by(StageLogChunk.seq).limit(PAGE_CHUNKS)
            page = (await session.execute(query)).all()
        for seq, first_line, line_count, content in page:
            last_seq = seq
            for number, line in chunk_lines(first_line, line_count, content):
                if number > after:
                    yield number, line
        if len(page) < PAGE_CHUNKS:
            return


async def stage_lines(
    reader: LogReader, execution: StageExecution, after: int
) -> AsyncIterator[tuple[int, str]]:
    """(line number, text) of one attempt's log after line `after` (-1 for all)."""
    if execution.log_object_key:
        store = reader.store()
        iterator = _store_lines(store, execution.log_object_key, after)
        while True:
            batch = await asyncio.to_thread(_take, iterator, 2000)
            if not batch:
                return
            for item in batch:
                yield item
    else:
        async for item in chunk_log_lines(reader.session_maker, execution.id, after):
            yield item


async def download_blocks(reader: LogReader, execution: StageExecution) -> AsyncIterator[bytes]:
    """The log as text, in blocks of about DOWNLOAD_BLOCK_BYTES."""
    block: list[bytes] = []
    size = 0
    async for _, line in stage_lines(reader, execution, -1):
        data = (line + "\n").encode()
        block.append(data)
        size += len(data)
        if size >= DOWNLOAD_BLOCK_BYTES:
            yield b"".join(block)
            block, size = [], 0
    if block:
        yield b"".join(block)


# Line numbers and attempts are 32-bit columns: a resume position past them names no line.
MAX_LINE = 2**31 - 1


@dataclass(frozen=True)
class LogPosition:
    """Where a follower resumes: after `line` of `attempt`; attempt None means the first
    attempt the request follows (the plain line numbers of `after` and of older event IDs)."""

    attempt: int | None
    line: int


def event_id(attempt: int, line: int) -> str:
    """The SSE id of a line: unambiguous across attempts, so Last-Event-ID resumes exactly."""
    return f"{attempt}:{line}"


def parse_event_id(value: str | None) -> LogPosition | None:
    """`<attempt>:<line>`, or a plain line number; anything else is ignored (None)."""
    if value is None:
        return None
    head, sep, tail = value.strip().partition(":")
    try:
        attempt, line = (int(head), int(tail)) if sep else (None, int(head))
    except ValueError:
        return None
    if not -1 <= line <= MAX_LINE or (attempt is not None and not 1 <= attempt <= MAX_LINE):
        return None
    return LogPosition(attempt, line)


async def _stage_retry_pending(reader: LogReader, run_id: uuid.UUID, stage: str) -> bool | None:
    """The workflow's word on whether the stage may still run another attempt; None when it
    cannot be asked right now (then Postgres decides on a later poll)."""
    try:
        client = await reader.temporal()
    except Exception:  # unreachable Temporal: keep polling Postgres
        return None
    return await stage_still_running(client, run_id, stage)


async def follow_events(
    reader: LogReader,
    *,
    run_id: uuid.UUID,
    stage: str,
    execution: StageExecution,
    after: int,
    single_attempt: bool,
) -> AsyncIterator[dict[str, Any]]:
    """SSE events of a stage's log: `line` (id `<attempt>:<line>`), `attempt` when a retry
    starts, and `end` with the last attempt's status once no other attempt will run.

    With `single_attempt` only `execution` is followed, ending when it finishes."""
    session_maker = reader.session_maker
    current_id = execution.id
    position = after
    last_query = float("-inf")
    while True:
        async with session_scope(session_maker) as session:
            current = await session.get(StageExecution, current_id)
        if current is None:
            return
        # Read before the lines: a finished row's log is complete.
        finished = current.status in FINISHED_STAGE_STATUSES
        sent = 0
        async for number, line in stage_lines(reader, current, position):
            position = number
            yield {"id": event_id(current.attempt, number), "event": "line", "data": line}
            sent += 1
            if sent % LINES_PER_TURN == 0:
                # A socket that keeps up never makes the send wait: let other requests run.
                await asyncio.sleep(0)
                if sent % (LINES_PER_TURN * 64) == 0 and await reader.disconnected():
                    return
        if finished:
            if single_attempt or current.status in FINAL_STAGE:
                yield {"event": "end", "data": current.status}
                return
            async with session_scope(session_maker) as session:
                # The run's state first: an attempt recorded before the run ended is then
                # visible to the read after it (the other order could miss an attempt that
                # started and ended, with its run, between the two reads).
                run_active = await repository.run_is_active(session, run_id)
                newer = await repository.next_attempt(session, run_id, stage, current.attempt)
            if newer is not None:
                current_id, position = newer.id, -1
                yield {
                    "id": event_id(newer.attempt, -1),
                    "event": "attempt",
                    "data": str(newer.attempt),
                }
                continue
            if not run_active:
                yield {"event": "end", "data": current.status}
                return
            if time.monotonic() - last_query >= FOLLOW_QUERY_SECONDS:
                last_query = time.monotonic()
                if await _stage_retry_pending(reader, run_id, stage) is False:
                    # Done for the workflow; an attempt that started and ended since the read
                    # above would be in Postgres by now, so look once more before ending.
                    async with session_scope(session_maker) as session:
                        newer = await repository.next_attempt(
                            session, run_id, stage, current.attempt
                        )
                    if newer is None:
                        yield {"event": "end", "data": current.status}
                        return
                    continue
        if await reader.disconnected():
            return
        await asyncio.sleep(FOLLOW_POLL_SECONDS)


async def first_attempt_events(
    reader: LogReader, *, run_id: uuid.UUID, stage: str, after: int
) -> AsyncIterator[dict[str, Any]]:
    """Following a stage that has not started yet (a run just triggered, a stage waiting for
    its dependencies): wait for its first attempt, then follow it like any other. A run that
    ends without ever starting the stage (cancelled, failed earlier) ends with `not_run`."""
    session_maker = reader.session_maker
    while True:
        async with session_scope(session_maker) as session:
            active = await repository.run_is_active(session, run_id)  # first: see follow_events
            first = await repository.next_attempt(session, run_id, stage, 0)
        if first is not None:
            async for event in follow_events(
                reader,
                run_id=run_id,
                stage=stage,
                execution=first,
                after=after,
                single_attempt=False,
            ):
                yield event
            return
        if not active:
            yield {"event": "end", "data": "not_run"}
            return
        if await reader.disconnected():
            return
        await asyncio.sleep(FOLLOW_POLL_SECONDS)
