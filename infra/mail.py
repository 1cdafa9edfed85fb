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

from forgeline.settings import Settings

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


@dataclass(frozen=True)
class SmtpServer:
    host: str
    port: int = 587
    username: str | None = None
    password: str | None = None
    # STARTTLS after connecting (port 587), or TLS from the first byte (port 465).
    starttls: bool = True
    implicit_tls: bool = False
    sender: str = SENDER
    timeout_seconds: float = 30.0


class SmtpMailer:
    """Sends each message over SMTP (aiosmtplib); an error is the caller's to retry."""

    def __init__(self, server: SmtpServer) -> None:
        self.server = server

    async def send(self, mail: AccountMail) -> None:
        import aiosmtplib

        message = EmailMessage(policy=default_policy)
        message["From"] = self.server.sender
        message["To"] = mail.to
        message["Subject"] = mail.subject
        message["Date"] = datetime.now(UTC).strftime("%a, %d %b %Y %H:%M:%S +0000")
        message.set_content(mail.body)
        await aiosmtplib.send(
            message,
            hostname=self.server.host,
            port=self.server.port,
            username=self.server.username,
            password=self.server.password,
            start_tls=self.server.starttls and not self.server.implicit_tls,
            use_tls=self.server.implicit_tls,
            timeout=self.server.timeout_seconds,
        )


def mailer_for(settings: Settings) -> Mailer:
    """SMTP when a host is configured, else the outbox directory under the data directory."""
    if not settings.smtp_host:
        return OutboxMailer(settings.data_dir / "outbox")
    return SmtpMailer(
        SmtpServer(
            host=settings.smtp_host,
            port=settings.smtp_port,
            username=settings.smtp_username,
            password=settings.smtp_password.get_secret_value() if settings.smtp_password else None,
            starttls=settings.smtp_starttls,
            implicit_tls=settings.smtp_implicit_tls,
            sender=settings.mail_from,
            timeout_seconds=settings.notification_request_timeout_seconds,
        )
    )
