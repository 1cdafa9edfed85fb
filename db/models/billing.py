"""Plans, subscriptions, payment methods, invoices, payments, metered usage; money is NUMERIC."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Identity,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from db.base import Base, Timestamps, UUIDPrimaryKey
from db.models.columns import (
    MONEY,
    PRECISE_MONEY,
    QUANTITY,
    TZ_DATETIME,
    UNIT_PRICE,
    check_in,
    created_at_column,
    json_array,
    json_object,
)
from forgeline.statuses.billing import (
    CollectionMethod,
    InvoiceStatus,
    PaymentStatus,
    SubscriptionStatus,
    UsageType,
)

PAYMENT_METHOD_TYPES = ("card", "bank_account", "paypal")


class Plan(UUIDPrimaryKey, Timestamps, Base):
    """A pricing tier. NULL limits mean unlimited; a NULL price means custom (Enterprise)."""

    __tablename__ = "plans"

    slug: Mapped[str] = mapped_column(String(100), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str | None] = mapped_column(Text)
    price_monthly: Mapped[Decimal | None] = mapped_column(MONEY)
    price_yearly: Mapped[Decimal | None] = mapped_column(MONEY)
    currency: Mapped[str] = mapped_column(String(3), default="USD", server_default="USD")
    max_projects: Mapped[int | None] = mapped_column(Integer)
    max_pipelines_per_project: Mapped[int | None] = mapped_column(Integer)
    max_deployments_per_month: Mapped[int | None] = mapped_column(Integer)
    included_build_minutes: Mapped[int | None] = mapped_column(Integer)
    included_agent_tokens: Mapped[int | None] = mapped_column(Integer)
    # Allowances for the metered extras; without them a Free org would owe cents for API calls.
    included_api_requests: Mapped[int | None] = mapped_column(Integer)
    included_storage_gb: Mapped[int | None] = mapped_column(Integer)
    included_bandwidth_gb: Mapped[int | None] = mapped_column(Integer)
    custom_domains: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=text("false")
    )
    priority_support: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=text("false")
    )
    # Overage per unit beyond the included quantity (NULL: not billed / not allowed).
    overage_build_minute_price: Mapped[Decimal | None] = mapped_column(UNIT_PRICE)
    overage_storage_gb_price: Mapped[Decimal | None] = mapped_column(UNIT_PRICE)
    overage_bandwidth_gb_price: Mapped[Decimal | None] = mapped_column(UNIT_PRICE)
    overage_agent_token_price: Mapped[Decimal | None] = mapped_column(UNIT_PRICE)
    overage_api_request_price: Mapped[Decimal | None] = mapped_column(UNIT_PRICE)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True, server_default=text("true"))
    is_public: Mapped[bool] = mapped_column(Boolean, default=True, server_default=text("true"))
    sort_order: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))

    features: Mapped[list[PlanFeature]] = relationship(
        back_populates="plan", lazy="raise", passive_deletes=True
    )

    __table_args__ = (
        CheckConstraint(
            "(price_monthly IS NULL OR price_monthly >= 0)"
            " AND (price_yearly IS NULL OR price_yearly >= 0)",
            name="prices_non_negative",
        ),
        CheckConstraint(
            "(max_projects IS NULL OR max_projects >= 0)"
            " AND (max_pipelines_per_project IS NULL OR max_pipelines_per_project >= 0)"
            " AND (max_deployments_per_month IS NULL OR max_deployments_per_month >= 0)"
            " AND (included_build_minutes IS NULL OR included_build_minutes >= 0)",
            name="limits_non_negative",
        ),
    )


class PlanFeature(UUIDPrimaryKey, Timestamps, Base):
    """A granular limit or switch of a plan: numeric `limit_value` (NULL unlimited) or `enabled`."""

    __tablename__ = "plan_features"

    plan_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("plans.id", ondelete="CASCADE"))
    feature_key: Mapped[str] = mapped_column(String(100))
    limit_value: Mapped[int | None] = mapped_column(Integer)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True, server_default=text("true"))
    description: Mapped[str | None] = mapped_column(String(255))

    plan: Mapped[Plan] = relationship(back_populates="features", lazy="raise")

    __table_args__ = (
        UniqueConstraint("plan_id", "feature_key"),
        CheckConstraint("limit_value IS NULL OR limit_value >= 0", name="limit_non_negative"),
    )


class Subscription(UUIDPrimaryKey, Timestamps, Base):
    """An organization's plan; at most one live (trialing/active/past_due) per organization."""

    __tablename__ = "subscriptions"

    organization_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    plan_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("plans.id", ondelete="RESTRICT"), index=True
    )
    status: Mapped[str] = mapped_column(String(20), default="active", server_default="active")
    current_period_start: Mapped[datetime] = mapped_column(TZ_DATETIME)
    current_period_end: Mapped[datetime] = mapped_column(TZ_DATETIME)
    trial_end: Mapped[datetime | None] = mapped_column(TZ_DATETIME)
    cancel_at_period_end: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=text("false")
    )
    cancelled_at: Mapped[datetime | None] = mapped_column(TZ_DATETIME)
    ended_at: Mapped[datetime | None] = mapped_column(TZ_DATETIME)
    # Superseded: a plan change now applies to `plan_id` at once and is recorded in
    # `subscription_plan_changes` (migration 0005 moved pending changes there). Always NULL.
    pending_plan_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("plans.id", ondelete="SET NULL")
    )
    pending_change_at: Mapped[datetime | None] = mapped_column(TZ_DATETIME)
    stripe_subscription_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    stripe_customer_id: Mapped[str | None] = mapped_column(String(255))
    billing_schedule_id: Mapped[str | None] = mapped_column(String(255))

    plan: Mapped[Plan] = relationship(lazy="raise", foreign_keys=[plan_id])

    __table_args__ = (
        check_in("status", SubscriptionStatus),
        CheckConstraint("current_period_end > current_period_start", name="period_order"),
        Index(
            "uq_subscriptions_organization_id_live",
            "organization_id",
            unique=True,
            postgresql_where=text("status IN ('trialing', 'active', 'past_due')"),
        ),
        Index("ix_subscriptions_status_current_period_end", "status", "current_period_end"),
    )


