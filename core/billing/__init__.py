"""Billing: plan limits, pricing, invoicing rules and the queries behind them."""
