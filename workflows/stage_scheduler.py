"""Which stage of a run goes next: ready stages in order, what to skip and why, what to reuse,
and the run's outcome from the results recorded. Pure (no Temporal): PipelineRunWorkflow asks it
what to do and carries each step out as an activity.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from forgeline.statuses.runs import PreviousStageRule, RunStatus, StageStatus
from workflows.runs_models import ReusableStage, StageResult, StageSpec

# A stage that ended so, and is not allowed to fail, breaks the stages that need it.
BROKEN_STATUSES = frozenset({StageStatus.FAILED, StageStatus.TIMED_OUT, StageStatus.CANCELLED})


class StageOrder(Protocol):
    """What the dependency rule reads of a stage (a run's StageSpec, the console's graph shape)."""

    @property
    def name(self) -> str: ...
    @property
    def position(self) -> int: ...
    @property
    def depends_on(self) -> Sequence[str]: ...


def stage_dependencies(stages: Sequence[StageOrder]) -> dict[str, set[str]]:
    """Explicit depends_on wins; otherwise a stage waits for every stage earlier in `order`."""
    names = {s.name for s in stages}
    deps: dict[str, set[str]] = {}
    for stage in stages:
        if stage.depends_on:
            deps[stage.name] = {d for d in stage.depends_on if d in names and d != stage.name}
        else:
            deps[stage.name] = {s.name for s in stages if s.position < stage.position}
    return deps


def _matches_any(value: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(value, p) for p in patterns)


def skip_reason(
    stage: StageSpec,
    *,
    branch: str | None,
    changed_paths: list[str] | None,
    broken_deps: list[str],
) -> str | None:
    """Why a stage does not run, or None when it does."""
    if stage.skip:
        return stage.skip
    cond = stage.conditions
    rule = cond.previous_stage_status
    if rule == PreviousStageRule.SUCCESS and broken_deps:
        return f"dependency failed: {', '.join(sorted(broken_deps))}"
    if rule == PreviousStageRule.FAILURE and not broken_deps:
        return "runs only when a previous stage failed"
    if cond.branches and not (branch and _matches_any(branch, cond.branches)):
        return f"branch {branch!r} does not match {cond.branches}"
    if (
        cond.paths
        and changed_paths is not None
        and not any(_matches_any(p, cond.paths) for p in changed_paths)
    ):
        return f"no changed path matches {cond.paths}"
    return None


@dataclass(frozen=True)
class Skip:
    """Record the stage as skipped, for `reason`."""

    stage: StageSpec
    reason: str


@dataclass(frozen=True)
class Reuse:
    """Take the stage's result from the run being re-run."""

    stage: StageSpec
    reusable: ReusableStage


@dataclass(frozen=True)
class Run:
    """Start an attempt of the stage. `decides_run`: the last stage left, nothing failed so far
    and no deployment to follow, so its success is the run's."""

    stage: StageSpec
    decides_run: bool


Step = Skip | Reuse | Run


