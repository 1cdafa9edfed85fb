"""A refusal for a plan limit (402) also announces `billing.limit_reached` to the organization,
after the answer is sent (a background task), so the refusal is never slower or different."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.background import BackgroundTask

from api.errors import problem_response
from core.notifications.emit import emit
from core.notifications.sources import limit_event
from core.principal import Principal
from forgeline.errors import PaymentRequired
from forgeline.settings import Settings

log = logging.getLogger("forgeline.notifications")


async def _announce(request: Request, principal: Principal, exc: PaymentRequired) -> None:
    try:
        settings: Settings = request.app.state.settings
        client = await request.app.state.temporal.get()
        event = limit_event(
            settings,
            principal.organization_id,
            exc.detail,
            dict(exc.extra),
            actor_user_id=principal.user_id,
            month=datetime.now(UTC).strftime("%Y-%m"),
        )
        await emit(client, settings, event)
    except Exception:
        log.warning("plan limit of %s not announced", principal.organization_id, exc_info=True)


async def payment_required(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, PaymentRequired)
    response = problem_response(
        request,
        status=exc.status_code,
        detail=exc.detail,
        slug=exc.type_slug,
        title=exc.title,
        extra=exc.extra,
    )
    principal = getattr(request.state, "principal", None)
    if isinstance(principal, Principal) and exc.extra.get("limit"):
        response.background = BackgroundTask(_announce, request, principal, exc)
    return response


def install_limit_announcements(app: FastAPI) -> None:
    app.add_exception_handler(PaymentRequired, payment_required)
