"""Where an action came from (client address, user agent, request and correlation IDs), as the
transport saw it; recorded with audit rows and sessions."""

from __future__ import annotations

from dataclasses import dataclass

IP_MAX = 45
CORRELATION_ID_MAX = 255


@dataclass(frozen=True)
class Origin:
    ip: str | None = None
    user_agent: str | None = None
    request_id: str | None = None
    correlation_id: str | None = None

    @classmethod
    def of(
        cls,
        *,
        ip: str | None,
        user_agent: str | None,
        request_id: str | None,
        correlation_id: str | None,
    ) -> Origin:
        """Bounded to the columns' sizes; an empty correlation ID counts as none."""
        return cls(
            ip=ip[:IP_MAX] if ip else None,
            user_agent=user_agent,
            request_id=request_id,
            correlation_id=(correlation_id or "")[:CORRELATION_ID_MAX] or None,
        )


SYSTEM = Origin()
