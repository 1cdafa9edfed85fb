"""Notification vocabularies: the event types users subscribe to and the channels that carry
them (in-app and e-mail per member; webhook endpoints and Slack per organization)."""

from __future__ import annotations

from enum import StrEnum


class NotificationEventType(StrEnum):
    RUN_FAILED = "run.failed"
    # The first successful run after a failed one on the same pipeline and branch.
    RUN_FIXED = "run.fixed"
    DEPLOYMENT_AWAITING_APPROVAL = "deployment.awaiting_approval"
    DEPLOYMENT_LIVE = "deployment.live"
    DEPLOYMENT_ROLLED_BACK = "deployment.rolled_back"
    DEPLOYMENT_FAILED = "deployment.failed"
    INVOICE_ISSUED = "invoice.issued"
    PAYMENT_FAILED = "payment.failed"
    SPENDING_LIMIT_REACHED = "billing.limit_reached"


class MemberChannel(StrEnum):
    IN_APP = "in_app"
    EMAIL = "email"


class OrganizationChannel(StrEnum):
    WEBHOOK = "webhook"
    SLACK = "slack"


class DeliveryChannel(StrEnum):
    WEBHOOK = "webhook"
    EMAIL = "email"
    SLACK = "slack"


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"
