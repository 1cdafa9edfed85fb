"""Reads the account e-mails the API wrote to its outbox directory (the built-in delivery)."""

from __future__ import annotations

import re
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

_TOKEN = re.compile(r"[?&]token=([A-Za-z0-9_\-]+)")


def outbox(app: Any) -> Path:
    directory: Path = app.state.mailer.directory
    return directory


def messages_to(app: Any, email: str) -> list[EmailMessage]:
    """Messages addressed to `email`, oldest first (file names start with a UTC timestamp)."""
    directory = outbox(app)
    if not directory.exists():
        return []
    found: list[EmailMessage] = []
    for path in sorted(directory.glob("*.eml")):
        message = message_from_bytes(path.read_bytes(), policy=default_policy)
        assert isinstance(message, EmailMessage)
        # The raw header: other tests mail hostile addresses that the parsed form refuses.
        raw_to = next((v for k, v in message.raw_items() if k.lower() == "to"), "")
        if raw_to.strip().lower() == email.lower():
            found.append(message)
    return found


def body(message: EmailMessage) -> str:
    part = message.get_body(("plain",))
    assert part is not None
    return str(part.get_content())


def tokens_sent_to(app: Any, email: str) -> list[str]:
    """Every set-password/reset token mailed to `email`, oldest first."""
    return [match for m in messages_to(app, email) for match in _TOKEN.findall(body(m))]


def latest_token(app: Any, email: str) -> str:
    tokens = tokens_sent_to(app, email)
    assert tokens, f"no link was mailed to {email}"
    return tokens[-1]
