"""`forgeline billing ...`: a period's usage and closing an ended period; periods are checked
(real months in range) before anything reaches the API."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from core.billing.periods import Period
from forgeline.api_client import ApiError
from forgeline.cli.common import Connection, api_command, emit, fail, run, uuid_arg

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


@api_command(app, "usage")
def usage(conn: Connection, period: PeriodOption = None) -> None:
    """Usage of a period by type (default: this month)."""
    data: dict[str, Any] = conn.call(lambda api: api.get("/v1/billing/usage", period=period))
    if conn.printed_json(data):
        return
    emit(data["by_type"], ("usage_type", "quantity", "unit"), as_json=False, title=data["period"])


@api_command(app, "close")
def close(conn: Connection, period: PeriodOption = None) -> None:
    """Invoice an ended period now (default: the subscription's open period once ended, else
    last month); a period that has not ended is refused."""
    body = {"period": period} if period else {}
    data = conn.call(lambda api: api.post("/v1/billing/invoices/run", body))
    conn.emit(data, ("workflow_id", "period", "started"), title="Billing run")


INVOICE_COLUMNS = ("id", "invoice_number", "period", "status", "total", "amount_paid", "due_at")


@api_command(app, "invoices")
def invoices(
    conn: Connection,
    invoice: Annotated[
        str | None,
        typer.Argument(callback=lambda v: v and uuid_arg(v), help="One invoice, with its lines."),
    ] = None,
) -> None:
    """The organization's invoices, or one invoice with its line items and payments."""
    if invoice is None:
        items = conn.call(lambda api: api.paginate("/v1/billing/invoices"))
        conn.emit(items, INVOICE_COLUMNS, title="Invoices")
        return
    detail: dict[str, Any] = conn.call(lambda api: api.get(f"/v1/billing/invoices/{invoice}"))
    if conn.printed_json(detail):
        return
    emit(detail, INVOICE_COLUMNS, as_json=False, title=detail["invoice_number"])
    emit(
        detail["line_items"],
        ("kind", "description", "quantity", "unit_price", "amount"),
        as_json=False,
        title="Lines",
    )


@api_command(app, "plan")
def plan(conn: Connection) -> None:
    """The organization's subscription and the limits of its plan (Free without one)."""
    with conn.client() as api:
        try:
            subscription: dict[str, Any] | None = api.get("/v1/billing/subscription")
        except ApiError as exc:
            if exc.status != 404:
                fail(exc)
            subscription = None
        plans: list[dict[str, Any]] = run(lambda: api.get("/v1/plans"))
    slug = subscription["plan"] if subscription else "free"
    current = next((p for p in plans if p["slug"] == slug), {"slug": slug})
    if conn.printed_json({"subscription": subscription, "plan": current}):
        return
    emit(
        {**current, **(subscription or {"status": "no subscription"})},
        ("slug", "name", "status", "current_period_end", "max_projects", "included_build_minutes"),
        as_json=False,
        title="Plan",
    )
