"""Schemathesis over the app's own OpenAPI document, through a real uvicorn server, with a valid
admin key: no operation may answer 5xx, for schema-valid or schema-violating input."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import Failure, FailureGroup
from schemathesis.core.result import Ok
from schemathesis.generation.modes import GenerationMode

from tests.api.tenancy_factories import FACTORIES, FactoryContext
from tests.factories import make_org

EXAMPLES_PER_OPERATION = 12
# Operations that end the caller's own credentials would starve the rest of the run.
SKIP = {("POST", "/v1/auth/logout")}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def live_server(settings) -> Iterator[str]:
    """The real app on a real socket in its own thread and event loop (its own engine too)."""
    from api.app import create_app

    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings), host="127.0.0.1", port=port, log_level="warning", lifespan="on"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def fuzz(base_url: str, headers: dict[str, str], ids: dict[str, str]) -> tuple[int, list[str]]:
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    failures: list[str] = []
    calls = 0
    for result in schema.get_all_operations():
        if not isinstance(result, Ok):
            failures.append(f"invalid OpenAPI operation: {result.err()}")
            continue
        operation = result.ok()
        if (operation.method.upper(), operation.path) in SKIP:
            continue
        names = {p.name for p in operation.path_parameters}
        known = {name: ids[name] for name in names if name in ids}
        strategy = st.one_of(
            operation.as_strategy(GenerationMode.POSITIVE, path_parameters=known or None),
            operation.as_strategy(GenerationMode.NEGATIVE, path_parameters=known or None),
        )

        @hypothesis_settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            derandomize=True,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=strategy)
        def check(case: Any) -> None:
            nonlocal calls
            calls += 1
            response = case.call(base_url=base_url, headers=headers, timeout=30)
            try:
                case.validate_response(response, checks=[not_a_server_error])
            except (AssertionError, FailureGroup, Failure):
                op = case.operation
                failures.append(
                    f"{op.method.upper()} {op.path} -> {response.status_code}: "
                    f"{case.as_curl_command(headers=headers, base_url=base_url)}\n"
                    f"    {response.text[:300]}"
                )

        check()
    return calls, failures


async def test_no_server_errors(live_server, session_maker) -> None:
    org = await make_org(session_maker)
    ctx = FactoryContext(session_maker=session_maker, org=org)
    for name in ("project_id", "environment_id"):
        await ctx.ensure(name)
    ids = {name: str(value) for name, value in ctx.ids.items() if name in FACTORIES}
    calls, failures = await asyncio.to_thread(fuzz, live_server, org.headers, ids)
    print(f"\nschemathesis: {calls} calls, {len(failures)} server errors")
    assert calls > 0
    assert not failures, "\n".join(failures[:30])
