"""A stage that ends only when the test lets it: it waits for a file the test writes into the
run's workspace. Tests of report sequences open it once the forge has the running report (a
report older than the run's status is dropped), so no fixed sleep decides what the forge sees."""

from __future__ import annotations

import uuid
from typing import Any

from forgeline.settings import Settings
from tests.runs.helpers import executions, wait_for

GATE = ".running-reported"
WAIT = f"until [ -e {GATE} ]; do sleep 0.1; done"


async def open_gate(session_maker: Any, settings: Settings, run_id: uuid.UUID) -> None:
    """Let the run's waiting stage end, once it runs (the workspace holds its checkout by then;
    the stage's own timeout bounds the wait)."""

    async def stage_running() -> bool:
        return any(e.status == "running" for e in await executions(session_maker, run_id))

    await wait_for(stage_running, timeout=60)
    (settings.workspaces_dir / str(run_id) / GATE).touch()
