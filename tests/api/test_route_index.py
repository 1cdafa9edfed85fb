"""The route index routes every request exactly as FastAPI's linear match does: each registered
route and method, 404, 405, trailing-slash redirects, path parameters, the static mount, a
root path, websocket scopes, hostile paths, and routes added after the app was built.

Each request is routed twice through the same app, with the index (the router's entry point)
and without it (the router's own `app`), and both runs must send the same ASGI messages and
leave the same routing state in the scope. A recorder stands in for each route's `handle`, so
the comparison sees which route was chosen and with which parameters, not only the status."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

import pytest
from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute, iter_route_contexts
from starlette.routing import BaseRoute

from api.app import create_app
from api.route_index import RouteIndex, path_key
from forgeline.settings import Settings

Message = MutableMapping[str, Any]
# Scope entries made afresh for each request (or copied from the request): not routing state.
_PER_REQUEST = frozenset(
    {"state", "app", "headers", "asgi", "client", "server", "fastapi_middleware_astack"}
)
_PARAM = re.compile(r"\{([^}:]+)(?::([^}]+))?\}")
_SAMPLE = {"uuid": str(uuid.UUID(int=7)), "int": "7", "float": "1.5", "path": "a/b", "": "x"}
_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
HOSTILE = [
    "",
    "/",
    "//",
    "/v1",
    "/v1/",
    "/v1//projects",
    "/V1/projects",
    "/v1/projects/",
    "/v1/projects//",
    "/v1/projects/not-a-uuid",
    "/v1/projects/%2e%2e/environments",
    "/v1/projects/../projects",
    "/v1/projects/\u00e9t\u00e9",
    "/v1/projects/" + str(uuid.UUID(int=7)) + "/environments/",
    "/v1/" + "a" * 5000,
    "/static",
    "/static/",
    "/static/../api/app.py",
    "/healthz/",
    "/docs/",
    "/openapi.json/",
    "/v1/projects\x00",
    "/v1/environments",
]


@pytest.fixture
def app(tmp_path: Path) -> FastAPI:
    return create_app(
        Settings(
            environment="development",
            database_url="postgresql+asyncpg://nobody:x@127.0.0.1:9/none",
            temporal_address="127.0.0.1:9",
            data_dir=tmp_path,
        )
    )


def _index(app: FastAPI) -> RouteIndex:
    index = app.router.middleware_stack
    assert isinstance(index, RouteIndex)
    return index


def _concrete(path_format: str) -> str:
    return _PARAM.sub(lambda m: _SAMPLE.get(m.group(2) or "", "x"), path_format)


def _leaf_routes(app: FastAPI) -> Iterator[tuple[BaseRoute, Any]]:
    """Every route object a request can be handed to, with its path template."""
    for context in iter_route_contexts(app.routes):
        original = context.original_route
        effective = getattr(context._effective_route, "starlette_route", None)
        yield (effective or original), context.path_format


def _requests(app: FastAPI) -> list[tuple[str, str]]:
    seen: list[tuple[str, str]] = []
    for _, path_format in _leaf_routes(app):
        if not path_format:
            continue
        path = _concrete(path_format)
        variants = {path, path + "/", path.rstrip("/") or "/", path + "/extra"}
        seen += [(method, p) for p in sorted(variants) for method in _METHODS]
    seen += [(method, p) for p in HOSTILE for method in ("GET", "POST")]
    return seen


def _scope(method: str, path: str, *, kind: str = "http", root_path: str = "") -> dict[str, Any]:
    return {
        "type": kind,
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http" if kind == "http" else "ws",
        "path": root_path + path,
        "raw_path": (root_path + path).encode("utf-8", "surrogateescape"),
        "query_string": b"a=1",
        "root_path": root_path,
        "headers": [(b"host", b"testserver"), (b"x-request-id", b"route-index-test")],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
        "state": {},
    }


def _plain(value: Any) -> Any:
    """Scope values made comparable: routes and routers by identity of what they wrap."""
    original = getattr(value, "original_router", None)
    if original is not None:
        return ("included", id(original))
    if isinstance(value, dict):
        return {str(_plain(k)): _plain(v) for k, v in value.items()}
    if isinstance(value, (str, int, float, bool, type(None), bytes)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "__self__") and hasattr(value, "__func__"):  # a new object per access
        return ("method", id(value.__self__), value.__func__.__qualname__)
    return (type(value).__name__, id(value))


def _record(route: BaseRoute) -> Any:
    async def handle(scope: dict[str, Any], receive: Any, send: Any) -> None:
        methods = getattr(route, "methods", None)
        routed = {key: _plain(value) for key, value in scope.items() if key not in _PER_REQUEST}
        # FastAPI's scratch dict, made empty by the first included router the match tries:
        # the linear match may try one where the index skips it. Its entries must agree.
        routed.setdefault("fastapi", {})
        body = json.dumps(
            {
                "route": id(route),
                "path": getattr(route, "path", None),
                "method_allowed": methods is None or scope.get("method") in methods,
                "scope": routed,
            },
            default=repr,
            sort_keys=True,
        ).encode()
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 4000, "reason": body.decode()[:100]})
            return
        await send({"type": "http.response.start", "status": 299, "headers": []})
        await send({"type": "http.response.body", "body": body})

    return handle


async def _run(app: FastAPI, scope: dict[str, Any], *, indexed: bool) -> list[Message]:
    index = _index(app)
    app.router.middleware_stack = index if indexed else app.router.app
    sent: list[Message] = []

    received = 0

    async def receive() -> Message:
        nonlocal received
        received += 1
        if received > 1:  # a client that stays connected until the answer is sent
            await asyncio.Event().wait()
        if scope["type"] == "websocket":
            return {"type": "websocket.connect"}
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(dict(message))

    try:
        await app(dict(scope, state={}), receive, send)
    finally:
        app.router.middleware_stack = index
    for message in sent:  # the request ID is random per request
        if message["type"] == "http.response.start":
            message["headers"] = [h for h in message["headers"] if h[0] != b"x-request-id"]
    return sent


async def _same_routing(app: FastAPI, scope: dict[str, Any]) -> list[Message]:
    with_index = await _run(app, scope, indexed=True)
    without = await _run(app, scope, indexed=False)
    assert with_index == without, (scope["method"], scope["path"])
    return with_index


@pytest.fixture
def recorded(app: FastAPI, monkeypatch: pytest.MonkeyPatch) -> FastAPI:
    for route, _ in _leaf_routes(app):
        monkeypatch.setattr(route, "handle", _record(route))
    return app


async def test_every_route_and_method_routes_as_without_the_index(recorded: FastAPI) -> None:
    requests = _requests(recorded)
    assert len(requests) > 1000
    outcomes: set[int] = set()
    for method, path in requests:
        sent = await _same_routing(recorded, _scope(method, path))
        outcomes.add(sent[0].get("status", 0))
    # Routed (299), redirected to the other slash form (307) and not found (404) all occur.
    assert {299, 307, 404} <= outcomes


async def test_each_route_is_reached_with_its_parameters(recorded: FastAPI) -> None:
    for route, path_format in _leaf_routes(recorded):
        if not isinstance(route, APIRoute) or not path_format:
            continue
        method = sorted(route.methods or {"GET"})[0]
        sent = await _same_routing(recorded, _scope(method, _concrete(path_format)))
        answer = json.loads(sent[1]["body"])
        # The first route of the table matching the path and method wins, as it did before.
        assert answer["method_allowed"], path_format
        params = answer["scope"]["path_params"]
        assert set(params) == set(route.param_convertors), path_format


async def test_real_answers_for_missing_routes_methods_and_slashes(app: FastAPI) -> None:
    for method, path in [
        ("GET", "/v1/no-such-thing"),
        ("DELETE", "/healthz"),
        ("PUT", "/v1/projects"),
        ("GET", "/healthz/"),
        ("GET", "/v1/projects/"),
        ("GET", "/static/does-not-exist.css"),
        ("GET", "/static/../api/app.py"),
        ("GET", "/docs"),
        ("POST", "/openapi.json"),
    ]:
        sent = await _same_routing(app, _scope(method, path))
        assert sent[0]["status"] in {200, 307, 404, 405}, (method, path, sent[0]["status"])


async def test_static_files_of_the_console_are_served_through_the_index(app: FastAPI) -> None:
    mount = next(r for r in app.routes if getattr(r, "path", None) == "/static")
    directory = Path(mount.app.directory)  # type: ignore[attr-defined]
    name = next(p for p in directory.rglob("*") if p.is_file()).relative_to(directory)
    sent = await _same_routing(app, _scope("GET", f"/static/{name}"))
    assert sent[0]["status"] == 200


async def test_root_path_and_websocket_scopes(recorded: FastAPI) -> None:
    for method, path in _requests(recorded)[::7]:
        await _same_routing(recorded, _scope(method, path, root_path="/behind-proxy"))
    for path in ["/v1/projects", f"/v1/runs/{uuid.UUID(int=7)}/logs", "/nowhere", "/"]:
        await _same_routing(recorded, _scope("GET", path, kind="websocket"))


async def test_the_index_narrows_the_table(app: FastAPI) -> None:
    index = _index(app)
    narrowed = index.candidates("/v1/projects/" + str(uuid.UUID(int=7)))
    assert narrowed is not None
    assert 0 < len(narrowed) < len(app.routes)
    assert path_key("/v1/projects/x/y") == ("v1", "projects")
    assert index.candidates("/v1/unknown-segment/x") is None  # the whole table decides


async def test_a_route_added_or_moved_after_start_is_routed(recorded: FastAPI) -> None:
    project = f"/v1/projects/{uuid.UUID(int=7)}"
    first = await _same_routing(recorded, _scope("GET", project))  # the index is built and used
    assert first[0]["status"] == 299
    late = APIRouter(prefix="/v1/projects")

    @late.get("/late/{n:int}")
    async def late_route(n: int) -> dict[str, int]:
        return {"n": n}

    @late.get("/{project_id}")
    async def shadowing(project_id: str) -> dict[str, str]:
        return {"late": project_id}

    recorded.include_router(late)
    sent = await _same_routing(recorded, _scope("GET", "/v1/projects/late/41"))
    assert sent[0]["status"] == 200 and json.loads(sent[1]["body"]) == {"n": 41}
    # Included last, the shadowing route loses to the project route; moved first, it wins.
    assert (await _same_routing(recorded, _scope("GET", project)))[0]["status"] == 299
    recorded.router.routes.insert(0, recorded.router.routes.pop())
    sent = await _same_routing(recorded, _scope("GET", project))
    assert json.loads(sent[1]["body"]) == {"late": str(uuid.UUID(int=7))}


async def test_concurrent_requests_share_one_index(recorded: FastAPI) -> None:
    paths = [p for _, p in _requests(recorded)[:300]]
    scopes = [_scope("GET", p) for p in paths]
    together = await asyncio.gather(*(_run(recorded, s, indexed=True) for s in scopes))
    one_by_one = [await _run(recorded, s, indexed=False) for s in scopes]
    assert together == one_by_one
