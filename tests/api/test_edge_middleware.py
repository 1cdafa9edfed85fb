"""The one edge middleware (api/edge.py) keeps what the five layers it replaced did, in their
order: security headers on every answer, a request ID (hostile ones replaced), the body limit
(declared and streamed), the latency histogram, one rerun of a read whose connection was lost,
and a problem document instead of a bare crash."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from api.edge import ApiEdgeMiddleware
from api.errors import CONNECTION_LOST_STATE, install_error_handlers
from api.metrics.instrumentation import REQUEST_SECONDS
from api.middleware import current_request_id

LIMIT = 64


def edge_app(runs: list[str], *, always_https: bool = False) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/flaky/{name}")
    async def flaky(name: str, request: Request) -> JSONResponse:
        runs.append(name)
        if runs.count(name) == 1:  # the first run met a connection PostgreSQL had dropped
            request.scope["state"][CONNECTION_LOST_STATE] = True
            return JSONResponse({"detail": "lost"}, status_code=503)
        return JSONResponse({"name": name, "request_id": current_request_id()})

    @app.post("/echo")
    async def echo(request: Request) -> JSONResponse:
        runs.append("echo")
        return JSONResponse({"size": len(await request.body())})

    @app.get("/crash")
    async def crash() -> JSONResponse:
        raise RuntimeError("boom in the middle of a request")

    @app.get("/slow")
    async def slow() -> JSONResponse:
        await asyncio.sleep(0.01)  # lets the concurrent requests interleave
        return JSONResponse({"request_id": current_request_id()})

    app.add_middleware(
        ApiEdgeMiddleware,
        max_bytes=LIMIT,
        path_limits={"/big/": LIMIT * 10},
        docs_paths={"/docs"},
        always_https=always_https,
    )
    return app


def client(app: FastAPI, base: str = "http://edge") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url=base)


def assert_edge_headers(response: httpx.Response) -> None:
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["content-security-policy"].startswith("default-src 'none'")
    assert len(response.headers.get_list("x-request-id")) == 1


def observed(route: str, status: str) -> float:
    labels = {"method": "GET", "route": route, "status": status}
    return float(REQUEST_SECONDS.labels(**labels)._sum.get())


async def test_hostile_request_ids_are_replaced_and_valid_ones_echoed() -> None:
    async with client(edge_app([])) as http:
        echoed = await http.get("/slow", headers={"X-Request-ID": "trace-1.2:3"})
        assert echoed.headers["x-request-id"] == "trace-1.2:3"
        assert echoed.json()["request_id"] == "trace-1.2:3"
        for hostile in (b"a b", b"x" * 129, b"<script>", "é".encode(), b"a\x00b"):
            answer = await http.get("/slow", headers={b"X-Request-ID": hostile})
            assert_edge_headers(answer)
            assert answer.headers["x-request-id"].encode() != hostile
            assert len(answer.headers["x-request-id"]) == 32
            assert "strict-transport-security" not in answer.headers


async def test_concurrent_requests_each_keep_their_own_id() -> None:
    async with client(edge_app([])) as http:
        answers = await asyncio.gather(*(http.get("/slow") for _ in range(30)))
    ids = [a.headers["x-request-id"] for a in answers]
    assert len(set(ids)) == 30
    assert all(a.json()["request_id"] == a.headers["x-request-id"] for a in answers)


async def test_https_answers_carry_hsts() -> None:
    async with client(edge_app([], always_https=True)) as http:
        assert "max-age" in (await http.get("/slow")).headers["strict-transport-security"]
    async with client(edge_app([]), base="https://edge") as http:
        assert "max-age" in (await http.get("/slow")).headers["strict-transport-security"]


async def test_bodies_over_the_limit_are_refused_declared_or_streamed() -> None:
    runs: list[str] = []
    async with client(edge_app(runs)) as http:
        declared = await http.post("/echo", content=b"x" * (LIMIT + 1))
        assert declared.status_code == 413
        assert_edge_headers(declared)
        assert runs == []  # refused before the endpoint ran

        async def lying_chunks() -> AsyncIterator[bytes]:
            for _ in range(10):
                yield b"y" * 16

        streamed = await http.post("/echo", content=lying_chunks())
        assert streamed.status_code == 413
        assert_edge_headers(streamed)
        assert streamed.headers["content-type"].startswith("application/problem+json")
        ok = await http.post("/echo", content=b"z" * LIMIT)
        assert ok.status_code == 200 and ok.json() == {"size": LIMIT}


async def test_a_crash_is_a_problem_document_counted_as_500() -> None:
    before = observed("/crash", "500")
    async with client(edge_app([])) as http:
        answer = await http.get("/crash")
    assert answer.status_code == 500
    assert_edge_headers(answer)
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert "boom" not in answer.text
    assert observed("/crash", "500") > before


async def test_a_read_on_a_lost_connection_runs_once_more_and_is_counted_once() -> None:
    runs: list[str] = []
    before_ok, before_lost = observed("/flaky/{name}", "200"), observed("/flaky/{name}", "503")
    async with client(edge_app(runs)) as http:
        answer = await http.get("/flaky/a")
    assert answer.status_code == 200
    assert answer.json()["name"] == "a"
    assert_edge_headers(answer)
    assert runs == ["a", "a"]
    assert observed("/flaky/{name}", "200") > before_ok
    assert observed("/flaky/{name}", "503") == before_lost  # the held answer was never sent