class SubscriptionPlanChange(UUIDPrimaryKey, Base):
    """One plan change of a subscription, in the order the changes were made (`seq`): the
    invoice of a period charges each plan for the time it was in effect."""

    __tablename__ = "subscription_plan_changes"

    subscription_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("subscriptions.id", ondelete="CASCADE")
    )
    organization_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    from_plan_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("plans.id", ondelete="RESTRICT"))
    to_plan_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("plans.id", ondelete="RESTRICT"))
    # The database's clock when the change was made, under the subscription's row lock.
    changed_at: Mapped[datetime] = mapped_column(TZ_DATETIME)
    seq: Mapped[int] = mapped_column(BigInteger, Identity(always=True), unique=True)
    created_at: Mapped[datetime] = created_at_column()

    __table_args__ = (
        CheckConstraint("from_plan_id <> to_plan_id", name="plan_changes"),
        Index("ix_subscription_plan_changes_subscription_id_seq", "subscription_id", "seq"),
    )


class PaymentMethod(UUIDPrimaryKey, Timestamps, Base):
    """A Stripe payment method reference; only brand, last4, expiry and country are kept."""

    __tablename__ = "payment_methods"

    organization_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    stripe_payment_method_id: Mapped[str] = mapped_column(String(255), unique=True)
    type: Mapped[str] = mapped_column(String(20), default="card", server_default="card")
    brand: Mapped[str | None] = mapped_column(String(50))
    last4: Mapped[str | None] = mapped_column(String(4))
    exp_month: Mapped[int | None] = mapped_column(Integer)
    exp_year: Mapped[int | None] = mapped_column(Integer)
    country: Mapped[str | None] = mapped_column(String(2))
    is_default: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    detached_at: Mapped[datetime | None] = mapped_column(TZ_DATETIME)

    __table_args__ = (
        check_in("type", PAYMENT_METHOD_TYPES),
        CheckConstraint("last4 IS NULL OR last4 ~ '^[0-9]{4}$'", name="last4_digits"),
        CheckConstraint("exp_month IS NULL OR exp_month BETWEEN 1 AND 12", name="exp_month_range"),
        Index(
            "uq_payment_methods_organization_id_default",
            "organization_id",
            unique=True,
            postgresql_where=text("is_default"),
        ),
    )


