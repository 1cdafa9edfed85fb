"""The stage scheduler without Temporal: which stages are ready and in what order, what is skipped
and why, what is reused, which stage may close its run, and the run's outcome."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from forgeline.statuses.runs import RunStatus, StageStatus
from workflows.runs_models import ReusableStage, StageConditions, StageSpec
from workflows.stage_scheduler import Reuse, Run, Skip, StageScheduler, Step, stage_dependencies


def spec(name: str, position: int, **fields: object) -> StageSpec:
    return StageSpec.model_validate(
        {"name": name, "position": position, "script": "true", "spec_hash": f"h-{name}", **fields}
    )


def scheduler(stages: list[StageSpec], **kw: object) -> StageScheduler:
    return StageScheduler(
        stages,
        branch=kw.get("branch", "main"),  # type: ignore[arg-type]
        changed_paths=kw.get("changed_paths"),  # type: ignore[arg-type]
        reusable=kw.get("reusable", {}),  # type: ignore[arg-type]
    )


def drive(
    sched: StageScheduler, outcome: Callable[[str], StageStatus] = lambda _: StageStatus.SUCCESS
) -> list[tuple[str, str]]:
    """Walk the scheduler as the workflow does, ending each started stage in start order."""
    log: list[tuple[str, str]] = []
    running: list[str] = []
    while not sched.done:
        for step in sched.sweep():
            name = step.stage.name
            if isinstance(step, Skip):
                log.append(("skip", name))
                sched.record(name, StageStatus.SKIPPED)
            elif isinstance(step, Reuse):
                log.append(("reuse", name))
                sched.record(name, StageStatus.SUCCESS)
            else:
                log.append(("run", name))
                running.append(name)
        if not running:
            for stage in sched.unreachable():
                log.append(("cycle", stage.name))
                sched.record_unreachable(stage.name, StageStatus.SKIPPED)
            break
        name = running.pop(0)
        sched.record(name, outcome(name), "boom")
    return log


def test_order_then_parallel_by_depends_on() -> None:
    stages = [
        spec("install", 0),
        spec("lint", 1, depends_on=["install"]),
        spec("test", 1, depends_on=["install"]),
        spec("build", 2),
    ]
    sched = scheduler(stages)
    first = list(sched.sweep())
    assert [type(s) for s in first] == [Run]
    assert first[0].stage.name == "install"
    sched.record("install", StageStatus.SUCCESS)
    # Both of install's dependents start in one sweep, in (position, name) order.
    assert [s.stage.name for s in sched.sweep()] == ["lint", "test"]
    sched.record("test", StageStatus.SUCCESS)
    assert list(sched.sweep()) == []  # build waits for every earlier stage
    sched.record("lint", StageStatus.SUCCESS)
    assert [s.stage.name for s in sched.sweep()] == ["build"]
    sched.record("build", StageStatus.SUCCESS)
    assert sched.done and sched.outcome == RunStatus.SUCCESS


def test_failure_skips_dependents_and_fails_the_run() -> None:
    stages = [spec("build", 0), spec("test", 1), spec("deploy", 2)]
    log = drive(
        scheduler(stages), lambda n: StageStatus.FAILED if n == "build" else StageStatus.SUCCESS
    )
    assert log == [("run", "build"), ("skip", "test"), ("skip", "deploy")]


def test_skip_reasons_name_the_broken_dependencies() -> None:
    stages = [spec("a", 0), spec("b", 0), spec("c", 1)]
    sched = scheduler(stages)
    assert [s.stage.name for s in sched.sweep()] == ["a", "b"]
    sched.record("b", StageStatus.TIMED_OUT, "slow")
    sched.record("a", StageStatus.FAILED, "exit 1")
    (step,) = list(sched.sweep())
    assert isinstance(step, Skip)
    assert step.reason == "dependency failed: a, b"
    sched.record("c", StageStatus.SKIPPED)
    assert sched.outcome == RunStatus.FAILED
    assert sched.failures == ["stage b timed_out: slow", "stage a failed: exit 1"]
    # A stage skipped because of a failure is broken too, but did not fail on its own account.
    assert sched.broken == {"a", "b", "c"} and sched.failed == {"a", "b"}


def test_allowed_failure_breaks_nothing() -> None:
    stages = [spec("flaky", 0, allow_failure=True), spec("next", 1)]
    sched = scheduler(stages)
    log = drive(sched, lambda n: StageStatus.FAILED if n == "flaky" else StageStatus.SUCCESS)
    assert log == [("run", "flaky"), ("run", "next")]
    assert sched.outcome == RunStatus.SUCCESS and sched.failures == []


@pytest.mark.parametrize(
    ("rule", "first", "expected"),
    [
        ("failure", StageStatus.FAILED, ("run", "cleanup")),
        ("failure", StageStatus.SUCCESS, ("skip", "cleanup")),
        ("always", StageStatus.FAILED, ("run", "cleanup")),
        ("always", StageStatus.SUCCESS, ("run", "cleanup")),
    ],
)
def test_previous_stage_rules(rule: str, first: StageStatus, expected: tuple[str, str]) -> None:
    stages = [
        spec("build", 0),
        spec("cleanup", 1, conditions=StageConditions(previous_stage_status=rule)),
    ]
    log = drive(scheduler(stages), lambda n: first if n == "build" else StageStatus.SUCCESS)
    assert log[1] == expected


def test_failure_rule_stage_does_not_propagate_its_skip() -> None:
    """A `failure`-only stage skipped on a green run is not broken: its dependents run."""
    stages = [
        spec("build", 0),
        spec("report", 1, conditions=StageConditions(previous_stage_status="failure")),
        spec("publish", 2),
    ]
    assert drive(scheduler(stages)) == [("run", "build"), ("skip", "report"), ("run", "publish")]


def test_branch_and_path_conditions() -> None:
    stages = [
        spec("docs", 0, conditions=StageConditions(paths=["docs/**"])),
        spec("release", 0, conditions=StageConditions(branches=["release/*"])),
        spec("any", 0),
    ]
    sched = scheduler(stages, branch="main", changed_paths=["src/app.py"])
    steps = list(sched.sweep())
    reasons = {s.stage.name: s.reason for s in steps if isinstance(s, Skip)}
    assert reasons == {
        "docs": "no changed path matches ['docs/**']",
        "release": "branch 'main' does not match ['release/*']",
    }
    assert [s.stage.name for s in steps if isinstance(s, Run)] == ["any"]
    # Unknown changed paths (no repository, no parent): path conditions match.
    unknown = scheduler(stages, branch="release/1.0", changed_paths=None)
    assert [type(s) for s in unknown.sweep()] == [Run, Run, Run]
    # No branch at all never matches a branch condition.
    nobranch = scheduler([stages[1]], branch=None)
    (step,) = list(nobranch.sweep())
    assert isinstance(step, Skip) and step.reason == "branch None does not match ['release/*']"


def test_hostile_names_and_patterns_are_data() -> None:
    """Glob metacharacters, quotes and newlines in names, branches and paths only match as globs
    (fnmatch, case-sensitive); nothing is evaluated."""
    odd = 'x"; rm -rf / #\n$(id)'
    stages = [
        spec(odd, 0, conditions=StageConditions(branches=["[!m]*"], paths=["*.py"])),
        spec("Case", 0, conditions=StageConditions(branches=["MAIN"])),
    ]
    sched = scheduler(stages, branch="main", changed_paths=["a.PY", "b.py"])
    steps = {s.stage.name: s for s in sched.sweep()}
    skipped = steps[odd]
    assert isinstance(skipped, Skip) and "does not match" in skipped.reason
    assert isinstance(steps["Case"], Skip)


def test_dependencies_on_unknown_or_itself_are_ignored() -> None:
    stages = [spec("a", 0, depends_on=["a", "ghost"]), spec("b", 1, depends_on=["a"])]
    assert stage_dependencies(stages) == {"a": set(), "b": {"a"}}
    assert drive(scheduler(stages)) == [("run", "a"), ("run", "b")]


def test_cycle_is_skipped_visibly_and_fails_the_run() -> None:
    stages = [spec("a", 0, depends_on=["b"]), spec("b", 1, depends_on=["a"]), spec("c", 2)]
    sched = scheduler(stages)
    assert drive(sched) == [("cycle", "a"), ("cycle", "b"), ("cycle", "c")]
    assert sched.outcome == RunStatus.FAILED


def test_reuse_needs_the_same_spec_hash() -> None:
    stages = [spec("build", 0), spec("test", 1)]
    reusable = {
        "build": ReusableStage(execution_id="e1", spec_hash="h-build"),
        "test": ReusableStage(execution_id="e2", spec_hash="changed"),
    }
    sched = scheduler(stages, reusable=reusable)
    steps: list[Step] = []
    for step in sched.sweep():
        steps.append(step)
        if isinstance(step, Reuse):
            sched.record(step.stage.name, StageStatus.SUCCESS)
    assert isinstance(steps[0], Reuse) and steps[0].reusable.execution_id == "e1"
    # The reused build is recorded at once: test is ready in the same sweep, and runs again.
    assert isinstance(steps[1], Run) and steps[1].stage.name == "test"


def test_a_skip_recorded_mid_sweep_readies_later_stages() -> None:
    """The sweep is lazy: each step sees what the previous one recorded."""
    stages = [spec("a", 0, conditions=StageConditions(branches=["nope"])), spec("b", 1)]
    sched = scheduler(stages)
    steps: list[Step] = []
    for step in sched.sweep():
        steps.append(step)
        if isinstance(step, Skip):
            sched.record(step.stage.name, StageStatus.SKIPPED)
    assert [(type(s), s.stage.name) for s in steps] == [(Skip, "a"), (Run, "b")]


def test_only_the_last_stage_of_a_green_run_decides_it() -> None:
    stages = [spec("a", 0), spec("b", 1), spec("c", 2, deploy_environment_id="env")]
    sched = scheduler(stages)
    (a,) = list(sched.sweep())
    assert isinstance(a, Run) and not a.decides_run
    sched.record("a", StageStatus.SUCCESS)
    (b,) = list(sched.sweep())
    assert isinstance(b, Run) and not b.decides_run
    sched.record("b", StageStatus.SUCCESS)
    (c,) = list(sched.sweep())
    # The last stage, but a deployment follows it: the workflow closes the run.
    assert isinstance(c, Run) and not c.decides_run

    two = scheduler([spec("x", 0), spec("y", 0)])
    x, y = list(two.sweep())
    assert isinstance(x, Run) and isinstance(y, Run)
    assert not x.decides_run and not y.decides_run  # another stage was still to end
    last = scheduler([spec("x", 0), spec("y", 1)])
    next(iter(last.sweep()))
    last.record("x", StageStatus.SUCCESS)
    (only,) = list(last.sweep())
    assert isinstance(only, Run) and only.decides_run


def test_nothing_decides_a_run_that_already_failed() -> None:
    always = StageConditions(previous_stage_status="always")
    sched = scheduler([spec("a", 0), spec("z", 1, conditions=always)])
    next(iter(sched.sweep()))
    sched.record("a", StageStatus.FAILED)
    (z,) = list(sched.sweep())
    assert isinstance(z, Run) and not z.decides_run


def test_no_stages_is_a_success() -> None:
    sched = scheduler([])
    assert sched.done and drive(sched) == [] and sched.outcome == RunStatus.SUCCESS


def test_statuses_serialize_as_before() -> None:
    """StrEnum members compare and format as the strings histories and rows hold."""
    assert str(StageStatus.TIMED_OUT) == "timed_out" and f"{RunStatus.CANCELLED}" == "cancelled"
    assert StageStatus("timed_out") is StageStatus.TIMED_OUT
    dumped = spec("s", 0).model_dump(mode="json")
    assert dumped["conditions"]["previous_stage_status"] == "success"
