"""A run's variables for one stage, from the snapshot the run took when it started.

Every stage of a run sees the same values: the run's own variables, its project's, and its
environment's (the stage's deploy environment, else the run's; without the secrets of a protected
environment, which only an approved deployment's release receives), taken when the run starts; later
edits apply to later runs (as a Vercel deployment keeps the variables it was built with). The
control plane decrypts them once, when the run starts (`resolve_run_variables`), and each stage's
share reaches its build host inside an encrypted Temporal payload: build hosts hold no key.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from temporalio.exceptions import ApplicationError

from forgeline import environment_variables as env_vars
from forgeline.crypto import DecryptionFailed, decrypt_str
from forgeline.settings import Settings
from workflows.runs_models import STAGE_INVALID_ERROR, ResolvedVariables, RunVariables


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


def _secret(variable: Any) -> bool:
    return not isinstance(variable, dict) or bool(variable.get("secret"))


def stage_variables(
    settings: Settings, snapshot: dict[str, Any], deploy_environment_id: str | None
) -> StageVariables:
    """Precedence: run > environment > project. Secrets are decrypted here only."""
    run_env, run_secrets = _run_level(settings, snapshot.get("run"))
    project_vars = snapshot.get("project") or []
    environment_id = deploy_environment_id or snapshot.get("environment_id") or ""
    # Only the run's project's environments are in the snapshot: another project's ID finds none.
    environment_vars = (snapshot.get("environments") or {}).get(environment_id) or []
    if environment_id in (snapshot.get("protected") or []):
        # A protected environment's secrets pass its approval gate first: only the release of an
        # approved deployment reads them (inside the deployment activity), never a stage.
        environment_vars = [v for v in environment_vars if not _secret(v)]
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


def resolve_run_variables(
    settings: Settings, snapshot: dict[str, Any], environment_ids: list[str]
) -> RunVariables:
    """What each stage of the run will see: the run's own environment ("") and each deploy
    environment its stages name. Values that no configured key decrypts fail the run."""
    try:
        return RunVariables(
            by_environment={
                key: ResolvedVariables(env=resolved.env, secrets=resolved.secrets)
                for key in {"", *environment_ids}
                for resolved in [stage_variables(settings, snapshot, key or None)]
            }
        )
    except DecryptionFailed as exc:
        raise ApplicationError(
            f"the run's variables cannot be read: {exc}",
            type=STAGE_INVALID_ERROR,
            non_retryable=True,
        ) from None


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
