"""Invoice arithmetic and proration: pure functions on Decimal, no I/O.

Rounding rule (tested with hypothesis): every line is rounded to the cent with ROUND_HALF_UP on its
own, the subtotal is the exact sum of rounded lines, tax is ROUND_HALF_UP(subtotal x rate) at the
cent, and total = subtotal + tax. A total is never negative: credit beyond the charges of a period
becomes a "credit carried forward" line and is returned so the next invoice can consume it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import TYPE_CHECKING

from core.billing.periods import Period
from forgeline.statuses.billing import UsageType

if TYPE_CHECKING:
    from db.models.billing import Plan

CENT = Decimal("0.01")
ZERO = Decimal("0.00")

# Price per unit beyond the plan's included quantity. Deployments are capped by the plan limit
# (enforce_limit), not billed per unit.
USAGE_UNIT_PRICES: dict[str, Decimal] = {
    "build_minutes": Decimal("0.02"),
    "deployment": Decimal("0"),
    "storage_gb": Decimal("0.10"),
    "bandwidth_gb": Decimal("0.08"),
    "agent_tokens": Decimal("0.000004"),
    "api_requests": Decimal("0.00005"),
}
USAGE_TYPES: tuple[str, ...] = tuple(UsageType)
USAGE_UNITS: dict[str, str] = {
    "build_minutes": "min",
    "deployment": "deployments",
    "storage_gb": "GB",
    "bandwidth_gb": "GB",
    "agent_tokens": "tokens",
    "api_requests": "requests",
}


def round_cents(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def invoice_number(organization_id: str, period: Period) -> str:
    """Deterministic per (organization, period): 48 bits of the org id keep 10k+ orgs unique."""
    return f"FL-{organization_id.replace('-', '')[:12].upper()}-{period.compact}"


@dataclass(frozen=True)
class Line:
    kind: str  # plan | proration | overage | credit
    description: str
    quantity: Decimal
    unit_price: Decimal
    amount: Decimal
    usage_type: str | None = None

    def as_json(self) -> dict[str, str | None]:
        return {
            "kind": self.kind,
            "description": self.description,
            "quantity": str(self.quantity),
            "unit_price": str(self.unit_price),
            "amount": str(self.amount),
            "usage_type": self.usage_type,
        }


@dataclass(frozen=True)
class Adjustment:
    """A pending credit (negative) or charge (positive) recorded between invoices."""

    description: str
    amount: Decimal


@dataclass(frozen=True)
class InvoiceDraft:
    lines: list[Line]
    subtotal: Decimal
    tax: Decimal
    total: Decimal
    credit_carried_forward: Decimal = ZERO
    tax_rate: Decimal = ZERO

    def line_items_json(self) -> dict[str, object]:
        return {
            "items": [line.as_json() for line in self.lines],
            "subtotal": str(self.subtotal),
            "tax_rate": str(self.tax_rate),
            "tax": str(self.tax),
            "total": str(self.total),
            "credit_carried_forward": str(self.credit_carried_forward),
        }


def billable_days(period: Period, *, service_start: datetime, trial_end: datetime | None) -> int:
    """Days of `period` on or after both the service start and the trial end (UTC day granularity).

    A day counts when service runs on it at any moment: starting at 15:00 on the 10th bills the
    10th; a trial ending at 15:00 on the 10th makes the 10th a trial day (the customer was promised
    the trial until then), so billing starts on the 11th unless the trial ends exactly at midnight.
    """
    first_day = service_start.astimezone(UTC).date()
    if trial_end is not None:
        trial_day = trial_end.astimezone(UTC)
        first_trial_free = trial_day.date()
        if trial_day.time() != datetime.min.time():
            first_trial_free = first_trial_free.fromordinal(first_trial_free.toordinal() + 1)
        first_day = max(first_day, first_trial_free)
    start, end = period.start.date(), period.end.date()
    first_day = max(first_day, start)
    return max(0, (end - first_day).days)


def plan_fee(price: Decimal, period: Period, days: int) -> Decimal:
    """The plan's share of a period: price x days / days-in-month, rounded at the cent."""
    if days >= period.days:
        return round_cents(price)
    return round_cents(price * days / period.days)


