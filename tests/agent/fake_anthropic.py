"""A local fake of the Anthropic Messages API that replays scripted tool-use conversations.

The turn is derived from the request (number of assistant messages so far), so a retried request
gets the same answer; faults (429 with retry-after, 529 overload, 401) are injected per turn.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


@dataclass
class Turn:
    tool_calls: list[tuple[str, Any]] = field(default_factory=list)  # (name, input)
    text: str = ""
    faults: list[tuple[int, dict[str, str]]] = field(default_factory=list)  # served first
    delay: float = 0.0


@dataclass
class Script:
    turns: list[Turn]
    always_status: int | None = None
    requests: list[dict[str, Any]] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    served_faults: dict[int, int] = field(default_factory=dict)


def _error(status: int, kind: str, message: str, headers: dict[str, str]) -> JSONResponse:
    body = {"type": "error", "error": {"type": kind, "message": message}}
    return JSONResponse(body, status_code=status, headers=headers)


def build_app(script: Script) -> Starlette:
    async def messages(request: Request) -> JSONResponse:
        body = await request.json()
        script.requests.append(body)
        if script.always_status is not None:
            script.statuses.append(script.always_status)
            return _error(script.always_status, "authentication_error", "invalid x-api-key", {})
        turn_index = sum(1 for m in body["messages"] if m["role"] == "assistant")
        turn = script.turns[min(turn_index, len(script.turns) - 1)]
        served = script.served_faults.get(turn_index, 0)
        if served < len(turn.faults):
            script.served_faults[turn_index] = served + 1
            status, headers = turn.faults[served]
            script.statuses.append(status)
            kind = {429: "rate_limit_error", 529: "overloaded_error"}.get(status, "api_error")
            return _error(status, kind, f"scripted {status}", headers)
        if turn.delay:
            await asyncio.sleep(turn.delay)
        content: list[dict[str, Any]] = []
        if turn.text:
            content.append({"type": "text", "text": turn.text})
        for i, (name, args) in enumerate(turn.tool_calls):
            content.append(
                {"type": "tool_use", "id": f"toolu_{turn_index}_{i}", "name": name, "input": args}
            )
        script.statuses.append(200)
        return JSONResponse(
            {
                "id": f"msg_{turn_index}",
                "type": "message",
                "role": "assistant",
                "model": body.get("model", "claude-sonnet-4-5"),
                "content": content,
                "stop_reason": "tool_use" if turn.tool_calls else "end_turn",
                "stop_sequence": None,
                "usage": {"input_tokens": 100, "output_tokens": 50},
            }
        )

    return Starlette(routes=[Route("/v1/messages", messages, methods=["POST"])])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serve(script: Script) -> Iterator[str]:
    """Run the fake on a free port in a thread; yields its base URL."""
    port = free_port()
    config = uvicorn.Config(build_app(script), host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=5)


def generation_script(delay: float = 0.0) -> Script:
    """list -> (read + malformed calls) -> detect -> propose + validate -> summary."""
    return Script(
        turns=[
            Turn(
                tool_calls=[("list_files", {})], faults=[(429, {"retry-after": "1"})], delay=delay
            ),
            Turn(
                text="Reading the manifest.",
                tool_calls=[
                    ("read_file", {"path": "package.json"}),
                    ("delete_repository", {"really": True}),
                    ("read_file", {}),
                ],
                faults=[(529, {})],
                delay=delay,
            ),
            Turn(tool_calls=[("detect_framework", {})], delay=delay),
            Turn(tool_calls=[("propose_pipeline", {}), ("validate_pipeline", {})], delay=delay),
            Turn(text="The pipeline is ready: install, lint, test, build, scan, deploy."),
        ]
    )


def dump(script: Script) -> str:
    return json.dumps(script.statuses)
