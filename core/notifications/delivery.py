"""One try of one delivery: read its target (and any secret) from the database, send it, and log
the attempt. The secret of a webhook endpoint and the Slack URL are decrypted here only; they
never enter a workflow payload."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.models.accounts import User
from db.models.notifications import (
    NotificationAttempt,
    NotificationChannelSettings,
    NotificationDelivery,
    NotificationEvent,
    WebhookEndpoint,
)
from db.session import session_scope
from forgeline.crypto import decrypt_str
from forgeline.outbound_urls import UnsafeOutboundUrl
from forgeline.settings import Settings
from forgeline.standard_webhooks import signed_headers
from forgeline.statuses.notifications import DeliveryChannel, DeliveryStatus
from forgeline.url_safety import Resolver
from infra.mail import AccountMail, Mailer
from infra.outbound_http import PostResult, post_checked

USER_AGENT = "Forgeline-Webhooks/1.0"


class DeliveryGone(Exception):
    """The delivery (or its endpoint) no longer exists."""


class DeliveryRefused(Exception):
    """The target cannot be sent to, now or by retrying (unsafe URL, no address, disabled)."""


class DeliveryFailed(Exception):
    """The receiver did not take it this time; retried with backoff."""


@dataclass(frozen=True)
class DeliveryContext:
    settings: Settings
    session_maker: async_sessionmaker[AsyncSession]
    mailer: Mailer
    resolver: Resolver | None = None

    @property
    def allow_loopback(self) -> bool:
        return self.settings.environment != "production"


def webhook_body(event: NotificationEvent) -> bytes:
    """The Standard Webhooks payload shape: type, timestamp, data (the same bytes every try)."""
    data = {
        **event.data,
        "event_id": str(event.id),
        "organization_id": str(event.organization_id),
        "title": event.title,
        "body": event.body,
    }
    document = {
        "type": event.event_type,
        "timestamp": event.occurred_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "data": data,
    }
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def message_id(delivery_id: uuid.UUID) -> str:
    """Stable across retries and redeliveries, so a receiver can drop duplicates."""
    return f"msg_{delivery_id.hex}"


def _link(event: NotificationEvent) -> str:
    url = event.data.get("url")
    return f"\n\n{url}" if isinstance(url, str) and url else ""


@dataclass(frozen=True)
class Outgoing:
    """What one try sends, read from the database before any connection is opened: a POST
    (webhook, Slack) or a mail. Holds a decrypted secret: lives only inside the activity."""

    url: str | None = None
    body: bytes = b""
    headers: dict[str, str] | None = None
    mail: AccountMail | None = None


async def _prepare(
    ctx: DeliveryContext,
    session: AsyncSession,
    delivery: NotificationDelivery,
    event: NotificationEvent,
) -> Outgoing:
    if delivery.channel == DeliveryChannel.WEBHOOK:
        endpoint = (
            await session.get(WebhookEndpoint, delivery.endpoint_id)
            if delivery.endpoint_id
            else None
        )
        if endpoint is None:
            raise DeliveryGone("the webhook endpoint was deleted")
        if not endpoint.enabled:
            raise DeliveryRefused("the webhook endpoint is disabled")
        body = webhook_body(event)
        secret = decrypt_str(endpoint.secret_encrypted, ctx.settings)
        # Signed at send time: the timestamp is this try's.
        signed = signed_headers(secret, message_id(delivery.id), int(time.time()), body)
        headers = {**signed.as_dict(), "content-type": "application/json"}
        return Outgoing(url=endpoint.url, body=body, headers=headers)
    if delivery.channel == DeliveryChannel.SLACK:
        encrypted = await session.scalar(
            select(NotificationChannelSettings.slack_webhook_url_encrypted).where(
                NotificationChannelSettings.organization_id == delivery.organization_id
            )
        )
        if not encrypted:
            raise DeliveryRefused("the organization has no Slack webhook any more")
        text = f"*{event.title}*\n{event.body}{_link(event)}"
        return Outgoing(
            url=decrypt_str(encrypted, ctx.settings),
            body=json.dumps({"text": text}).encode(),
            headers={"content-type": "application/json"},
        )
    address = await session.scalar(
        select(User.email).where(User.id == delivery.user_id, User.is_active.is_(True))
    )
    if not address:
        raise DeliveryRefused("the member has no active account with an e-mail address")
    text = f"{event.body}{_link(event)}\n"
    return Outgoing(mail=AccountMail(to=address, subject=event.title, body=text))


async def _transmit(ctx: DeliveryContext, outgoing: Outgoing, timeout: float) -> PostResult:
    if outgoing.url is not None:
        return await post_checked(
            outgoing.url,
            outgoing.body,
            {**(outgoing.headers or {}), "user-agent": USER_AGENT},
            allow_loopback=ctx.allow_loopback,
            timeout_seconds=timeout,
            resolver=ctx.resolver,
        )
    assert outgoing.mail is not None
    started = time.monotonic()
    try:
        await ctx.mailer.send(outgoing.mail)
    except Exception as exc:  # any SMTP or network error: this try failed, the next may not
        elapsed = int((time.monotonic() - started) * 1000)
        return PostResult(None, None, f"{type(exc).__name__}: {exc}"[:500], elapsed)
    return PostResult(250, None, None, int((time.monotonic() - started) * 1000))


async def _log_attempt(
    session: AsyncSession, delivery_id: uuid.UUID, attempt_key: str, result: PostResult
) -> None:
    inserted = await session.scalar(
        insert(NotificationAttempt)
        .values(
            delivery_id=delivery_id,
            attempt_key=attempt_key,
            succeeded=result.ok,
            status_code=result.status_code,
            error=result.error,
            response_excerpt=result.excerpt,
            duration_ms=result.duration_ms,
        )
        .on_conflict_do_nothing(index_elements=["attempt_key"])
        .returning(NotificationAttempt.id)
    )
    values: dict[str, Any] = {
        "last_status_code": result.status_code,
        "last_error": result.error,
    }
    if inserted is not None:
        values["attempt_count"] = NotificationDelivery.attempt_count + 1
    if result.ok:
        values |= {"status": DeliveryStatus.DELIVERED, "delivered_at": datetime.now(UTC)}
    await session.execute(
        update(NotificationDelivery).where(NotificationDelivery.id == delivery_id).values(values)
    )


async def attempt_delivery(
    ctx: DeliveryContext, delivery_id: str, attempt_key: str, timeout: float
) -> None:
    """Send once; raise DeliveryFailed (retry), DeliveryRefused or DeliveryGone (do not)."""
    key = uuid.UUID(delivery_id)
    refused: Exception | None = None
    # The session is closed before anything is sent: no pooled connection waits on a receiver.
    async with ctx.session_maker() as session:
        delivery = await session.get(NotificationDelivery, key)
        if delivery is None:
            raise DeliveryGone(f"delivery {delivery_id} does not exist")
        if delivery.status == DeliveryStatus.DELIVERED:
            return
        event = await session.get_one(NotificationEvent, delivery.event_id)
        try:
            outgoing: Outgoing | None = await _prepare(ctx, session, delivery, event)
        except DeliveryRefused as exc:
            outgoing, refused = None, exc
    if outgoing is None:
        result = PostResult(None, None, f"refused: {refused}", 0)
    else:
        try:
            result = await _transmit(ctx, outgoing, timeout)
        except UnsafeOutboundUrl as exc:
            result = PostResult(None, None, f"refused: {exc.detail}", 0)
            refused = DeliveryRefused(str(exc.detail))
    async with session_scope(ctx.session_maker) as session:
        await _log_attempt(session, key, attempt_key, result)
    if refused is not None:
        raise refused
    if not result.ok:
        raise DeliveryFailed(result.error or "not delivered")


async def mark_failed(session: AsyncSession, delivery_id: str, error: str) -> None:
    await session.execute(
        update(NotificationDelivery)
        .where(
            NotificationDelivery.id == uuid.UUID(delivery_id),
            NotificationDelivery.status != DeliveryStatus.DELIVERED,
        )
        .values(status=DeliveryStatus.FAILED, last_error=error[:1000])
    )
