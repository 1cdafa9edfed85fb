"""Record the Temporal histories that tests/replay/test_replay.py replays.

Runs chosen tests of a checkout of the product (normally the last commit before a workflow
change) with a fixed payload key, and after each test writes the history of every workflow
execution it left on the Temporal server to `histories/<WorkflowType>-<scenario>[-n].json`.

    python tests/replay/record.py --source /path/to/checkout [--only SCENARIO ...]

The same file is the pytest plugin the recording run loads (`-p record`); it is not a test module.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import pkgutil
import subprocess
import sys
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from temporalio import workflow
from temporalio.client import Client
from temporalio.service import RPCError

HERE = Path(__file__).resolve().parent
HISTORIES = HERE / "histories"
# The payload key the histories are sealed with: a key for these fixtures only, never deployed.
RECORDING_KEY = "qMZ8rj1Eis-9OvYI_6QIfQR7ILDgYnB47BEeWmE6XMQ="
OUT_ENV = "FORGELINE_REPLAY_OUT"
# A history must stay small enough to keep in git and to replay quickly.
MAX_BYTES = 1_000_000
# Runs of one workflow type kept per scenario (a backfill or a monitor can start many).
MAX_PER_TYPE = 4

# pytest node id (relative to the checkout) -> scenario name in the history file names.
SCENARIOS: dict[str, str] = {
    "tests/runs/test_pipeline_run.py::test_depends_on_runs_in_parallel[sandbox]": "parallel",
    "tests/runs/test_pipeline_run.py::test_retries_flaky_exit_codes_only[sandbox]": "retry",
    "tests/runs/test_pipeline_run.py::test_conditions_record_skipped[sandbox]": "skipped",
    "tests/runs/test_pipeline_run.py::test_cancel_mid_stage_kills[sandbox]": "cancelled",
    "tests/runs/test_pipeline_run.py::test_rerun_from_failed_reuses_succeeded[sandbox]": "rerun",
    "tests/deployments/test_pipeline_deploy_stage.py::"
    "test_deploy_stage_releases_the_run_to_a_static_environment": "deploy-stage",
    "tests/deployments/test_deployment_workflow.py::"
    "test_deploy_then_broken_release_rolls_back": "rollback",
    "tests/deployments/test_approvals_static_aws.py::"
    "test_approval_granted_then_static_site_is_active": "approved",
    "tests/deployments/test_approvals_static_aws.py::test_approval_rejected": "rejected",
    "tests/deployments/test_lifecycle.py::test_second_deployment_queues_behind_the_first": "queued",
    "tests/deployments/test_lifecycle.py::test_preview_torn_down_on_request": "teardown",
    "tests/deployments/test_lifecycle.py::test_preview_ttl_expires_on_a_durable_timer": "ttl",
    "tests/deployments/test_lifecycle.py::"
    "test_monitor_continues_as_new_and_stops_when_superseded": "monitor",
    "tests/agent/test_agent_workflow.py::test_planner_generates_validated_pipeline": "planner",
    "tests/agent/test_agent_workflow.py::test_llm_conversation_with_faults": "llm-faults",
    "tests/agent/test_agent_workflow.py::test_continue_as_new_carries_state": "continue-as-new",
    "tests/billing/test_billing_workflow.py::"
    "test_faults_still_give_one_invoice_and_one_charge": "stripe-faults",
    "tests/billing/test_billing_workflow.py::"
    "test_schedule_backfill_bills_once_and_can_pause": "schedule",
    "tests/billing/test_billing_time_skipping.py::"
    "test_dunning_ends_in_cancellation_and_free_plan": "dunning",
    "tests/e2e/test_smoke.py::test_worker_round_trips_a_pydantic_payload": "worker-process",
    "tests/runs/test_pipeline_run.py::test_stage_timeout[sandbox]": "timeout",
    "tests/deployments/test_deploy_stage_build_slots.py::"
    "test_a_run_awaiting_approval_gives_its_build_slot_to_the_next_run": "protected-deploy-stage",
    "tests/deployments/test_approvals_static_aws.py::"
    "test_approval_times_out_and_rejects": "approval-timeout",
    "tests/deployments/test_deployment_workflow.py::"
    "test_first_deploy_that_fails_health_is_failed_and_removed": "first-unhealthy",
    "tests/agent/test_agent_workflow.py::test_llm_rejected_falls_back_to_planner": "llm-fallback",
    "tests/billing/test_billing_workflow.py::"
    "test_plan_change_is_prorated_on_the_next_invoice": "plan-change",
    "tests/integrations/test_commit_status.py::"
    "test_github_status_sequence[sleep 3; echo ok-success-success]": "commit-status",
    "tests/integrations/test_commit_status.py::"
    "test_forge_outage_and_rate_limit_never_fail_the_run": "forge-outage",
    "tests/integrations/test_schedules.py::"
    "test_schedule_lifecycle_with_the_pipeline": "schedule-firing",
    "tests/integrations/test_pull_requests.py::"
    "test_pull_request_rows_follow_events_and_runs": "pr-tracking",
    "tests/integrations/test_pr_previews.py::test_pull_request_preview_lifecycle": "pr-preview",
    "tests/integrations/test_pr_comment_failures.py::"
    "test_forge_failures_delay_the_comment_never_the_run": "pr-comment-outage",
    "tests/notifications/test_delivery.py::"
    "test_a_500_is_retried_and_delivered_once": "notification-retry",
    "tests/notifications/test_delivery.py::"
    "test_receiver_down_past_the_retries_then_redelivered": "notification-redelivery",
    "tests/agent/test_verification.py::"
    "test_a_missing_setup_step_is_repaired_and_the_pipeline_verified": "verify-repair",
    "tests/agent/test_verification_llm.py::"
    "test_the_model_runs_reads_patches_and_verifies": "verify-llm",
    "tests/operations/test_reconciler_schedule.py::"
    "test_the_schedule_reflects_a_terminated_run_without_being_asked": "reconciler-schedule",
    "tests/operations/test_insights_rollups.py::"
    "test_the_rollup_schedule_stores_days_without_being_asked": "insights-rollup-schedule",
}


# --------------------------------------------------------------------------- workflow lookup


def workflow_types(classes: Iterable[Any]) -> dict[str, type]:
    """Registered workflow type name -> class, for the workflow classes among `classes`."""
    found: dict[str, type] = {}
    for value in classes:
        if isinstance(value, type):
            definition = workflow._Definition.from_class(value)
            if definition is not None and definition.name is not None:
                found.setdefault(definition.name, value)
    return found


def _namespace_classes(module: ModuleType) -> list[Any]:
    """Module-level objects of `module`, with the items of its module-level lists and tuples."""
    values: list[Any] = []
    for value in vars(module).values():
        values.append(value)
        if isinstance(value, list | tuple):
            values.extend(value)
    return values


def registered_workflows() -> dict[str, type]:
    """The workflow classes the worker registers, found as worker.py finds them: its own names
    and the names of every module its registration functions come from."""
    worker = importlib.import_module("worker")
    modules: dict[str, ModuleType] = {worker.__name__: worker}
    for value in vars(worker).values():
        name = getattr(value, "__module__", None)
        if callable(value) and isinstance(name, str) and name in sys.modules:
            modules.setdefault(name, sys.modules[name])
    classes: list[Any] = []
    for module in modules.values():
        classes.extend(_namespace_classes(module))
    return workflow_types(classes)


def package_workflows(package: str = "workflows") -> dict[str, type]:
    """Every workflow class defined in the modules of `package` (the product's workflows)."""
    root = importlib.import_module(package)
    classes: list[Any] = []
    for info in pkgutil.walk_packages(root.__path__, f"{package}."):
        classes.extend(_namespace_classes(importlib.import_module(info.name)))
    return workflow_types(classes)


# --------------------------------------------------------------------------- recording run


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, required=True, help="checkout to record from")
    parser.add_argument("--out", type=Path, default=HISTORIES, help="where histories go")
    parser.add_argument("--only", action="append", help="scenario name (repeatable)")
    args = parser.parse_args(list(argv) if argv is not None else None)
    source = args.source.resolve()
    chosen = [node for node, name in SCENARIOS.items() if not args.only or name in args.only]
    args.out.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "FORGELINE_PAYLOAD_KEYS": RECORDING_KEY,
        OUT_ENV: str(args.out.resolve()),
        # Only this plugin's module is added: the product's packages resolve to the checkout
        # (the current directory comes first on sys.path under `python -m`).
        "PYTHONPATH": str(HERE),
    }
    command = [sys.executable, "-m", "pytest", "-p", "record", "-q", *chosen]
    return subprocess.call(command, cwd=source, env=env)


