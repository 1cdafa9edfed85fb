"""Outgoing notifications: the events that happened, the organization's webhook endpoints and
Slack channel, per-user and per-organization preferences, and every delivery with its attempts."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from db.base import Base, Timestamps, UUIDPrimaryKey
from db.models.columns import TZ_DATETIME, check_in, created_at_column, json_array, json_object
from forgeline.statuses.notifications import DeliveryChannel, DeliveryStatus

DELIVERY_CHANNELS = tuple(DeliveryChannel)
DELIVERY_STATUSES = tuple(DeliveryStatus)


class NotificationEvent(UUIDPrimaryKey, Base):
    """One thing that happened (a run failed, an invoice was issued), recorded once per key."""

    __tablename__ = "notification_events"

    organization_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE")
    )
    # The event's identity (`run.failed:<run id>`): emitting it twice records it once.
    event_key: Mapped[str] = mapped_column(String(255), unique=True)
    event_type: Mapped[str] = mapped_column(String(64))
    title: Mapped[str] = mapped_column(String(255))
    body: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any]] = json_object()
    occurred_at: Mapped[datetime] = mapped_column(TZ_DATETIME)
    created_at: Mapped[datetime] = created_at_column()

    __table_args__ = (Index(None, "organization_id", "created_at"),)


class WebhookEndpoint(UUIDPrimaryKey, Timestamps, Base):
    """An organization's receiver of signed event deliveries (Standard Webhooks)."""

    __tablename__ = "webhook_endpoints"

    organization_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    url: Mapped[str] = mapped_column(String(2048))
    description: Mapped[str | None] = mapped_column(String(255))
    # Fernet-encrypted `whsec_...`; shown once when the endpoint is created.
    secret_encrypted: Mapped[str] = mapped_column(Text)
    # Event types delivered here; empty means every type.
    event_types: Mapped[list[Any]] = json_array()
    enabled: Mapped[bool] = mapped_column(Boolean, default=True, server_default=text("true"))
    created_by: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL")
    )


class NotificationChannelSettings(UUIDPrimaryKey, Timestamps, Base):
    """Channels an organization has besides webhook endpoints (a Slack incoming webhook)."""

    __tablename__ = "notification_channel_settings"

    organization_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), unique=True
    )
    # The Slack URL is itself the credential: kept encrypted, shown only masked.
    slack_webhook_url_encrypted: Mapped[str | None] = mapped_column(Text)


class NotificationPreference(UUIDPrimaryKey, Timestamps, Base):
    """Overrides of the default channels per event type: `{event_type: {channel: bool}}`; the
    organization's row has no user (webhook, slack), a member's row names them (in_app, email)."""

    __tablename__ = "notification_preferences"

    organization_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE")
    )
    user_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    settings: Mapped[dict[str, Any]] = json_object()

    __table_args__ = (
        Index(
            "uq_notification_preferences_member",
            "organization_id",
            "user_id",
            unique=True,
            postgresql_where=text("user_id IS NOT NULL"),
        ),
        Index(
            "uq_notification_preferences_organization",
            "organization_id",
            unique=True,
            postgresql_where=text("user_id IS NULL"),
        ),
    )


class NotificationDelivery(UUIDPrimaryKey, Timestamps, Base):
    """One event to one channel target (an endpoint, a user's address, the Slack channel)."""

    __tablename__ = "notification_deliveries"

    organization_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE")
    )
    event_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("notification_events.id", ondelete="CASCADE")
    )
    channel: Mapped[str] = mapped_column(String(20))
    endpoint_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("webhook_endpoints.id", ondelete="CASCADE")
    )
    user_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    # Which target of the channel: the endpoint or user id, or "slack".
    target: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(20), default="pending", server_default="pending")
    attempt_count: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    redeliveries: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    delivered_at: Mapped[datetime | None] = mapped_column(TZ_DATETIME)

    __table_args__ = (
        UniqueConstraint("event_id", "channel", "target"),
        Index(None, "endpoint_id", "created_at"),
        check_in("channel", DELIVERY_CHANNELS),
        check_in("status", DELIVERY_STATUSES),
    )


class NotificationAttempt(UUIDPrimaryKey, Base):
    """One try of one delivery: what the receiver answered, or why nothing was sent."""

    __tablename__ = "notification_attempts"

    delivery_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("notification_deliveries.id", ondelete="CASCADE")
    )
    # `<workflow id>:<activity attempt>`: a retried write of the same try records it once.
    attempt_key: Mapped[str] = mapped_column(String(255), unique=True)
    succeeded: Mapped[bool] = mapped_column(Boolean)
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    response_excerpt: Mapped[str | None] = mapped_column(Text)
    duration_ms: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    created_at: Mapped[datetime] = created_at_column()

    __table_args__ = (Index(None, "delivery_id", "created_at"),)
