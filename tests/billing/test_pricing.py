"""Invoice arithmetic and proration: examples plus hypothesis properties."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.billing.periods import Period
from core.billing.pricing import (
    CENT,
    USAGE_TYPES,
    USAGE_UNIT_PRICES,
    USAGE_UNITS,
    Adjustment,
    billable_days,
    build_invoice,
    invoice_number,
    plan_fee,
    proration_for_change,
    round_cents,
    to_cents,
)
from forgeline.statuses.billing import UsageType

money = st.decimals(min_value=Decimal("-500"), max_value=Decimal("5000"), places=4)
prices = st.decimals(min_value=Decimal("0"), max_value=Decimal("999"), places=2)
quantities = st.decimals(min_value=Decimal("0"), max_value=Decimal("10000000"), places=3)
rates = st.decimals(min_value=Decimal("0"), max_value=Decimal("0.3"), places=4)
periods = st.builds(Period, st.integers(2020, 2035), st.integers(1, 12))


def test_seed_example_pro_with_extra_minutes_and_tax():
    draft = build_invoice(
        plan_name="Pro",
        plan_price=Decimal("49.00"),
        period=Period(2026, 1),
        days=31,
        usage={"build_minutes": Decimal(2500)},
        included={"build_minutes": Decimal(2000)},
        tax_rate=Decimal("0.10"),
    )
    assert [line.amount for line in draft.lines] == [Decimal("49.00"), Decimal("10.00")]
    assert (draft.subtotal, draft.tax, draft.total) == (
        Decimal("59.00"),
        Decimal("5.90"),
        Decimal("64.90"),
    )


def test_half_cent_rounds_up_per_line_and_on_tax():
    draft = build_invoice(
        plan_name="Starter",
        plan_price=Decimal("0"),
        period=Period(2026, 2),
        days=28,
        usage={"agent_tokens": Decimal(1250)},  # 1250 x 0.000004 = 0.005 -> 0.01
        included={"agent_tokens": Decimal(0)},
        tax_rate=Decimal("0.5"),  # 0.01 x 0.5 = 0.005 -> 0.01
    )
    assert draft.lines[-1].amount == Decimal("0.01")
    assert draft.tax == Decimal("0.01")
    assert draft.total == Decimal("0.02")


def test_unlimited_allowance_bills_nothing():
    draft = build_invoice(
        plan_name="Enterprise",
        plan_price=Decimal("0"),
        period=Period(2026, 3),
        days=31,
        usage={"build_minutes": Decimal(10**6)},
        included={"build_minutes": None},
    )
    assert draft.total == 0
    assert len(draft.lines) == 1


def test_credit_beyond_charges_is_carried_forward():
    draft = build_invoice(
        plan_name="Starter",
        plan_price=Decimal("19.00"),
        period=Period(2026, 4),
        days=30,
        usage={},
        included={},
        adjustments=[Adjustment("Downgrade credit", Decimal("-30.00"))],
        tax_rate=Decimal("0.2"),
    )
    assert draft.total == 0
    assert draft.credit_carried_forward == Decimal("11.00")


def test_proration_upgrade_on_day_11_of_30():
    # Starter -> Pro on the 11th of April: 10 days at 19, 20 at 49 (invoice charges 49 in full).
    credit = proration_for_change(
        old_price=Decimal("19"),
        new_price=Decimal("49"),
        period=Period(2026, 4),
        changed_at=datetime(2026, 4, 11, 9, 30, tzinfo=UTC),
    )
    assert credit == Decimal("-10.00")
    assert Decimal("49") + credit == round_cents(Decimal(19 * 10 + 49 * 20) / 30)


def test_trial_and_partial_months():
    period = Period(2026, 6)
    start = datetime(2026, 6, 1, tzinfo=UTC)
    assert billable_days(period, service_start=start, trial_end=None) == 30
    assert billable_days(period, service_start=start, trial_end=start + timedelta(days=14)) == 16
    # A trial ending mid-day keeps that day free.
    assert (
        billable_days(period, service_start=start, trial_end=start + timedelta(days=14, hours=5))
        == 15
    )
    assert (
        billable_days(period, service_start=start, trial_end=datetime(2026, 7, 3, tzinfo=UTC)) == 0
    )
    assert plan_fee(Decimal("49"), period, 16) == Decimal("26.13")


def test_period_parsing_and_navigation():
    assert Period.parse("2026-12").next() == Period(2027, 1)
    assert Period(2027, 1).previous() == Period(2026, 12)
    assert Period.parse("202602").days == 28
    for bad in ("2026-13", "26-01", "2026/01", "abcdef", "2026-1"):
        with pytest.raises(ValueError):
            Period.parse(bad)


def test_invoice_number_is_deterministic():
    org = "3f2a9c1b-7d4e-4a55-9c1b-000000000001"
    assert invoice_number(org, Period(2026, 11)) == "FL-3F2A9C1B7D4E-202611"
    assert invoice_number(org, Period(2026, 11)) == invoice_number(org, Period.parse("2026-11"))


def test_to_cents_refuses_fractions():
    assert to_cents(Decimal("64.90")) == 6490
    with pytest.raises(ValueError):
        to_cents(Decimal("0.005"))


@given(
    price=prices,
    period=periods,
    days_frac=st.floats(0, 1),
    usage=st.dictionaries(st.sampled_from(USAGE_TYPES), quantities, max_size=6),
    included=st.dictionaries(st.sampled_from(USAGE_TYPES), st.none() | quantities, max_size=6),
    adjustments=st.lists(money.map(lambda m: Adjustment("adj", m)), max_size=4),
    tax_rate=rates,
)
def test_invoice_properties(price, period, days_frac, usage, included, adjustments, tax_rate):
    days = round(days_frac * period.days)
    kwargs = dict(
        plan_name="P",
        plan_price=price,
        period=period,
        days=days,
        usage=usage,
        included=included,
        adjustments=adjustments,
        tax_rate=tax_rate,
    )
    draft = build_invoice(**kwargs)
    # Every amount is a whole number of cents.
    for line in draft.lines:
        assert line.amount == line.amount.quantize(CENT)
    # totals = sum of rounded lines + rounded tax
    assert draft.subtotal == sum(line.amount for line in draft.lines)
    assert draft.tax == round_cents(draft.subtotal * tax_rate)
    assert draft.total == draft.subtotal + draft.tax
    # never negative
    assert draft.subtotal >= 0 and draft.tax >= 0 and draft.total >= 0
    # idempotent / deterministic
    assert build_invoice(**kwargs) == draft
    to_cents(draft.total)
    # Carried credit plus billed lines account for every adjustment exactly.
    charges = sum(
        line.amount for line in draft.lines if line.description != "Credit carried forward"
    )
    assert charges + draft.credit_carried_forward == draft.subtotal


@given(
    old=prices,
    new=prices,
    period=periods,
    day=st.integers(0, 30),
)
def test_proration_pays_each_plan_for_its_days(old, new, period, day):
    day = min(day, period.days - 1)
    changed_at = period.start + timedelta(days=day, hours=13)
    adjustment = proration_for_change(
        old_price=old, new_price=new, period=period, changed_at=changed_at
    )
    exact = (old * day + new * (period.days - day)) / period.days
    # The closing invoice charges `new` in full; with the adjustment the customer pays each plan
    # for its days, within the one rounding of the adjustment.
    assert abs(new + adjustment - exact) <= Decimal("0.005")
    assert (adjustment > 0) == (old > new and day > 0) or adjustment == 0


def test_every_usage_type_has_a_unit_and_a_list_price() -> None:
    assert set(USAGE_UNITS) == set(USAGE_UNIT_PRICES) == set(USAGE_TYPES) == set(UsageType)
