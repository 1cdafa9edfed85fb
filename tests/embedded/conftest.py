"""Fixtures of the embedded-services security tests."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A short-lived directory of its own (short keeps a Postgres socket path valid)."""
    path = Path(tempfile.mkdtemp(prefix="fl-sec-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)
