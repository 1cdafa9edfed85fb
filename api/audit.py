"""The HTTP side of the audit trail: a request's origin (client address, user agent, request
and correlation IDs), which endpoints pass to core.audit.service.write_audit."""

from __future__ import annotations

from fastapi import Request

from core.audit.origin import Origin


def origin_of(request: Request | None) -> Origin:
    if request is None:
        return Origin()
    return Origin.of(
        ip=request.client.host if request.client is not None else None,
        user_agent=request.headers.get("user-agent"),
        request_id=getattr(request.state, "request_id", None),
        correlation_id=request.headers.get("x-correlation-id"),
    )
