"""App plumbing: /healthz, request IDs, problem+json for every kind of bad input, OpenAPI."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict
from sqlalchemy import select

from api.app import create_app
from api.audit import origin_of
from api.deps import SessionDep, TemporalDep
from core.audit.service import write_audit
from db.models.operations import AuditLog
from forgeline.errors import Conflict
from forgeline.settings import Settings

PROBLEM_KEYS = {"type", "title", "status", "detail", "instance", "request_id"}


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    count: int


probe = APIRouter(prefix="/v1/_probe")


@probe.post("/echo")
async def echo(body: Body) -> Body:
    return body


@probe.get("/conflict")
async def conflict() -> None:
    raise Conflict("already there", field="name")


@probe.post("/half-written")
async def half_written(session: SessionDep, request: Request) -> None:
    await write_audit(session, None, origin_of(request), "probe.written", "probe", None)
    await session.flush()  # the row reached the database inside the transaction...
    raise Conflict("...and the failure rolls it back")


@probe.get("/conflict-extras")
async def conflict_extras() -> None:
    raise Conflict("finished", status="succeeded", run_id=uuid.UUID(int=7))


@probe.get("/logs")
async def logs() -> None:
    logging.getLogger("forgeline.test.probe").warning("inside the request")


@probe.get("/temporal")
async def temporal(client: TemporalDep) -> dict[str, str]:
    return {"namespace": client.namespace}


@probe.get("/boom")
async def boom() -> None:
    raise RuntimeError("secret internal detail /etc/passwd")


@pytest.fixture(scope="module")
async def probe_client(settings: Settings):
    app = create_app(settings.model_copy(update={"max_request_body_bytes": 1024}))
    app.include_router(probe)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            yield client


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body.keys() >= PROBLEM_KEYS
    assert body["status"] == status
    assert body["request_id"] == response.headers["x-request-id"]
    return body


async def test_healthz_reports_database_and_temporal(api_client):
    response = await api_client.get("/healthz")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["database"]["ok"] and body["temporal"]["ok"]


async def test_healthz_503_when_temporal_unreachable(settings: Settings):
    from forgeline.embedded.postgres import free_port

    down = settings.model_copy(update={"temporal_address": f"127.0.0.1:{free_port()}"})
    app = create_app(down)
    app.include_router(probe)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            response = await client.get("/healthz")
            needs_temporal = await client.get("/v1/_probe/temporal")
    # Endpoints that need Temporal answer 503 (retry later); the API itself stays up.
    assert_problem(needs_temporal, 503)
    assert response.status_code == 503
    body = response.json()
    assert body["database"]["ok"] is True
    assert body["temporal"]["ok"] is False


async def test_request_id_is_echoed_or_generated(probe_client):
    response = await probe_client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123"
    generated = await probe_client.get("/healthz", headers={"X-Request-ID": "bad id\twith spaces"})
    assert generated.headers["x-request-id"] != "bad id\twith spaces"
    assert len(generated.headers["x-request-id"]) == 32


async def test_malformed_json_is_400_problem(probe_client):
    response = await probe_client.post(
        "/v1/_probe/echo", content=b'{"name": "x", ', headers={"content-type": "application/json"}
    )
    body = assert_problem(response, 400)
    assert body["type"].endswith("/malformed-json")


async def test_wrong_types_and_unknown_fields_are_422_with_field_errors(probe_client):
    response = await probe_client.post("/v1/_probe/echo", json={"name": "x", "count": "many"})
    body = assert_problem(response, 422)
    assert body["errors"][0]["loc"] == ["body", "count"]
    assert "input" not in body["errors"][0]  # inputs may be secrets: never echoed
    extra = await probe_client.post("/v1/_probe/echo", json={"name": "x", "count": 1, "admin": 1})
    body = assert_problem(extra, 422)
    assert body["errors"][0]["type"] == "extra_forbidden"


async def test_oversized_body_is_413_problem(probe_client):
    big = {"name": "x" * 4000, "count": 1}
    body = assert_problem(await probe_client.post("/v1/_probe/echo", json=big), 413)
    assert body["type"].endswith("/payload-too-large")

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(8):
            yield b" " * 512  # no Content-Length: counted while streaming

    streamed = await probe_client.post(
        "/v1/_probe/echo", content=chunks(), headers={"content-type": "application/json"}
    )
    assert_problem(streamed, 413)


async def test_domain_error_maps_to_problem_with_extras(probe_client):
    body = assert_problem(await probe_client.get("/v1/_probe/conflict"), 409)
    assert body["detail"] == "already there"
    assert body["field"] == "name"


async def test_unknown_exception_is_500_without_internals(probe_client):
    body = assert_problem(await probe_client.get("/v1/_probe/boom"), 500)
    assert "passwd" not in str(body) and "RuntimeError" not in str(body)


async def test_unknown_route_is_404_problem(probe_client):
    assert_problem(await probe_client.get("/v1/nope"), 404)


async def test_openapi_lists_accounts_routes(api_client):
    response = await api_client.get("/openapi.json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    for path in ("/v1/auth/signup", "/v1/auth/login", "/v1/me", "/v1/api-keys", "/v1/members"):
        assert path in paths
    assert (await api_client.get("/docs")).status_code == 200


async def test_failed_request_writes_nothing(probe_client, session_maker):
    response = await probe_client.post("/v1/_probe/half-written")
    assert response.status_code == 409
    async with session_maker() as session:
        rows = await session.execute(
            select(AuditLog.id).where(AuditLog.request_id == response.headers["x-request-id"])
        )
        assert rows.first() is None


async def test_openapi_documents_errors_as_problems(api_client):
    schema = (await api_client.get("/openapi.json")).json()
    assert "Problem" in schema["components"]["schemas"]
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    login = schema["paths"]["/v1/auth/login"]["post"]["responses"]
    assert set(login["422"]["content"]) == {"application/problem+json"}
    assert "429" in schema["paths"]["/v1/me"]["get"]["responses"]


async def test_values_postgres_refuses_are_4xx_not_500(api_client):
    response = await api_client.post(
        "/v1/auth/signup",
        json={
            "email": "nul@example.com",
            "password": "a long enough password",
            "name": "bad\u0000name",
            "organization_name": "Nul Org",
        },
    )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")


async def test_domain_error_extras_never_shadow_problem_members(probe_client):
    body = assert_problem(await probe_client.get("/v1/_probe/conflict-extras"), 409)
    assert body["status"] == 409 and body["context"] == {"status": "succeeded"}
    assert body["run_id"] == str(uuid.UUID(int=7))


async def test_log_records_carry_the_request_id(probe_client, caplog):
    with caplog.at_level(logging.WARNING, logger="forgeline.test.probe"):
        response = await probe_client.get("/v1/_probe/logs", headers={"X-Request-ID": "trace-42"})
    assert response.status_code == 200
    records = [r for r in caplog.records if r.name == "forgeline.test.probe"]
    assert records and records[0].request_id == "trace-42"


async def test_temporal_dep_gives_the_client(probe_client):
    response = await probe_client.get("/v1/_probe/temporal")
    assert response.status_code == 200 and response.json() == {"namespace": "default"}
