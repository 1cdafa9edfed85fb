"""The `forgeline` CLI against a real uvicorn server, and key rotation over encrypted columns."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator

import pytest
from cryptography.fernet import Fernet
from pydantic import SecretStr
from typer.testing import CliRunner

import forgeline.cli as cli
import forgeline.cli.admin as cli_admin
import forgeline.cli.common as cli_common
from db.key_rotation import rotate_encrypted_columns
from db.models.accounts import User
from forgeline.crypto import decrypt_str, encrypt_str
from forgeline.local_paths import organization_roots
from forgeline.settings import Settings
from tests.api_server import ApiServer
from tests.factories import make_org

runner = CliRunner()


@pytest.fixture(scope="module")
def api_url(settings: Settings) -> Iterator[str]:
    server = ApiServer(settings).start()
    yield server.url
    server.stop()


async def invoke(*args: str, key: str | None = None) -> tuple[int, str]:
    env = {"FORGELINE_API_KEY": key} if key else {}
    result = await asyncio.to_thread(runner.invoke, cli.app, list(args), env=env)
    return result.exit_code, result.output


async def test_projects_repos_envs_through_the_api(api_url, settings, session_maker):
    org = await make_org(session_maker)
    # Local repositories are accepted only inside the organization's own local root.
    tmp_path = organization_roots(settings, org.org_id)[0] / uuid.uuid4().hex
    tmp_path.mkdir(parents=True)
    (tmp_path / ".git").mkdir()  # the embedded demo's local repositories (no DNS in tests)
    slug = f"site-{uuid.uuid4().hex[:6]}"
    code, out = await invoke(
        "projects", "create", "My Site", "--slug", slug, "--api-url", api_url, "--json",
        key=org.api_key,
    )  # fmt: skip
    assert code == 0, out
    project = json.loads(out)
    assert project["slug"] == slug

    code, out = await invoke("projects", "list", "--api-url", api_url, key=org.api_key)
    assert code == 0 and slug in out  # rich table

    code, out = await invoke(
        "repos", "connect", slug, str(tmp_path),
        "--provider", "local", "--api-url", api_url, "--json", key=org.api_key,
    )  # fmt: skip
    assert code == 0, out
    assert json.loads(out)["url"] == str(tmp_path)
    code, out = await invoke("repos", "list", "--api-url", api_url, "--json", key=org.api_key)
    assert code == 0 and json.loads(out)[0]["project"] == slug

    code, out = await invoke(
        "envs", "create", slug, "staging", "--type", "staging", "--api-url", api_url, "--json",
        key=org.api_key,
    )  # fmt: skip
    assert code == 0, out
    code, out = await invoke("envs", "list", slug, "--api-url", api_url, "--json", key=org.api_key)
    assert code == 0 and [e["name"] for e in json.loads(out)] == ["staging"]


async def test_cli_reports_problems_readably(api_url, session_maker):
    org = await make_org(session_maker)
    code, out = await invoke(
        "projects", "create", "X", "--type", "mainframe", "--api-url", api_url, key=org.api_key
    )
    assert code == 1 and "HTTP 422" in out and "project_type" in out
    code, out = await invoke("projects", "list", "--api-url", api_url, key="fl_live_nope")
    assert code == 1 and "HTTP 401" in out


async def test_cli_bootstrap_prints_key_once_created(settings, tmp_path, monkeypatch, api_url):
    boot = settings.model_copy(update={"data_dir": tmp_path})
    for module in (cli_admin, cli_common):
        monkeypatch.setattr(module, "get_settings", lambda: boot)
    import core.accounts.bootstrap as bootstrap_module

    monkeypatch.setattr(bootstrap_module, "BOOTSTRAP_ORG_SLUG", f"cli-{uuid.uuid4().hex[:8]}")
    monkeypatch.setattr(
        bootstrap_module, "BOOTSTRAP_OWNER_EMAIL", f"cli-{uuid.uuid4().hex[:8]}@example.com"
    )
    monkeypatch.setattr(
        bootstrap_module.ensure_bootstrap,
        "__kwdefaults__",
        {
            "org_slug": bootstrap_module.BOOTSTRAP_ORG_SLUG,
            "owner_email": bootstrap_module.BOOTSTRAP_OWNER_EMAIL,
        },
    )
    code, out = await invoke("bootstrap", "--json")
    assert code == 0, out
    first = json.loads(out)
    assert first["created"] is True and first["api_key"].startswith("fl_live_")
    code, out = await invoke("bootstrap", "--json")
    second = json.loads(out)
    assert second["created"] is False and second["api_key"] == first["api_key"]
    # Without --api-key the CLI falls back to the bootstrap key.
    code, out = await invoke("projects", "list", "--api-url", api_url, "--json")
    assert code == 0, out


async def test_rotate_keys_reencrypts_under_the_new_key(settings, session_maker):
    old = settings
    new_key = Fernet.generate_key().decode()
    rotated = settings.model_copy(
        update={
            "encryption_keys": SecretStr(new_key + "," + old.encryption_keys.get_secret_value())
        }
    )
    only_new = settings.model_copy(update={"encryption_keys": SecretStr(new_key)})
    user_id = uuid.uuid4()
    async with session_maker() as session:
        session.add(
            User(
                id=user_id,
                email=f"rot-{user_id.hex[:8]}@example.com",
                name="Rot",
                totp_secret_encrypted=encrypt_str("JBSWY3DPEHPK3PXP", old),
            )
        )
        await session.commit()
    counts = await rotate_encrypted_columns(session_maker, rotated, tables={"users"})
    assert counts["users.totp_secret_encrypted"] >= 1
    async with session_maker() as session:
        user = await session.get(User, user_id)
        assert user is not None and user.totp_secret_encrypted
        assert decrypt_str(user.totp_secret_encrypted, only_new) == "JBSWY3DPEHPK3PXP"
    # Put every row back under the session's key so later tests still decrypt.
    back = settings.model_copy(
        update={
            "encryption_keys": SecretStr(old.encryption_keys.get_secret_value() + "," + new_key)
        }
    )
    await rotate_encrypted_columns(session_maker, back, tables={"users"})
