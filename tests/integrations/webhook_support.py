"""What the webhook receiver tests share: two commit SHAs, forge hosts that resolve to a public
address (no DNS in the sandbox; never contacted), and a signed GitHub delivery over HTTP."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import pytest

from forgeline import url_safety

SHA1 = "1" * 40
SHA2 = "2" * 40


def resolve_forges_publicly(monkeypatch: pytest.MonkeyPatch) -> None:
    """Forge hosts resolve to a public address, never contacted."""

    async def resolve(host: str, port: int) -> Sequence[str]:
        return ["140.82.112.3"]

    monkeypatch.setattr(url_safety, "system_resolver", resolve)


async def post_github(
    api_client: Any, repository: uuid.UUID | None, body: bytes, headers: dict[str, str]
) -> Any:
    query = f"?repository={repository}" if repository else ""
    return await api_client.post(f"/v1/webhooks/github{query}", content=body, headers=headers)