# --------------------------------------------------------------------------- pytest plugin


@dataclass
class Recorder:
    out: Path
    seen: set[str] = field(default_factory=set)  # run IDs already written or skipped
    written: list[str] = field(default_factory=list)
    product_types: set[str] = field(default_factory=lambda: set(package_workflows()))

    async def record(self, client: Client, scenario: str) -> None:
        """Write every execution on `client`'s server that no earlier test left behind."""
        runs = [r async for r in self._runs(client)]
        counts: dict[str, int] = {}
        for workflow_id, run_id, workflow_type in runs:
            if run_id in self.seen:
                continue
            self.seen.add(run_id)
            handle = client.get_workflow_handle(workflow_id, run_id=run_id)
            history = await handle.fetch_history()
            if workflow_type not in self.product_types:
                continue  # a test's own driver workflow, not the product's
            counts[workflow_type] = counts.get(workflow_type, 0) + 1
            n = counts[workflow_type]
            if n > MAX_PER_TYPE:
                continue
            text = _with_workflow_id(history.to_json(), workflow_id)
            if len(text) > MAX_BYTES:
                print(f"record: {workflow_type} {workflow_id} is {len(text)} bytes, not kept")
                continue
            name = f"{workflow_type}-{scenario}" + (f"-{n}" if n > 1 else "")
            (self.out / f"{name}.json").write_text(text)
            self.written.append(name)

    async def _runs(self, client: Client) -> AsyncIterator[tuple[str, str, str]]:
        """Every run on the server, oldest first (continued-as-new runs are runs of their own).

        The time-skipping test server has no visibility store: there the runs are the ones this
        process started, followed through their continue-as-new chains and child workflows.
        Running executions (a lock, a monitor) are recorded as far as they got.
        """
        listed: list[tuple[str, str, str, str]] = []
        try:
            async for execution in client.list_workflows():
                listed.append(
                    (
                        str(execution.start_time),
                        execution.id,
                        execution.run_id,
                        execution.workflow_type,
                    )
                )
        except RPCError:
            listed = []
        if listed:
            for _, workflow_id, run_id, workflow_type in sorted(listed):
                yield workflow_id, run_id, workflow_type
            return
        queue = list(STARTED.get(_target(client), []))
        found: set[str] = set()
        while queue:
            workflow_id, run_id = queue.pop(0)
            if run_id in found:
                continue
            found.add(run_id)
            history = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
            first = history.events[0].workflow_execution_started_event_attributes
            yield workflow_id, run_id, first.workflow_type.name
            for event in history.events:
                if event.HasField("child_workflow_execution_started_event_attributes"):
                    child = event.child_workflow_execution_started_event_attributes
                    queue.append(
                        (child.workflow_execution.workflow_id, child.workflow_execution.run_id)
                    )
                if event.HasField("workflow_execution_continued_as_new_event_attributes"):
                    nxt = event.workflow_execution_continued_as_new_event_attributes
                    queue.append((workflow_id, nxt.new_execution_run_id))


