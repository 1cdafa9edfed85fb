"""Signed deliveries of the GitHub App's webhook (its fixtures are in conftest.py)."""

from __future__ import annotations

import json
import uuid
from typing import Any

from core.integrations.signatures import github_signature

APP_WEBHOOK_SECRET = "app-webhook-" + "s" * 20


def app_delivery(
    event: str, payload: dict[str, Any], *, delivery: str | None = None, secret: str | None = None
) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(payload).encode()
    return body, {
        "Content-Type": "application/json",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
        "X-Hub-Signature-256": github_signature(secret or APP_WEBHOOK_SECRET, body),
    }
