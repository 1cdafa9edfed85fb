"""`forgeline billing ...`: a period's usage and closing an ended period; periods are checked
(real months in range) before anything reaches the API."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from core.billing.periods import Period
from forgeline.api_client import ApiError
from forgeline.cli.common import ApiKey, ApiUrl, AsJson, client, emit, fail, run, uuid_arg

NAME = "billing"
app = typer.Typer(help="Usage and invoices of your organization.", no_args_is_help=True)


def _period(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return Period.parse(value).key
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc


PeriodOption = Annotated[
    str | None,
    typer.Option(
        "--period", callback=_period, help="YYYY-MM, from 2000-01 to 2100-12 (default: see each)"
    ),
]


@app.command("usage")
def usage(
    period: PeriodOption = None,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
    as_json: AsJson = False,
) -> None:
    """Usage of a period by type (default: this month)."""
    with client(api_url, api_key) as api:
        data: dict[str, Any] = run(lambda: api.get("/v1/billing/usage", period=period))
        if as_json:
            emit(data, (), as_json=True)
            return
        emit(
            data["by_type"], ("usage_type", "quantity", "unit"), as_json=False, title=data["period"]
        )


@app.command("close")
def close(
    period: PeriodOption = None,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
    as_json: AsJson = False,
) -> None:
    """Invoice an ended period now (default: the subscription's open period once ended, else
    last month); a period that has not ended is refused."""
    body = {"period": period} if period else {}
    with client(api_url, api_key) as api:
        data = run(lambda: api.post("/v1/billing/invoices/run", body))
        emit(data, ("workflow_id", "period", "started"), as_json=as_json, title="Billing run")


INVOICE_COLUMNS = ("id", "invoice_number", "period", "status", "total", "amount_paid", "due_at")


@app.command("invoices")
def invoices(
    invoice: Annotated[
        str | None,
        typer.Argument(callback=lambda v: v and uuid_arg(v), help="One invoice, with its lines."),
    ] = None,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
    as_json: AsJson = False,
) -> None:
    """The organization's invoices, or one invoice with its line items and payments."""
    with client(api_url, api_key) as api:
        if invoice is None:
            items = run(lambda: api.paginate("/v1/billing/invoices"))
            emit(items, INVOICE_COLUMNS, as_json=as_json, title="Invoices")
            return
        detail: dict[str, Any] = run(lambda: api.get(f"/v1/billing/invoices/{invoice}"))
    if as_json:
        emit(detail, (), as_json=True)
        return
    emit(detail, INVOICE_COLUMNS, as_json=False, title=detail["invoice_number"])
    emit(
        detail["line_items"],
        ("kind", "description", "quantity", "unit_price", "amount"),
        as_json=False,
        title="Lines",
    )


@app.command("plan")
def plan(api_url: ApiUrl = None, api_key: ApiKey = None, as_json: AsJson = False) -> None:
    """The organization's subscription and the limits of its plan (Free without one)."""
    with client(api_url, api_key) as api:
        try:
            subscription: dict[str, Any] | None = api.get("/v1/billing/subscription")
        except ApiError as exc:
            if exc.status != 404:
                fail(exc)
            subscription = None
        plans: list[dict[str, Any]] = run(lambda: api.get("/v1/plans"))
    slug = subscription["plan"] if subscription else "free"
    current = next((p for p in plans if p["slug"] == slug), {"slug": slug})
    data = {"subscription": subscription, "plan": current}
    if as_json:
        emit(data, (), as_json=True)
        return
    emit(
        {**current, **(subscription or {"status": "no subscription"})},
        ("slug", "name", "status", "current_period_end", "max_projects", "included_build_minutes"),
        as_json=False,
        title="Plan",
    )
