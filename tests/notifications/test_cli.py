"""`forgeline notifications list|read` against the real API (uvicorn on loopback)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from typer.testing import CliRunner

import forgeline.cli as cli
from forgeline.settings import Settings
from tests.api_server import ApiServer
from tests.factories import make_org
from tests.notifications.test_api import add_notifications

runner = CliRunner()


@pytest.fixture(scope="module")
def api_url(settings: Settings) -> Iterator[str]:
    server = ApiServer(settings).start()
    yield server.url
    server.stop()


@pytest.fixture(autouse=True)
def config_home(tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.delenv("FORGELINE_PROFILE", raising=False)


async def invoke(api_url: str, key: str, *args: str) -> tuple[int, str, str]:
    env = {"FORGELINE_API_KEY": key, "FORGELINE_API_URL": api_url, "COLUMNS": "200"}
    result = await asyncio.to_thread(runner.invoke, cli.app, list(args), env=env)
    return result.exit_code, result.stdout, result.stderr


async def test_list_and_read(api_url: str, session_maker: async_sessionmaker[AsyncSession]) -> None:
    org = await make_org(session_maker)
    ids = await add_notifications(session_maker, org, 3)

    code, out, _ = await invoke(api_url, org.api_key, "notifications", "list")
    assert code == 0 and "3 unread" in out and "Run failed #2" in out
    code, out, _ = await invoke(api_url, org.api_key, "notifications", "read", str(ids[0]))
    assert code == 0
    code, out, _ = await invoke(
        api_url, org.api_key, "notifications", "list", "--unread", "--output", "json"
    )
    page = json.loads(out)
    assert code == 0 and page["unread_count"] == 2
    assert str(ids[0]) not in [n["id"] for n in page["items"]]

    code, out, _ = await invoke(api_url, org.api_key, "notifications", "read", "--all")
    assert code == 0 and "2" in out
    code, out, _ = await invoke(api_url, org.api_key, "notifications", "list", "--json")
    assert json.loads(out)["unread_count"] == 0


async def test_hostile_and_unknown_ids(
    api_url: str, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    org = await make_org(session_maker)
    other = await make_org(session_maker)
    [theirs] = await add_notifications(session_maker, other, 1)
    code, _, err = await invoke(api_url, org.api_key, "notifications", "read", str(theirs))
    assert code == 1 and "not found" in err.lower()
    code, _, err = await invoke(api_url, org.api_key, "notifications", "read", "../../etc")
    assert code == 2
    code, _, err = await invoke(api_url, org.api_key, "notifications", "read")
    assert code == 2 and "--all" in err