class Invoice(UUIDPrimaryKey, Timestamps, Base):
    """One invoice per (organization, period), numbered deterministically; lines in JSONB."""

    __tablename__ = "invoices"

    organization_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE")
    )
    subscription_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("subscriptions.id", ondelete="SET NULL"), index=True
    )
    invoice_number: Mapped[str] = mapped_column(String(50), unique=True)
    period_start: Mapped[datetime] = mapped_column(TZ_DATETIME)
    period_end: Mapped[datetime] = mapped_column(TZ_DATETIME)
    status: Mapped[str] = mapped_column(String(20), default="draft", server_default="draft")
    # [{kind, description, quantity, unit_price, amount, usage_type}] with amounts as strings.
    line_items: Mapped[list[Any]] = json_array()
    subtotal: Mapped[Decimal] = mapped_column(MONEY, default=Decimal("0"), server_default="0")
    tax_rate: Mapped[Decimal] = mapped_column(
        Numeric(6, 4), default=Decimal("0"), server_default="0"
    )
    tax: Mapped[Decimal] = mapped_column(MONEY, default=Decimal("0"), server_default="0")
    total: Mapped[Decimal] = mapped_column(MONEY, default=Decimal("0"), server_default="0")
    amount_paid: Mapped[Decimal] = mapped_column(MONEY, default=Decimal("0"), server_default="0")
    # Credit beyond this period's charges, consumed by the next invoice.
    credit_carried_forward: Mapped[Decimal] = mapped_column(
        MONEY, default=Decimal("0"), server_default="0"
    )
    currency: Mapped[str] = mapped_column(String(3), default="USD", server_default="USD")
    stripe_invoice_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    collection_method: Mapped[str] = mapped_column(
        String(30), default="send_invoice", server_default="send_invoice"
    )
    workflow_id: Mapped[str | None] = mapped_column(String(255))
    issued_at: Mapped[datetime | None] = mapped_column(TZ_DATETIME)
    due_at: Mapped[datetime | None] = mapped_column(TZ_DATETIME)
    paid_at: Mapped[datetime | None] = mapped_column(TZ_DATETIME)
    voided_at: Mapped[datetime | None] = mapped_column(TZ_DATETIME)

    __table_args__ = (
        UniqueConstraint("organization_id", "period_start"),
        check_in("status", InvoiceStatus),
        check_in("collection_method", CollectionMethod),
        CheckConstraint("period_end > period_start", name="period_order"),
        CheckConstraint(
            "subtotal >= 0 AND tax >= 0 AND total >= 0 AND amount_paid >= 0",
            name="amounts_non_negative",
        ),
        CheckConstraint("total = subtotal + tax", name="total_is_subtotal_plus_tax"),
        CheckConstraint("tax_rate >= 0 AND tax_rate < 1", name="tax_rate_range"),
        Index("ix_invoices_status_due_at", "status", "due_at"),
    )


class Payment(UUIDPrimaryKey, Timestamps, Base):
    """A charge attempt of an invoice; the idempotency key makes a retried charge a no-op."""

    __tablename__ = "payments"

    invoice_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("invoices.id", ondelete="CASCADE"), index=True
    )
    organization_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    payment_method_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("payment_methods.id", ondelete="SET NULL"), index=True
    )
    amount: Mapped[Decimal] = mapped_column(MONEY)
    currency: Mapped[str] = mapped_column(String(3), default="USD", server_default="USD")
    status: Mapped[str] = mapped_column(String(20), default="pending", server_default="pending")
    attempt_number: Mapped[int] = mapped_column(Integer, default=1, server_default=text("1"))
    stripe_payment_intent_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    stripe_charge_id: Mapped[str | None] = mapped_column(String(255))
    idempotency_key: Mapped[str] = mapped_column(String(255), unique=True)
    failure_code: Mapped[str | None] = mapped_column(String(100))
    failure_message: Mapped[str | None] = mapped_column(Text)
    attempted_at: Mapped[datetime] = created_at_column()
    paid_at: Mapped[datetime | None] = mapped_column(TZ_DATETIME)

    __table_args__ = (
        check_in("status", PaymentStatus),
        CheckConstraint("amount >= 0", name="amount_non_negative"),
        Index("ix_payments_status", "status"),
        # At most one successful payment per invoice.
        Index(
            "uq_payments_invoice_id_succeeded",
            "invoice_id",
            unique=True,
            postgresql_where=text("status = 'succeeded'"),
        ),
    )


class UsageRecord(UUIDPrimaryKey, Base):
    """Metered usage; its idempotency key (`pipeline-run-{id}:build_minutes`) counts it once."""

    __tablename__ = "usage_records"

    organization_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE")
    )
    subscription_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("subscriptions.id", ondelete="SET NULL"), index=True
    )
    project_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("projects.id", ondelete="SET NULL"), index=True
    )
    # Set when the record was billed, so an invoice can be traced back to its usage.
    invoice_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("invoices.id", ondelete="SET NULL"), index=True
    )
    usage_type: Mapped[str] = mapped_column(String(30))
    quantity: Mapped[Decimal] = mapped_column(QUANTITY)
    unit: Mapped[str] = mapped_column(String(20))
    cost: Mapped[Decimal | None] = mapped_column(PRECISE_MONEY)
    recorded_at: Mapped[datetime] = created_at_column()
    # Billing period tag, YYYY-MM (UTC calendar month of recorded_at).
    period: Mapped[str] = mapped_column(String(7))
    idempotency_key: Mapped[str] = mapped_column(String(255), unique=True)
    # {pipeline_run_id, deployment_id, agent_task_id, environment, ...}
    source_refs: Mapped[dict[str, Any]] = json_object()

    __table_args__ = (
        check_in("usage_type", UsageType),
        CheckConstraint("quantity >= 0", name="quantity_non_negative"),
        CheckConstraint("period ~ '^[0-9]{4}-(0[1-9]|1[0-2])$'", name="period_format"),
        Index(
            "ix_usage_records_organization_id_usage_type_recorded_at",
            "organization_id",
            "usage_type",
            "recorded_at",
        ),
        Index("ix_usage_records_organization_id_period", "organization_id", "period"),
    )
