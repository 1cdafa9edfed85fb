"""Cross-tenant matrix generated from the route table: for every /v1 route with an ID in its
path, another organization's admin key gets 404, a random ID gets 404, and the owning
organization does not. A route whose ID parameter has no factory fails the test, so a new
route cannot skip the check (add it in tests/api/tenancy_factories.py)."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest
from fastapi import routing
from fastapi.routing import APIRoute

from tests.api.tenancy_factories import BODIES, EXEMPT, FACTORIES, PATH_VALUES, FactoryContext
from tests.factories import make_org

PARAM = re.compile(r"{([^}:]+)(?::[^}]*)?}")


def is_id_param(name: str) -> bool:
    return name == "id" or name.endswith("_id")


def route_table(app: Any) -> list[tuple[str, str]]:
    """(METHOD, path) for every route the app serves, prefixes applied."""
    table: list[tuple[str, str]] = []
    iter_with_context = getattr(routing, "_iter_routes_with_context", None)
    if iter_with_context is not None:  # FastAPI >= 0.16x keeps included routers lazy
        pairs = [
            (ctx.path if ctx else getattr(route, "path", ""), ctx.methods if ctx else None, route)
            for route, ctx in iter_with_context(app.routes)
        ]
    else:
        pairs = [(getattr(r, "path", ""), None, r) for r in app.routes]
    for path, methods, route in pairs:
        if not isinstance(route, APIRoute):
            continue
        for method in sorted(methods or route.methods or ()):
            if method != "HEAD":
                table.append((method, path))
    return table


def id_routes(app: Any) -> list[tuple[str, str]]:
    return [
        (method, path)
        for method, path in route_table(app)
        if path.startswith("/v1/")
        and any(is_id_param(p) for p in PARAM.findall(path))
        and (method, path) not in EXEMPT
    ]


def fill(path: str, values: dict[str, str]) -> str:
    return PARAM.sub(lambda m: values[m.group(1)], path)


# --------------------------------------------------------------------------- request bodies


def _resolve(schema: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].split("/")[-1]
        schema = spec["components"]["schemas"][name]
    return schema


def example_value(
    schema: dict[str, Any], spec: dict[str, Any], name: str, ids: dict[str, Any]
) -> Any:
    """A minimal value satisfying simple schemas (enums, formats, bounds, required fields)."""
    schema = _resolve(schema, spec)
    if name in ids:
        return str(ids[name])
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            options = [s for s in schema[key] if _resolve(s, spec).get("type") != "null"]
            return example_value(options[0], spec, name, ids) if options else None
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][0]
    if "default" in schema:
        return schema["default"]
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        return {
            prop: example_value(sub, spec, prop, ids)
            for prop, sub in schema.get("properties", {}).items()
            if prop in schema.get("required", [])
        }
    if kind == "array":
        return []
    if kind == "boolean":
        return False
    if kind in ("integer", "number"):
        return schema.get("minimum", 1)
    if schema.get("format") == "uuid":
        return str(uuid.uuid4())
    if schema.get("format") == "email":
        return f"matrix-{uuid.uuid4().hex[:8]}@example.com"
    if schema.get("format") == "date-time":
        return "2030-01-01T00:00:00Z"
    return "matrix-" + uuid.uuid4().hex[: max(1, min(12, schema.get("maxLength", 20) - 7))]


async def request_body(spec: dict[str, Any], method: str, path: str, ctx: FactoryContext) -> Any:
    ids = ctx.ids
    if (method, path) in BODIES:
        body = BODIES[(method, path)]
        return await body(ctx) if callable(body) else body
    operation = spec["paths"].get(path, {}).get(method.lower(), {})
    content = operation.get("requestBody", {}).get("content", {})
    if "application/json" not in content:
        return None
    return example_value(content["application/json"]["schema"], spec, "", ids)


# --------------------------------------------------------------------------- the matrix


async def test_route_table_is_discovered(app) -> None:
    routes = id_routes(app)
    assert ("GET", "/v1/projects/{project_id}") in routes
    assert ("DELETE", "/v1/environments/{environment_id}") in routes


async def test_every_id_param_has_a_factory(app) -> None:
    missing = sorted(
        {
            param
            for _, path in id_routes(app)
            for param in PARAM.findall(path)
            if (is_id_param(param) and param not in FACTORIES)
            or (not is_id_param(param) and param not in PATH_VALUES)
        }
    )
    assert not missing, "; ".join(
        f"add a factory for {p} (tests/api/tenancy_factories.py FACTORIES)"
        if is_id_param(p)
        else f"add a value for {p} (tests/api/tenancy_factories.py PATH_VALUES)"
        for p in missing
    )


async def test_cross_tenant_access_is_404_for_every_id_route(
    app, api_client, session_maker
) -> None:
    owner = await make_org(session_maker)
    intruder = await make_org(session_maker)
    spec = app.openapi()
    failures: list[str] = []
    checked = 0
    for method, path in id_routes(app):
        params = PARAM.findall(path)
        if any(is_id_param(p) and p not in FACTORIES for p in params):
            failures.append(f"{method} {path}: add a factory for the id parameter")
            continue
        ctx = FactoryContext(session_maker=session_maker, org=owner, settings=app.state.settings)
        for param in params:
            if is_id_param(param):
                await ctx.ensure(param)
        values = {p: str(ctx.ids[p]) if is_id_param(p) else PATH_VALUES[p] for p in params}
        url = fill(path, values)
        body = await request_body(spec, method, path, ctx)
        kwargs: dict[str, Any] = {"json": body} if body is not None else {}

        foreign = await api_client.request(method, url, headers=intruder.headers, **kwargs)
        if foreign.status_code != 404:
            failures.append(f"{method} {path}: other tenant got {foreign.status_code}")
        random_values = {p: str(uuid.uuid4()) if is_id_param(p) else PATH_VALUES[p] for p in params}
        random_url = fill(path, random_values)
        missing = await api_client.request(method, random_url, headers=owner.headers, **kwargs)
        if missing.status_code != 404:
            failures.append(f"{method} {path}: random id got {missing.status_code}")
        try:
            own = await api_client.request(method, url, headers=owner.headers, **kwargs)
        except Exception as exc:  # an app crash surfaces here under ASGITransport
            failures.append(f"{method} {path}: the owner's request crashed: {exc!r}")
            continue
        if own.status_code == 404:
            failures.append(f"{method} {path}: the owner got 404 ({own.text[:200]})")
        if own.status_code >= 500:
            failures.append(f"{method} {path}: the owner got {own.status_code}")
        checked += 1
    print(f"\ncross-tenant matrix: {checked} routes checked")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("name", ["project_id", "environment_id"])
async def test_factories_create_rows_in_the_owner_org(app, api_client, session_maker, name) -> None:
    org = await make_org(session_maker)
    ctx = FactoryContext(session_maker=session_maker, org=org)
    object_id = await ctx.ensure(name)
    path = "/v1/projects/{}" if name == "project_id" else "/v1/environments/{}"
    r = await api_client.get(path.format(object_id), headers=org.headers)
    assert r.status_code == 200
