"""A run's variables for one stage, from the snapshot the run took when it started.

Every stage of a run sees the same values: the run's own variables, its project's, and its
environment's (the stage's deploy environment, else the run's), taken when the run starts; later
edits apply to later runs (as a Vercel deployment keeps the variables it was built with). Since
the snapshot cannot change while the run runs, a worker keeps it in memory: a stage's process
then starts while its attempt row is being written instead of after.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from forgeline import environment_variables as env_vars
from forgeline.crypto import decrypt_str
from forgeline.settings import Settings


@dataclass(frozen=True)
class StageVariables:
    env: dict[str, str]
    # Plain secret values, to mask in the stage's log.
    secrets: list[str]


def _run_level(settings: Settings, encrypted: str | None) -> tuple[dict[str, str], list[str]]:
    """Variables given with the run (decrypted here only) and their secret values."""
    if not encrypted:
        return {}, []
    items = json.loads(decrypt_str(encrypted, settings))
    env = {str(v["name"]): str(v["value"]) for v in items}
    secrets = [str(v["value"]) for v in items if v.get("secret")]
    return env, secrets


def stage_variables(
    settings: Settings, snapshot: dict[str, Any], deploy_environment_id: str | None
) -> StageVariables:
    """Precedence: run > environment > project. Secrets are decrypted here only."""
    run_env, run_secrets = _run_level(settings, snapshot.get("run"))
    project_vars = snapshot.get("project") or []
    environment_id = deploy_environment_id or snapshot.get("environment_id") or ""
    # Only the run's project's environments are in the snapshot: another project's ID finds none.
    environment_vars = (snapshot.get("environments") or {}).get(environment_id) or []
    return StageVariables(
        env={
            **env_vars.reveal(project_vars, settings),
            **env_vars.reveal(environment_vars, settings),
            **run_env,
        },
        secrets=[
            *run_secrets,
            *env_vars.secret_values(project_vars, settings),
            *env_vars.secret_values(environment_vars, settings),
        ],
    )


class RunVariablesCache:
    """The snapshots of the runs this worker has seen recently (the oldest go past `size`).

    Holds what the database holds (secret values encrypted); a run's entry is dropped when it
    finishes.
    """

    def __init__(self, size: int = 1024) -> None:
        self.size = size
        self._snapshots: OrderedDict[str, dict[str, Any]] = OrderedDict()

    def get(self, run_id: str) -> dict[str, Any] | None:
        snapshot = self._snapshots.get(run_id)
        if snapshot is not None:
            self._snapshots.move_to_end(run_id)
        return snapshot

    def put(self, run_id: str, snapshot: dict[str, Any]) -> None:
        self._snapshots[run_id] = snapshot
        self._snapshots.move_to_end(run_id)
        while len(self._snapshots) > self.size:
            self._snapshots.popitem(last=False)

    def drop(self, run_id: str) -> None:
        self._snapshots.pop(run_id, None)
