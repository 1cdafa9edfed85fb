"""Request and response schemas of /v1/plans and /v1/billing; money is serialised as strings."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainSerializer

from core.billing.periods import FIRST_PERIOD_YEAR, LAST_PERIOD_YEAR, Period
from forgeline.statuses.billing import CollectionMethod, InvoiceStatus, SubscriptionStatus

Money = Annotated[Decimal, PlainSerializer(lambda v: f"{v:.2f}", return_type=str)]
Quantity = Annotated[
    Decimal, PlainSerializer(lambda v: format(v.normalize(), "f"), return_type=str)
]
UnitPrice = Annotated[
    Decimal | None,
    PlainSerializer(
        lambda v: None if v is None else format(v.normalize(), "f"), return_type=str | None
    ),
]
PlanSlug = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[a-z0-9-]+$")]


def _real_period(text: str) -> str:
    Period.parse(text)  # a real month in range, or a ValueError with the reason (a 422)
    return text


PeriodText = Annotated[
    str,
    Field(
        min_length=7,
        max_length=7,
        description=f"A month, YYYY-MM, from {FIRST_PERIOD_YEAR}-01 to {LAST_PERIOD_YEAR}-12",
        examples=["2026-11"],
    ),
    AfterValidator(_real_period),
]


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PlanFeatureOut(BaseModel):
    feature_key: str
    limit_value: int | None
    enabled: bool


class PlanOut(BaseModel):
    slug: str
    name: str
    description: str | None
    price_monthly: Money | None = Field(description="null: custom pricing")
    currency: str
    max_projects: int | None = Field(description="null: unlimited")
    max_pipelines_per_project: int | None
    max_deployments_per_month: int | None
    included_build_minutes: int | None
    included_agent_tokens: int | None
    custom_domains: bool
    priority_support: bool
    overage_prices: dict[str, UnitPrice]
    features: list[PlanFeatureOut]


class SubscriptionCreate(Request):
    plan: PlanSlug
    trial_days: int = Field(default=0, ge=0, le=90)


class SubscriptionUpdate(Request):
    plan: PlanSlug | None = None
    cancel_at_period_end: bool | None = None


class SubscriptionOut(BaseModel):
    id: uuid.UUID
    plan: str
    pending_plan: str | None = Field(
        default=None,
        description="Always null: a plan change applies at once, and the period's invoice charges"
        " each plan for the time it was in effect",
    )
    pending_change_at: datetime | None = None
    status: SubscriptionStatus
    current_period_start: datetime
    current_period_end: datetime
    trial_end: datetime | None
    cancel_at_period_end: bool
    cancelled_at: datetime | None


class PaymentMethodCreate(Request):
    payment_method_id: str = Field(
        min_length=3, max_length=255, pattern=r"^pm_[A-Za-z0-9_]+$", examples=["pm_card_visa"]
    )
    make_default: bool = True


class PaymentMethodOut(BaseModel):
    id: uuid.UUID
    type: str
    brand: str | None
    last4: str | None
    exp_month: int | None
    exp_year: int | None
    country: str | None
    is_default: bool
    created_at: datetime


class UsageByType(BaseModel):
    usage_type: str
    unit: str
    quantity: Quantity


class UsageByProject(BaseModel):
    project_id: uuid.UUID | None
    usage_type: str
    quantity: Quantity


class UsageOut(BaseModel):
    period: str
    by_type: list[UsageByType]
    by_project: list[UsageByProject]


class InvoiceLineOut(BaseModel):
    kind: str
    description: str
    quantity: str
    unit_price: str
    amount: str
    usage_type: str | None = None


class InvoiceOut(BaseModel):
    id: uuid.UUID
    invoice_number: str
    period: str
    period_start: datetime
    period_end: datetime
    status: InvoiceStatus
    currency: str
    subtotal: Money
    tax_rate: Decimal
    tax: Money
    total: Money
    amount_paid: Money
    collection_method: CollectionMethod
    issued_at: datetime | None
    due_at: datetime | None
    paid_at: datetime | None


class InvoiceDetail(InvoiceOut):
    line_items: list[InvoiceLineOut]
    credit_carried_forward: Money
    payments: list[dict[str, Any]]


class BillingRunRequest(Request):
    period: PeriodText | None = Field(
        default=None,
        description="Month to close (it must have ended); default: the subscription's open"
        " period once it has ended, else last month",
    )


class BillingRunOut(BaseModel):
    workflow_id: str
    period: str
    started: bool = Field(description="False: that period's run already exists (nothing new)")


class WebhookAck(BaseModel):
    received: bool = True
    duplicate: bool = False
    event_type: str | None = None
