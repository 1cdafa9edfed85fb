"""Request and response bodies of the notification routes."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from api.pagination import Page


class NotificationOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    organization_id: uuid.UUID | None
    type: str
    title: str
    body: str | None
    data: dict[str, Any]
    read_at: datetime | None
    created_at: datetime


class NotificationPage(Page[NotificationOut]):
    unread_count: int


class MarkedRead(BaseModel):
    marked: int
    unread_count: int


Choices = dict[str, dict[str, bool]]


class PreferencesOut(BaseModel):
    """Per event type, which channels carry it: the caller's own (`in_app`, `email`) and the
    organization's (`webhook`, `slack`)."""

    member: Choices
    organization: Choices
    slack_configured: bool


class PreferencesUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    member: Choices = Field(default_factory=dict)
    # Needs the admin scope.
    organization: Choices = Field(default_factory=dict)


class SlackChannelUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # An incoming-webhook URL (https://hooks.slack.com/services/...); null removes it.
    url: str | None = Field(default=None, max_length=2048)


class WebhookEndpointCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(max_length=2048)
    description: str | None = Field(default=None, max_length=255)
    # Empty: every event type.
    event_types: list[str] = Field(default_factory=list, max_length=50)


class WebhookEndpointUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(default=None, max_length=2048)
    description: str | None = Field(default=None, max_length=255)
    event_types: list[str] | None = Field(default=None, max_length=50)
    enabled: bool | None = None


class WebhookEndpointOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    url: str
    description: str | None
    event_types: list[str]
    enabled: bool
    created_at: datetime


class WebhookEndpointCreated(WebhookEndpointOut):
    """`secret` is shown this once: verify deliveries with it (Standard Webhooks)."""

    secret: str


class AttemptOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    succeeded: bool
    status_code: int | None
    error: str | None
    response_excerpt: str | None
    duration_ms: int
    created_at: datetime


class DeliveryOut(BaseModel):
    id: uuid.UUID
    event_id: uuid.UUID
    event_type: str
    status: str
    attempt_count: int
    redeliveries: int
    last_status_code: int | None
    last_error: str | None
    delivered_at: datetime | None
    created_at: datetime
    attempts: list[AttemptOut]