def _with_workflow_id(text: str, workflow_id: str) -> str:
    """The time-skipping test server leaves the started event's workflow ID empty; the replay
    needs it (child workflow and lock IDs are derived from it), so it is filled in."""
    history = json.loads(text)
    started = history["events"][0]["workflowExecutionStartedEventAttributes"]
    if started.get("workflowId"):
        return text
    started["workflowId"] = workflow_id
    return json.dumps(history, indent=2)


# Server target -> (workflow ID, first run ID) of every workflow a client of this process started.
STARTED: dict[str, list[tuple[str, str]]] = {}


def _target(client: Client) -> str:
    return str(client.service_client.config.target_host)


def _remember_starts() -> None:
    original = Client.start_workflow

    async def start_workflow(self: Client, *args: Any, **kwargs: Any) -> Any:
        handle = await original(self, *args, **kwargs)
        STARTED.setdefault(_target(self), []).append((handle.id, handle.first_execution_run_id))
        return handle

    Client.start_workflow = start_workflow  # type: ignore[method-assign]


RECORDER: Recorder | None = None


def pytest_configure(config: pytest.Config) -> None:
    global RECORDER
    out = os.environ.get(OUT_ENV)
    if out:
        RECORDER = Recorder(Path(out))
        _remember_starts()


def pytest_collection_finish(session: pytest.Session) -> None:
    if RECORDER is None:
        return
    import workflows

    # The product is installed editable from another tree: a history recorded from the code
    # under change, instead of the checkout, would prove nothing.
    source = Path(workflows.__file__).resolve().parent.parent
    if source != Path.cwd().resolve():
        raise pytest.UsageError(f"workflows resolve to {source}, not to {Path.cwd()}")
    print(f"\nrecording from {source}")


@pytest.fixture(autouse=True)
async def _record_histories(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    yield
    if RECORDER is None:
        return
    scenario = _scenario(request.node.nodeid)
    if scenario is None:
        return
    for name in ("temporal_env", "time_skipping_env"):
        if name in request.fixturenames:
            env = request.getfixturevalue(name)
            await RECORDER.record(env.client, scenario)


def _scenario(nodeid: str) -> str | None:
    for node, name in SCENARIOS.items():
        if nodeid == node or nodeid.endswith(node):
            return name
    return None


def pytest_sessionfinish(session: pytest.Session) -> None:
    if RECORDER is not None:
        print(f"\nrecorded {len(RECORDER.written)} histories: {sorted(RECORDER.written)}")


if __name__ == "__main__":
    raise SystemExit(main())
