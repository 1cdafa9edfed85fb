"""Prometheus metrics of the API: request latency by route template, and product gauges."""
