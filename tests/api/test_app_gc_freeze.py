"""The API process keeps the objects it built at start-up out of the cyclic collector
(gc.freeze in the lifespan), so a full collection never walks them on the request path."""

from __future__ import annotations

import gc
from typing import Any


async def test_started_app_objects_are_frozen(app: Any) -> None:
    # The app fixture has run the lifespan: its routes, models and metadata are frozen.
    assert gc.get_freeze_count() > 10_000
    frozen_before = gc.get_freeze_count()
    gc.collect()
    assert gc.get_freeze_count() == frozen_before
