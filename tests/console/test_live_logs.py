"""A stage's log followed live by the console: lines written while the stream is open arrive,
and the stream ends when the stage finishes. Driven at the ASGI level so each chunk of the
response is seen as it is sent."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import httpx
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.console.auth import SESSION_COOKIE
from db.models.pipelines import StageExecution
from db.session import session_scope
from tests.console.helpers import log_chunk, make_run, sign_in, stage_execution_id
from tests.factories import make_org

# Only a guard against a hung test, never a measure of speed.
GUARD_SECONDS = 60


class StreamedResponse:
    """Calls the ASGI app directly and collects the body as it is sent."""

    def __init__(self, app: Any, path: str, cookie: str) -> None:
        self.app, self.path, self.cookie = app, path, cookie
        self.status: int | None = None
        self.body = b""
        self.changed = asyncio.Event()
        self.gone = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def _receive(self) -> dict[str, Any]:
        if not hasattr(self, "_sent_request"):
            self._sent_request = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def _send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        elif message["type"] == "http.response.body":
            self.body += message.get("body", b"")
        self.changed.set()

    def start(self) -> None:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": self.path,
            "raw_path": self.path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [
                (b"host", b"testserver"),
                (b"cookie", f"{SESSION_COOKIE}={self.cookie}".encode()),
                (b"accept", b"text/event-stream"),
            ],
            "client": ("127.0.0.1", 50001),
            "server": ("testserver", 80),
            "state": dict(getattr(self.app.state, "forgeline_lifespan_state", {})),
        }
        self.task = asyncio.create_task(self.app(scope, self._receive, self._send))

    async def wait_for(self, text: bytes) -> None:
        async with asyncio.timeout(GUARD_SECONDS):
            while text not in self.body:
                self.changed.clear()
                await self.changed.wait()

    async def close(self) -> None:
        self.gone.set()
        if self.task is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(GUARD_SECONDS):
                    await self.task


async def test_a_line_written_while_following_arrives_and_the_end_closes_the_stream(
    app: Any, api_client: httpx.AsyncClient, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    org = await make_org(session_maker)
    rows = await make_run(session_maker, org, status="running", log_tail="")
    await sign_in(api_client, org)
    cookie = api_client.cookies.get(SESSION_COOKIE)
    assert cookie is not None
    execution = await stage_execution_id(session_maker, rows.run_id)
    stream = StreamedResponse(app, f"/runs/{rows.run_id}/stages/build/stream", cookie)
    stream.start()
    try:
        async with session_scope(session_maker) as session:
            session.add(log_chunk(execution, 0, 0, "\x1b[32mstarting <b>build</b>\nsecret: ***"))
        await stream.wait_for(b"secret: ***")
        assert stream.status == 200
        assert b"event: line" in stream.body and b"starting <b>build</b>" in stream.body
        assert b"event: end" not in stream.body
        async with session_scope(session_maker) as session:
            session.add(log_chunk(execution, 1, 2, "done"))
            await session.execute(
                update(StageExecution)
                .where(StageExecution.id == execution)
                .values(status="success")
            )
        await stream.wait_for(b"event: end")
        assert b"data: done" in stream.body
        assert stream.body.index(b"data: done") < stream.body.index(b"event: end")
    finally:
        await stream.close()


async def test_signed_out_streams_are_refused(
    api_client: httpx.AsyncClient, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    org = await make_org(session_maker)
    rows = await make_run(session_maker, org)
    answer = await api_client.get(f"/runs/{rows.run_id}/stages/build/stream")
    assert answer.status_code == 303 and answer.headers["location"] == "/login"


async def test_a_reconnect_goes_on_after_the_last_event_and_hostile_ids_are_harmless(
    api_client: httpx.AsyncClient, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    org = await make_org(session_maker)
    rows = await make_run(session_maker, org, status="success")
    execution = await stage_execution_id(session_maker, rows.run_id)
    async with session_scope(session_maker) as session:
        session.add(log_chunk(execution, 0, 0, "zero\none\ntwo"))
    await sign_in(api_client, org)
    path = f"/runs/{rows.run_id}/stages/build/stream"
    whole = await api_client.get(path)
    assert [x for x in ("data: zero", "data: one", "data: two") if x in whole.text] == [
        "data: zero",
        "data: one",
        "data: two",
    ]
    resumed = await api_client.get(path, headers={"Last-Event-ID": "1:0"})
    assert "data: zero" not in resumed.text
    assert "data: one" in resumed.text and "data: two" in resumed.text
    assert "event: end" in resumed.text
    for hostile in ("<script>", "1:-7", "0:1", "-3", "1:" + "9" * 100, "x" * 5000):
        answer = await api_client.get(path, headers={"Last-Event-ID": hostile})
        assert answer.status_code == 200, hostile
        assert "event: end" in answer.text and "<script>" not in answer.text
    missing_attempt = await api_client.get(path, headers={"Last-Event-ID": "7:0"})
    assert missing_attempt.status_code == 404
