"""After activation: probe the active deployment periodically and record failures; continue-as-new
keeps the history short. Ends when the deployment is no longer the active one."""

from __future__ import annotations

import contextlib
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from workflows.contracts.deployments import GONE, MONITOR_PROBE, STILL_ACTIVE
    from workflows.deployment_models import (
        HealthRequest,
        MonitorInput,
        MonitorProbe,
    )

MONITOR_RETRY = RetryPolicy(maximum_attempts=3, non_retryable_error_types=list(GONE))


@workflow.defn(name="DeploymentMonitorWorkflow")
class DeploymentMonitorWorkflow:
    def __init__(self) -> None:
        self._stop = False
        self._checks = 0
        self._consecutive_failures = 0

    @workflow.signal
    def stop(self) -> None:
        self._stop = True

    @workflow.query
    def checks(self) -> int:
        return self._checks

    @workflow.run
    async def run(self, inp: MonitorInput) -> int:
        self._checks = inp.checks_done
        self._consecutive_failures = inp.consecutive_failures
        for _ in range(inp.checks_per_run):
            with contextlib.suppress(TimeoutError):
                await workflow.wait_condition(
                    lambda: self._stop, timeout=timedelta(seconds=inp.interval_seconds)
                )
            if self._stop:
                return self._checks
            still = await STILL_ACTIVE.execute(
                MonitorProbe(deployment_id=inp.deployment_id),
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=MONITOR_RETRY,
            )
            if not still.active:
                return self._checks
            verdict = await MONITOR_PROBE.execute(
                HealthRequest(
                    deployment_id=inp.deployment_id, single_probe=True, **inp.probe_target()
                ),
                start_to_close_timeout=timedelta(seconds=inp.policy.request_timeout_seconds + 30),
                retry_policy=MONITOR_RETRY,
            )
            self._checks += 1
            self._consecutive_failures = 0 if verdict.healthy else self._consecutive_failures + 1
            if workflow.info().is_continue_as_new_suggested():
                break
        await workflow.wait_condition(workflow.all_handlers_finished)
        workflow.continue_as_new(
            inp.model_copy(
                update={
                    "checks_done": self._checks,
                    "consecutive_failures": self._consecutive_failures,
                }
            )
        )