class StageScheduler:
    """A run's stages as a DAG (order + depends_on) under their conditions.

    The caller walks `sweep()`, carries out each step and records each stage's end with
    `record()`; when a sweep starts nothing and nothing runs, `unreachable()` names what is left.
    """

    def __init__(
        self,
        stages: list[StageSpec],
        *,
        branch: str | None,
        changed_paths: list[str] | None,
        reusable: dict[str, ReusableStage],
    ) -> None:
        self.specs = {s.name: s for s in stages}
        self.order = sorted(self.specs, key=lambda n: (self.specs[n].position, n))
        self.deps = stage_dependencies(stages)
        self.branch = branch
        self.changed_paths = changed_paths
        self.reusable = reusable
        self.ended: dict[str, StageStatus] = {}
        self.running: set[str] = set()
        # Failed (not allowed to) or skipped because of a failure.
        self.broken: set[str] = set()
        # Failed on their own account: the run fails.
        self.failed: set[str] = set()
        # Why the run failed, stage by stage.
        self.failures: list[str] = []
        # Matrix legs cancelled because a sibling failed (fail-fast), and why.
        self.cancelled_legs: dict[str, str] = {}

    @property
    def done(self) -> bool:
        return len(self.ended) >= len(self.specs)

    def sweep(self) -> Iterator[Step]:
        """The stages ready now, in order, each with what to do. Lazy: each step is decided
        after the previous one was carried out (a skip recorded makes its dependents ready)."""
        for name in self.order:
            if name in self.ended or name in self.running:
                continue
            if not self.deps[name] <= self.ended.keys():
                continue
            stage = self.specs[name]
            reason = skip_reason(
                stage,
                branch=self.branch,
                changed_paths=self.changed_paths,
                broken_deps=[d for d in self.deps[name] if d in self.broken],
            )
            if reason is not None:
                if stage.conditions.previous_stage_status == PreviousStageRule.SUCCESS and (
                    self.deps[name] & self.broken
                ):
                    self.broken.add(name)
                yield Skip(stage, reason)
                continue
            failed_leg = self._failed_sibling(stage)
            if failed_leg is not None:
                yield Skip(stage, f"fail-fast: matrix leg {failed_leg} failed")
                continue
            reusable = self.reusable.get(name)
            if reusable is not None and reusable.spec_hash == stage.spec_hash:
                yield Reuse(stage, reusable)
                continue
            decides_run = (
                not self.running
                and not self.failed
                and len(self.ended) == len(self.specs) - 1
                and not stage.deploy_environment_id
            )
            self.running.add(name)
            yield Run(stage, decides_run)

    def record(self, name: str, status: StageStatus, error: str | None = None) -> None:
        """The stage ended with `status` (skipped, reused or its last attempt's)."""
        self.running.discard(name)
        self.ended[name] = status
        if status in BROKEN_STATUSES and not self.specs[name].allow_failure:
            self.broken.add(name)
            self.failed.add(name)
            self.failures.append(f"stage {name} {status}: {error or 'no detail'}")

    def _failed_sibling(self, stage: StageSpec) -> str | None:
        leg = stage.matrix_leg
        if leg is None or not leg.fail_fast:
            return None
        for name in sorted(self.failed):
            other = self.specs[name].matrix_leg
            if other is not None and other.stage == leg.stage:
                return name
        return None

    def fail_fast_cancels(self, name: str) -> list[str]:
        """The running sibling legs to cancel now that leg `name` failed (its matrix being
        fail-fast); none for a stage that is not a leg."""
        leg = self.specs[name].matrix_leg
        if leg is None or not leg.fail_fast or name not in self.failed:
            return []
        cancels = sorted(
            n
            for n in self.running
            if (other := self.specs[n].matrix_leg) is not None and other.stage == leg.stage
        )
        for sibling in cancels:
            self.cancelled_legs.setdefault(sibling, f"cancelled: matrix leg {name} failed")
        return cancels

    def leg_result(self, name: str, result: StageResult) -> StageResult:
        """A leg cancelled by `fail_fast_cancels` ended cancelled, whatever its activity said."""
        why = self.cancelled_legs.get(name)
        if why is None:
            return result
        return result.model_copy(update={"status": StageStatus.CANCELLED, "error": why})

    def unreachable(self) -> list[StageSpec]:
        """Stages that can never become ready (a dependency cycle), in order."""
        return [self.specs[n] for n in self.order if n not in self.ended and n not in self.running]

    def record_unreachable(self, name: str, status: StageStatus) -> None:
        """An unreachable stage was recorded as skipped: it fails the run."""
        self.ended[name] = status
        self.broken.add(name)
        self.failed.add(name)

    @property
    def outcome(self) -> RunStatus:
        return RunStatus.FAILED if self.failed else RunStatus.SUCCESS
