"""Sign-ups from the CLI come from 127.0.0.1, whose allowance (10 an hour) every test that signs
up through the real API server shares: a test gives itself a fresh one first."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete

from core.accounts import throttle
from db.models.accounts import AuthThrottle
from db.session import session_scope


async def fresh_signup_allowance(session_maker: Any) -> None:
    subject = throttle.subject_digest(throttle.client_address_key("127.0.0.1"))
    async with session_scope(session_maker) as session:
        await session.execute(
            delete(AuthThrottle).where(
                AuthThrottle.scope == throttle.SIGNUP_PER_ADDRESS.scope,
                AuthThrottle.subject == subject,
            )
        )
