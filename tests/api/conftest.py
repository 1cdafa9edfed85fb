"""Fixtures of the API tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.api.support import client_at


@pytest.fixture
async def client(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the app whose requests come from a loopback address of the test's own."""
    async with client_at(app) as api:
        yield api
