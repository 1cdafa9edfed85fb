"""`forgeline billing ...`: a period's usage and closing an ended period; periods are checked
(real months in range) before anything reaches the API."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from core.billing.periods import Period
from forgeline.cli.common import ApiKey, ApiUrl, AsJson, client, emit, run

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