def proration_for_change(
    *,
    old_price: Decimal,
    new_price: Decimal,
    period: Period,
    changed_at: datetime,
    billable_from: datetime | None = None,
) -> Decimal:
    """The proration line for a plan change during `period` (> 0 charge, < 0 credit).

    Rule: billing is in arrears on calendar months and the closing invoice charges the plan in
    effect at period close (the new plan) for its billable days. A change on day d therefore adds
    (old - new) x (billable days before d) / days-in-month: the customer pays the old price for the
    days before the change and the new price from day d on (the change day is billed at the new
    plan). An upgrade yields a credit on this line (the new plan line is dearer), a downgrade a
    charge; together the two lines are exactly "each plan for its days". The adjustment is
    rounded to the cent once, here, and appears as its own line on the next invoice. Days before
    `billable_from` (service start, trial) are free under either plan and not counted.
    """
    changed_day = changed_at.astimezone(UTC).date()
    first_day = period.start.date()
    if billable_from is not None:
        first_day = max(first_day, billable_from.astimezone(UTC).date())
    elapsed = min(max((changed_day - first_day).days, 0), period.days)
    return round_cents((old_price - new_price) * elapsed / period.days)


def overage_lines(
    usage: Mapping[str, Decimal],
    included: Mapping[str, Decimal | None],
    unit_prices: Mapping[str, Decimal] = USAGE_UNIT_PRICES,
) -> list[Line]:
    """One line per usage type above its included quantity (None = unlimited), sorted by type."""
    lines: list[Line] = []
    for usage_type in sorted(usage):
        used = usage[usage_type]
        allowance = included.get(usage_type, Decimal(0))
        if allowance is None:
            continue
        unit_price = unit_prices.get(usage_type, Decimal(0))
        over = used - allowance
        if over <= 0 or unit_price == 0:
            continue
        unit = USAGE_UNITS.get(usage_type, "units")
        lines.append(
            Line(
                kind="overage",
                description=f"{usage_type} overage: {over} {unit} beyond {allowance} included",
                quantity=over,
                unit_price=unit_price,
                amount=round_cents(over * unit_price),
                usage_type=usage_type,
            )
        )
    return lines


def build_invoice(
    *,
    plan_name: str,
    plan_price: Decimal,
    period: Period,
    days: int,
    usage: Mapping[str, Decimal],
    included: Mapping[str, Decimal | None],
    adjustments: Sequence[Adjustment] = (),
    tax_rate: Decimal = ZERO,
    unit_prices: Mapping[str, Decimal] = USAGE_UNIT_PRICES,
) -> InvoiceDraft:
    """The invoice of one (organization, period); same inputs, same invoice, to the cent."""
    lines: list[Line] = []
    fee = plan_fee(plan_price, period, days)
    description = f"{plan_name} plan - {period.key}"
    if days < period.days:
        description += f" ({days} of {period.days} days)"
    lines.append(Line("plan", description, Decimal(1), round_cents(plan_price), fee))
    for adjustment in adjustments:
        amount = round_cents(adjustment.amount)
        if amount != 0:
            kind = "proration" if amount > 0 else "credit"
            lines.append(Line(kind, adjustment.description, Decimal(1), amount, amount))
    lines.extend(overage_lines(usage, included, unit_prices))
    return _totals(lines, tax_rate)


@dataclass(frozen=True)
class PlanPeriodShare:
    """One plan's share of a period: its fee for the billable time `[billed_from, billed_to)`,
    and the usage recorded while it was in effect, against its allowance prorated to the time
    it was in effect."""

    plan_name: str
    plan_price: Decimal
    start: datetime
    end: datetime
    billed_from: datetime
    billed_to: datetime
    usage: Mapping[str, Decimal] = field(default_factory=dict)
    included: Mapping[str, Decimal | None] = field(default_factory=dict)
    unit_prices: Mapping[str, Decimal] = field(default_factory=lambda: dict(USAGE_UNIT_PRICES))


ALLOWANCE_QUANTUM = Decimal("0.000001")  # the scale of usage quantities


def share_of_period(period: Period, start: datetime, end: datetime) -> Decimal:
    """The fraction of `period` between `start` and `end` (0 when empty), by the second."""
    total = Decimal(int((period.end - period.start).total_seconds()))
    seconds = Decimal(max(0, int((end - start).total_seconds())))
    return seconds / total


