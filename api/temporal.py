"""The API's Temporal client, connected lazily and retried: the API runs while Temporal is down."""

from __future__ import annotations

import asyncio
import logging
import time

from temporalio.client import Client

from api.errors import ServiceUnavailable
from forgeline.settings import Settings
from forgeline.temporal_client import connect_temporal

logger = logging.getLogger("forgeline.api.temporal")


class TemporalConnection:
    """Holds one client per process; reconnects at most every `retry_seconds` after a failure."""

    def __init__(
        self, settings: Settings, *, connect_timeout: float = 3.0, retry_seconds: float = 2.0
    ) -> None:
        self._settings = settings
        self._connect_timeout = connect_timeout
        self._retry_seconds = retry_seconds
        self._client: Client | None = None
        self._last_failure = 0.0
        self._last_error: str | None = None
        self._lock = asyncio.Lock()

    @property
    def client(self) -> Client | None:
        return self._client

    @property
    def last_error(self) -> str | None:
        return self._last_error

    def set_client(self, client: Client) -> None:
        """Use an existing client (tests hand in the dev server's)."""
        self._client = client
        self._last_error = None

    async def get(self) -> Client:
        if self._client is not None:
            return self._client
        async with self._lock:
            if self._client is not None:
                return self._client
            if time.monotonic() - self._last_failure < self._retry_seconds:
                raise ServiceUnavailable("Temporal is not reachable; retry shortly")
            try:
                self._client = await asyncio.wait_for(
                    connect_temporal(self._settings), timeout=self._connect_timeout
                )
                self._last_error = None
            except Exception as exc:  # any connect failure means "unreachable", never a crash
                self._last_failure = time.monotonic()
                self._last_error = type(exc).__name__
                logger.warning("Temporal not reachable: %s", type(exc).__name__)
                raise ServiceUnavailable("Temporal is not reachable; retry shortly") from exc
            return self._client
