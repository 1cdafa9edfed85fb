"""Delivery insight per project: run success and durations, flaky stages, queue time, DORA."""