def prorated_allowance(included: Decimal | None, share: Decimal) -> Decimal | None:
    if included is None:
        return None
    return (included * share).quantize(ALLOWANCE_QUANTUM, rounding=ROUND_HALF_UP)


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M")


def build_prorated_invoice(
    *,
    period: Period,
    shares: Sequence[PlanPeriodShare],
    adjustments: Sequence[Adjustment] = (),
    tax_rate: Decimal = ZERO,
) -> InvoiceDraft:
    """The invoice of a period in which the plan changed: each plan is charged for the billable
    time it was in effect (price x share of the period, each line rounded on its own), and the
    usage of its time beyond its prorated allowance at its own prices. Same inputs, same
    invoice, to the cent."""
    lines: list[Line] = []
    for share in shares:
        fee = round_cents(
            share.plan_price * share_of_period(period, share.billed_from, share.billed_to)
        )
        lines.append(
            Line(
                "plan",
                f"{share.plan_name} plan - {period.key}, "
                f"{_stamp(share.start)} to {_stamp(share.end)} UTC",
                Decimal(1),
                round_cents(share.plan_price),
                fee,
            )
        )
    for adjustment in adjustments:
        amount = round_cents(adjustment.amount)
        if amount != 0:
            kind = "proration" if amount > 0 else "credit"
            lines.append(Line(kind, adjustment.description, Decimal(1), amount, amount))
    for share in shares:
        fraction = share_of_period(period, share.start, share.end)
        allowances = {
            usage_type: prorated_allowance(share.included.get(usage_type, Decimal(0)), fraction)
            for usage_type in share.usage
        }
        for line in overage_lines(share.usage, allowances, share.unit_prices):
            lines.append(
                Line(
                    line.kind,
                    f"{share.plan_name}, {_stamp(share.start)} to {_stamp(share.end)} UTC: "
                    + line.description,
                    line.quantity,
                    line.unit_price,
                    line.amount,
                    line.usage_type,
                )
            )
    return _totals(lines, tax_rate)


def _totals(lines: list[Line], tax_rate: Decimal) -> InvoiceDraft:
    subtotal = sum((line.amount for line in lines), ZERO)
    carried = ZERO
    if subtotal < 0:
        carried = -subtotal
        lines.append(Line("credit", "Credit carried forward", Decimal(1), carried, carried))
        subtotal = ZERO
    tax = round_cents(subtotal * tax_rate)
    return InvoiceDraft(
        lines=lines,
        subtotal=subtotal,
        tax=tax,
        total=subtotal + tax,
        credit_carried_forward=carried,
        tax_rate=tax_rate,
    )


def to_cents(amount: Decimal) -> int:
    """Stripe amounts are integers in the smallest currency unit; refuse sub-cent amounts."""
    cents = amount * 100
    if cents != cents.to_integral_value():
        raise ValueError(f"amount {amount} is not a whole number of cents")
    return int(cents)


def included_quantities(plan: Plan) -> dict[str, Decimal | None]:
    """Included quantity per usage type; None = unlimited (NULL on the plan)."""

    def maybe(value: int | None) -> Decimal | None:
        return None if value is None else Decimal(value)

    return {
        "build_minutes": maybe(plan.included_build_minutes),
        "agent_tokens": maybe(plan.included_agent_tokens),
        "storage_gb": maybe(plan.included_storage_gb),
        "bandwidth_gb": maybe(plan.included_bandwidth_gb),
        "api_requests": maybe(plan.included_api_requests),
    }


def overage_prices(plan: Plan) -> dict[str, Decimal | None]:
    """Overage price per usage type as the plan sets it (None: the type is not billed)."""
    return {
        "build_minutes": plan.overage_build_minute_price,
        "storage_gb": plan.overage_storage_gb_price,
        "bandwidth_gb": plan.overage_bandwidth_gb_price,
        "agent_tokens": plan.overage_agent_token_price,
        "api_requests": plan.overage_api_request_price,
    }


def unit_prices(plan: Plan) -> dict[str, Decimal]:
    """Overage price per usage type billed under the plan."""
    return {key: value for key, value in overage_prices(plan).items() if value is not None}
