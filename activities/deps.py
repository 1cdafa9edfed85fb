"""What worker.py builds once per process and hands to every task queue's registration."""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client

from forgeline.settings import Settings


@dataclass(frozen=True)
class WorkerDeps:
    settings: Settings
    session_maker: async_sessionmaker[AsyncSession]
    temporal: Client


@dataclass
class Registration:
    """Workflows and activity callables one domain contributes to its task queue's worker."""

    task_queue: str
    workflows: Sequence[type] = field(default_factory=list)
    activities: Sequence[Callable[..., Any]] = field(default_factory=list)
    # Called when the worker shuts down (close SDK clients, stop background tasks).
    on_shutdown: Sequence[Callable[[], Any]] = field(default_factory=list)
    # Chores the worker runs beside its pollers (started with it, cancelled when it stops).
    background: Sequence[Callable[[], Coroutine[Any, Any, None]]] = field(default_factory=list)
