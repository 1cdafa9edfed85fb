"""The HTTP side of stage logs: the object store and Temporal client of the app, and the
client's connection, handed to the core's log reader (core/runs/logs.py)."""

from __future__ import annotations

from functools import partial

from fastapi import Request

from api.deps import get_temporal
from core.runs.logs import LogReader
from infra.storage import ObjectStore, create_object_store


def object_store(request: Request) -> ObjectStore:
    store: ObjectStore | None = getattr(request.app.state, "object_store", None)
    if store is None:
        store = create_object_store(request.app.state.settings)
        request.app.state.object_store = store
    return store


def log_reader(request: Request) -> LogReader:
    return LogReader(
        session_maker=request.app.state.session_maker,
        store=lambda: object_store(request),
        temporal=partial(get_temporal, request),
        disconnected=request.is_disconnected,
    )
