"""`pipelines.triggers` as a validated model, and whether a forge event starts a pipeline.

`on_push {branches, tags, paths, paths_ignore}`, `on_pull_request {branches, types, paths,
paths_ignore}`, `manual`, `schedule [{cron, timezone}]` (core.integrations.cron) and
`concurrency`: the filters of GitHub Actions with its glob semantics (core.integrations.globs).
An event with no trigger for it starts nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from core.integrations.cron import InvalidCron, validate_cron, validate_timezone
from core.integrations.globs import InvalidPattern, matches, validate_patterns
from workflows.integrations_models import ForgeEvent

log = logging.getLogger("forgeline.integrations")

MAX_PATTERNS = 100
MAX_SCHEDULES = 20
PullRequestType = Literal["opened", "synchronize", "reopened", "closed"]
DEFAULT_PR_TYPES: list[PullRequestType] = ["opened", "synchronize", "reopened"]

Patterns = list[str] | None


def _check(value: list[str] | None) -> list[str] | None:
    if value is None:
        return None
    if len(value) > MAX_PATTERNS:
        raise ValueError(f"at most {MAX_PATTERNS} patterns")
    try:
        return validate_patterns(value)
    except InvalidPattern as exc:
        raise ValueError(str(exc)) from exc


class _Filter(BaseModel):
    model_config = ConfigDict(extra="forbid")

    paths: Patterns = None
    paths_ignore: Patterns = None

    @field_validator("paths", "paths_ignore")
    @classmethod
    def _patterns(cls, value: list[str] | None) -> list[str] | None:
        return _check(value)

    @model_validator(mode="after")
    def _one_path_filter(self) -> Self:
        if self.paths is not None and self.paths_ignore is not None:
            raise ValueError("use either paths or paths_ignore, not both (as GitHub Actions)")
        return self

    def paths_selected(self, changed: Sequence[str] | None) -> bool:
        """`changed` None means unknown (too many, history unavailable): filters match."""
        if changed is None:
            return True
        if self.paths is not None:
            return any(matches(self.paths, p) for p in changed)
        if self.paths_ignore is not None:
            return any(not matches(self.paths_ignore, p) for p in changed)
        return True

    @property
    def filters_paths(self) -> bool:
        return self.paths is not None or self.paths_ignore is not None


class OnPush(_Filter):
    branches: Patterns = None
    tags: Patterns = None

    @field_validator("branches", "tags")
    @classmethod
    def _refs(cls, value: list[str] | None) -> list[str] | None:
        return _check(value)

    def ref_selected(self, ref_type: str, name: str) -> bool:
        """No branch or tag filter: every push. One of them only: the other kind never."""
        if self.branches is None and self.tags is None:
            return True
        patterns = self.branches if ref_type == "branch" else self.tags
        return patterns is not None and matches(patterns, name)


class OnPullRequest(_Filter):
    # Patterns of the pull request's target (base) branch.
    branches: Patterns = None
    types: list[PullRequestType] = Field(default_factory=lambda: list(DEFAULT_PR_TYPES))

    @field_validator("branches")
    @classmethod
    def _refs(cls, value: list[str] | None) -> list[str] | None:
        return _check(value)


class ScheduleEntry(BaseModel):
    """One cron entry; each becomes a Temporal Schedule of the pipeline."""

    model_config = ConfigDict(extra="forbid")

    cron: str = Field(max_length=200)
    timezone: str = Field(default="UTC", max_length=64)

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        try:
            return validate_cron(value)
        except InvalidCron as exc:
            raise ValueError(str(exc)) from exc

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        try:
            return validate_timezone(value)
        except InvalidCron as exc:
            raise ValueError(str(exc)) from exc


class Concurrency(BaseModel):
    """Like GitHub's `concurrency.cancel-in-progress`: a newer event of the same pull request
    (or branch) cancels the pipeline's runs of it still in progress."""

    model_config = ConfigDict(extra="forbid")

    cancel_in_progress_pull_requests: bool = True
    cancel_in_progress_pushes: bool = False


class Triggers(BaseModel):
    model_config = ConfigDict(extra="forbid")

    on_push: OnPush | None = None
    on_pull_request: OnPullRequest | None = None
    manual: bool = True
    # Run by Temporal Schedules (core.integrations.schedules), not by forge events.
    schedule: list[ScheduleEntry] = Field(default_factory=list, max_length=MAX_SCHEDULES)
    concurrency: Concurrency = Field(default_factory=Concurrency)

    @field_validator("schedule", mode="before")
    @classmethod
    def _one_entry(cls, value: Any) -> Any:
        """A lone cron string or entry (as some generated pipelines hold) is a list of one."""
        if isinstance(value, str):
            return [{"cron": value}]
        if isinstance(value, dict):
            return [value]
        return value

    def normalized(self) -> dict[str, Any]:
        """What is stored: every default spelled out, absent filters left out."""
        return self.model_dump(mode="json", exclude_none=True)


def parse_triggers(raw: dict[str, Any] | None) -> Triggers | None:
    """The stored triggers, or None (logged) when they are not valid: a pipeline whose
    triggers cannot be read starts on no event rather than on every one."""
    try:
        return Triggers.model_validate(raw or {})
    except ValidationError as exc:
        log.warning("pipeline triggers invalid, no event starts it: %s", exc.errors()[:3])
        return None


def _filter_for(triggers: Triggers, event: ForgeEvent) -> _Filter | None:
    """The event's filter when its ref, event and type filters select it."""
    if event.kind == "push":
        push = triggers.on_push
        if push is None or not push.ref_selected(event.ref_type, event.ref_name):
            return None
        return push
    pull = triggers.on_pull_request
    if pull is None or event.pr_action not in pull.types:
        return None
    if pull.branches is not None and not matches(pull.branches, event.base_branch or ""):
        return None
    return pull


def ref_selected(triggers: Triggers, event: ForgeEvent) -> tuple[bool, bool]:
    """(selected by everything but paths, whether a path filter still has to decide). Path
    filters are not evaluated for tag pushes, as in GitHub Actions."""
    selected = _filter_for(triggers, event)
    if selected is None:
        return False, False
    if event.kind == "push" and event.ref_type == "tag":
        return True, False
    return True, selected.filters_paths


def paths_selected(triggers: Triggers, event: ForgeEvent, changed: Sequence[str] | None) -> bool:
    selected = _filter_for(triggers, event)
    if selected is None:
        return False
    if event.kind == "push" and event.ref_type == "tag":
        return True
    return selected.paths_selected(changed)
