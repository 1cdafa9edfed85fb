"""The billing activities keep the names recorded histories hold: each is registered under its
contract's name, every contract is implemented, and the billing workflows call activities only
through the contracts (no activity module, no name strings)."""

from __future__ import annotations

import ast
import inspect
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from temporalio.activity import _Definition

from activities.billing.invoicing import BillingActivities
from activities.billing.schedules import BillingScheduleActivities
from workflows import billing as billing_workflows
from workflows.contract import ActivityContract
from workflows.contracts import billing as contracts

# The names BillingWorkflow and BillingCycleWorkflow histories were recorded with.
RECORDED_NAMES = {
    "create_invoice",
    "push_invoice_to_stripe",
    "charge_invoice",
    "record_payment",
    "end_subscription_for_nonpayment",
    "close_failed_execution",
    "start_due_billing_runs",
}


def _contracts() -> list[ActivityContract[object, object]]:
    return [v for v in vars(contracts).values() if isinstance(v, ActivityContract)]


def _registered() -> dict[str, str]:
    # Never called here: the registered definitions need no database or Temporal client.
    billing = BillingActivities(None, None, Decimal("0"))  # type: ignore[arg-type]
    fan_out = BillingScheduleActivities(None, None)  # type: ignore[arg-type]
    methods: list[Callable[..., Any]] = [
        billing.create_invoice,
        billing.push_invoice_to_stripe,
        billing.charge_invoice,
        billing.record_payment,
        billing.end_subscription_for_nonpayment,
        billing.close_failed_execution,
        fan_out.start_due_billing_runs,
    ]
    found: dict[str, str] = {}
    for method in methods:
        definition = _Definition.from_callable(method)
        assert definition is not None and definition.name is not None
        found[definition.name] = method.__name__
    return found


def test_contracts_keep_the_recorded_activity_names() -> None:
    assert {c.name for c in _contracts()} == RECORDED_NAMES


def test_every_contract_is_implemented_under_its_name() -> None:
    registered = _registered()
    assert set(registered) == RECORDED_NAMES
    # The method names were the activity names before the contracts: both stay equal.
    assert all(name == method for name, method in registered.items())


def test_stripe_declines_and_bad_data_are_never_retried_by_temporal() -> None:
    assert set(contracts.CHARGE_INVOICE.non_retryable) >= {"PaymentDeclined", "LookupError"}
    assert set(contracts.CREATE_INVOICE.non_retryable) >= {"ValueError", "LookupError"}
    assert "ValueError" in contracts.START_DUE_BILLING_RUNS.non_retryable


def test_billing_workflows_call_activities_only_through_contracts() -> None:
    tree = ast.parse(inspect.getsource(billing_workflows))
    imported = {
        node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
    } | {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    assert not [m for m in imported if m.split(".")[0] in {"activities", "core", "infra", "db"}]
    called = {
        node.func.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
    }
    assert not called & {"execute_activity", "start_activity", "execute_activity_method"}
