"""What an account use case takes from the running process besides the database session: where
the call came from, the settings, the sign-in throttles and the mailer."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime

from core.accounts import throttle
from core.accounts.throttle import AuthThrottles
from core.audit.origin import Origin
from forgeline.settings import Settings
from infra.mail import AccountMail, Mailer

logger = logging.getLogger("forgeline.accounts")

DEFAULT_PUBLIC_URL = "http://localhost:8000"


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class AccountContext:
    """Each part may be absent (a bare setup, a script): no throttles means no sign-in limits,
    no mailer means mails are logged as not sent, no settings means the development key."""

    origin: Origin = field(default_factory=Origin)
    settings: Settings | None = None
    throttles: AuthThrottles | None = None
    mailer: Mailer | None = None

    @property
    def address_key(self) -> str:
        """The client address as the per-address limits count it."""
        return throttle.client_address_key(self.origin.ip)

    def reset_url(self, raw_token: str) -> str:
        base = self.settings.public_base_url.rstrip("/") if self.settings else DEFAULT_PUBLIC_URL
        return f"{base}/reset-password?token={raw_token}"

    async def send(self, mail: AccountMail) -> None:
        if self.mailer is None:
            logger.warning("no mailer configured; a %r e-mail was not sent", mail.subject)
            return
        await self.mailer.send(mail)
