"""Delivery of account e-mails (set-password and reset links, invitations) outside the database.

Links carry a bearer token, so they never go into a table: the database keeps only the token's
SHA-256. The built-in delivery is an outbox directory of RFC 5322 `.eml` files (mode 0600) under
the data directory, which an operator hands to their mail system (or reads, in development).
A message is written before the request commits: if the commit fails, the link in it is dead
and the user asks again; no link ever works without its committed token row.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path
from typing import Protocol

SENDER = "Forgeline <no-reply@forgeline.local>"


@dataclass(frozen=True)
class AccountMail:
    to: str
    subject: str
    body: str


class Mailer(Protocol):
    async def send(self, mail: AccountMail) -> None: ...


class OutboxMailer:
    """One `.eml` file per message in `directory`, written atomically and private to the owner."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    async def send(self, mail: AccountMail) -> None:
        await asyncio.to_thread(self._write, mail)

    def _write(self, mail: AccountMail) -> None:
        message = EmailMessage(policy=default_policy)
        message["From"] = SENDER
        message["To"] = mail.to
        message["Subject"] = mail.subject
        message["Date"] = datetime.now(UTC).strftime("%a, %d %b %Y %H:%M:%S +0000")
        message.set_content(mail.body)
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
        name = f"{stamp}-{secrets.token_hex(6)}.eml"
        tmp = self.directory / f".{name}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(message.as_bytes())
        os.replace(tmp, self.directory / name)
