"""`forgeline repos connect` prints the webhook URL and secret once; `forgeline repos webhook`
rotates the secret and prints the new one (through a real API server)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence

import pytest

from forgeline import url_safety
from tests.api.test_app_cli import api_url, invoke  # noqa: F401 - the live API fixture
from tests.factories import make_org


@pytest.fixture(autouse=True)
def public_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    async def resolve(host: str, port: int) -> Sequence[str]:
        return ["140.82.112.3"]  # never contacted

    monkeypatch.setattr(url_safety, "system_resolver", resolve)


async def test_connect_and_rotate_print_the_webhook(api_url, session_maker) -> None:  # noqa: F811
    org = await make_org(session_maker)
    slug = f"hooks-{uuid.uuid4().hex[:6]}"
    code, out = await invoke(
        "projects", "create", "Hooks", "--slug", slug, "--api-url", api_url, key=org.api_key
    )
    assert code == 0, out
    code, out = await invoke(
        "repos", "connect", slug, "https://github.com/acme/widgets.git", "--provider", "github",
        "--api-url", api_url, key=org.api_key,
    )  # fmt: skip
    assert code == 0, out
    assert "/v1/webhooks/github?repository=" in out and "secret: " in out
    first = out.split("secret: ", 1)[1].split()[0]
    code, out = await invoke(
        "repos", "webhook", slug, "--api-url", api_url, "--json", key=org.api_key
    )
    assert code == 0, out
    rotated = json.loads(out)
    assert rotated["secret"] != first
    assert rotated["urls"]["gitlab"].endswith(
        f"/webhooks/gitlab?repository={rotated['repository_id']}"
    )
    code, out = await invoke("repos", "list", "--api-url", api_url, "--json", key=org.api_key)
    assert rotated["secret"] not in out and first not in out
