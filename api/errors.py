"""The one place that turns every failure into an application/problem+json response (RFC 9457)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from http import HTTPStatus
from typing import Any

from asyncpg.exceptions import ConnectionDoesNotExistError
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException

from db.session import database_unavailable
from forgeline.errors import DomainError, RateLimited

logger = logging.getLogger("forgeline.api")

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_TYPE_BASE = "https://forgeline.dev/problems/"


class ServiceUnavailable(
    DomainError, status=503, title="Service unavailable", slug="service-unavailable"
):
    """A backing service (Temporal, the database) cannot be reached right now."""

    retry_after = 2


class DatabaseUnavailable(ServiceUnavailable):
    """PostgreSQL refused or dropped a new connection (down, restarting, out of slots)."""

    retry_after = 1


# Set on request.state when a request met a pooled connection the server had dropped; the
# edge middleware (api/edge.py) then runs a GET/HEAD once more instead of sending the 503.
CONNECTION_LOST_STATE = "database_connection_lost"


def database_connection_lost(exc: DBAPIError) -> bool:
    """The statement never reached a live server: SQLAlchemy found the connection closed (and
    invalidated it together with every older pooled connection), or asyncpg lost it."""
    return bool(exc.connection_invalidated) or isinstance(
        exc.orig.__cause__ if exc.orig is not None else None, ConnectionDoesNotExistError
    )


class BodyTooLarge(StarletteHTTPException):
    """Raised while streaming a request body past the configured limit.

    An HTTPException on purpose: FastAPI re-raises those from body parsing instead of
    wrapping them into a generic 400.
    """

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"Request body exceeds the limit of {limit} bytes")


class Problem(BaseModel):
    """The body of every error response (RFC 9457 problem details, plus the request ID)."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None
    request_id: str | None = None


def problems(
    conflict: str | None = None,
    *,
    not_found: str = "Not found (or owned by another organization)",
    invalid: str = "Validation failed",
) -> dict[int | str, dict[str, Any]]:
    """The `responses=` of a router's endpoints: the problem answers it documents."""
    documented: dict[int | str, dict[str, Any]] = {404: {"description": not_found}}
    if conflict is not None:
        documented[409] = {"description": conflict}
    documented[422] = {"description": invalid}
    return documented


def problem_response(
    request: Request | None,
    *,
    status: int,
    detail: str,
    slug: str | None = None,
    title: str | None = None,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> JSONResponse:
    """Build the problem document; every error path of the API ends here.

    `extra` members (a DomainError's keyword arguments, field errors) are JSON-encoded (UUIDs,
    decimals, datetimes); any that would shadow a standard member go under `context` instead.
    """
    phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_BASE + (slug or phrase.lower().replace(" ", "-")),
        "title": title or phrase,
        "status": status,
        "detail": detail,
        "instance": request.url.path if request is not None else None,
        "request_id": getattr(request.state, "request_id", None) if request is not None else None,
    }
    shadowed: dict[str, Any] = {}
    for key, value in jsonable_encoder(extra or {}).items():
        if key in body:
            shadowed[key] = value
        else:
            body[key] = value
    if shadowed:
        body.setdefault("context", shadowed)
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_MEDIA_TYPE)


def _field_errors(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """Location, message and type of each field error; never the input (it may be a password)."""
    return [
        {
            "loc": [str(part) for part in error.get("loc", ())],
            "msg": str(error.get("msg", "")),
            "type": str(error.get("type", "")),
        }
        for error in errors
    ]


async def _domain_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DomainError)
    retry_after = exc.retry_after if isinstance(exc, RateLimited | ServiceUnavailable) else None
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    if exc.status_code == 401:
        headers = {**(headers or {}), "WWW-Authenticate": "Bearer"}
    return problem_response(
        request,
        status=exc.status_code,
        detail=exc.detail,
        slug=exc.type_slug,
        title=exc.title,
        headers=headers,
        extra=exc.extra,
    )


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    if any(error.get("type") == "json_invalid" for error in errors):
        return problem_response(
            request,
            status=400,
            detail="The request body is not valid JSON",
            slug="malformed-json",
            title="Malformed JSON",
            extra={"errors": _field_errors(errors)},
        )
    return problem_response(
        request,
        status=422,
        detail="The request does not match the expected schema",
        slug="validation-failed",
        title="Validation failed",
        extra={"errors": _field_errors(errors)},
    )


async def _http_exception(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    headers = dict(exc.headers) if exc.headers else None
    slug = "payload-too-large" if exc.status_code == 413 else None
    return problem_response(
        request, status=exc.status_code, detail=str(exc.detail), slug=slug, headers=headers
    )


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    """Input the schemas let through but Postgres refuses is still the client's fault:
    SQLSTATE class 22 (data exception: NUL bytes, out-of-range values) is a 422, class 23
    (a unique or foreign-key constraint that lost a race with another request) a 409.
    A connection the server dropped (a restart) is a 503 to retry. Anything else is a bug: a
    500 that says nothing about the internals."""
    assert isinstance(exc, DBAPIError)
    if database_connection_lost(exc):
        logger.warning("database connection lost on %s %s", request.method, request.url.path)
        setattr(request.state, CONNECTION_LOST_STATE, True)
        return _database_retry_later(request, "The database connection was lost; retry the request")
    if database_unavailable(exc):
        return _database_unavailable(request, exc)
    sqlstate = str(getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None) or "")
    if sqlstate.startswith("22"):
        logger.info("database rejected a value (SQLSTATE %s)", sqlstate)
        return problem_response(
            request,
            status=422,
            detail="A value was rejected by the database (invalid characters or out of range)",
            slug="validation-failed",
            title="Validation failed",
        )
    if sqlstate.startswith("23"):
        logger.info("constraint violation (SQLSTATE %s)", sqlstate)
        return problem_response(
            request,
            status=409,
            detail="The request conflicts with existing data",
            slug="conflict",
            title="Conflict",
        )
    return await _unhandled(request, exc)


def unhandled_problem(request: Request | None) -> JSONResponse:
    """A 500 that says nothing about the internals; the traceback goes to the log."""
    return problem_response(
        request,
        status=500,
        detail="An unexpected error occurred; quote the request_id when reporting it",
        slug="internal-error",
    )


def _database_unavailable(request: Request, exc: BaseException) -> JSONResponse:
    """Starting, stopping, out of connection slots, unreachable: the client retries later."""
    logger.warning(
        "database unavailable on %s %s: %s",
        request.method,
        request.url.path,
        exc.__class__.__name__,
    )
    return _database_retry_later(request, "The database is unavailable right now; retry shortly")


def _database_retry_later(request: Request, detail: str) -> JSONResponse:
    """A 503 with the database's Retry-After: nothing the client sent was wrong."""
    return problem_response(
        request,
        status=503,
        detail=detail,
        slug=ServiceUnavailable.type_slug,
        title=ServiceUnavailable.title,
        headers={"Retry-After": str(DatabaseUnavailable.retry_after)},
    )


async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
    # The driver's own errors (a raw connection, a connect refused) never became DBAPIErrors.
    if database_unavailable(exc):
        return _database_unavailable(request, exc)
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return unhandled_problem(request)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(DomainError, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_exception)
    app.add_exception_handler(DBAPIError, _database_error)
    app.add_exception_handler(Exception, _unhandled)


PROBLEM_STATUSES: dict[int, str] = {
    400: "Malformed request (e.g. invalid JSON)",
    401: "Missing, malformed, expired or revoked credentials",
    403: "The credentials lack the required scope or role",
    404: "Not found (or owned by another organization)",
    409: "Conflicts with existing data",
    413: "Request body too large",
    422: "Validation failed",
    429: "Rate limit exceeded (see Retry-After)",
    503: "A backing service (database, Temporal) is unavailable; retry after Retry-After",
}


def install_problem_openapi(app: FastAPI) -> None:
    """Document every error response as application/problem+json with the Problem schema, on
    every operation, so clients and schema-driven tests see what the API really returns."""
    from fastapi.openapi.utils import get_openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components["Problem"] = Problem.model_json_schema()
        problem = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
        for path_item in schema.get("paths", {}).values():
            for operation in path_item.values():
                if not isinstance(operation, dict) or "responses" not in operation:
                    continue
                responses = operation["responses"]
                for code, description in PROBLEM_STATUSES.items():
                    entry = responses.setdefault(str(code), {"description": description})
                    entry["content"] = problem
        components.pop("HTTPValidationError", None)
        components.pop("ValidationError", None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
