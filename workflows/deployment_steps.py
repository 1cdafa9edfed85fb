"""The release steps of DeploymentWorkflow, one activity call each with its timeout and retry
policy: build, release, verify, collect logs, retire, restore the previous version.

Called from the workflow (these run inside its event loop); no I/O of their own.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from workflows.contracts.deployments import (
        BUILD,
        COLLECT_LOGS,
        NON_RETRYABLE,
        RELEASE,
        RESTORE_PREVIOUS,
        RETIRE,
        VERIFY_HEALTH,
    )
    from workflows.deployment_approval import PROJECTION_RETRY
    from workflows.deployment_models import (
        BuildRequest,
        BuildResult,
        DeploymentInput,
        HealthRequest,
        HealthVerdict,
        LogCollectRequest,
        PreviousDeployment,
        ReleaseRequest,
        ReleaseResult,
        RetireRequest,
    )

RETIRE_TIMEOUT = timedelta(seconds=60)  # stops and removes containers
RELEASE_RETRY = RetryPolicy(
    maximum_attempts=5,
    maximum_interval=timedelta(seconds=10),
    non_retryable_error_types=list(NON_RETRYABLE),
)
BUILD_RETRY = RetryPolicy(maximum_attempts=3, non_retryable_error_types=list(NON_RETRYABLE))
LOGS_RETRY = RetryPolicy(maximum_attempts=3, non_retryable_error_types=list(NON_RETRYABLE))


async def build(inp: DeploymentInput) -> BuildResult:
    return await BUILD.execute(
        BuildRequest(
            deployment_id=inp.deployment_id,
            project_id=inp.project_id,
            provider=inp.provider,
            source=inp.source,
        ),
        start_to_close_timeout=timedelta(minutes=30),
        heartbeat_timeout=timedelta(seconds=60),
        retry_policy=BUILD_RETRY,
    )


async def release(inp: DeploymentInput, artifact: BuildResult) -> ReleaseResult:
    return await RELEASE.execute(
        ReleaseRequest(
            deployment_id=inp.deployment_id,
            organization_id=inp.organization_id,
            project_id=inp.project_id,
            environment_id=inp.environment_id,
            environment_type=inp.environment_type,
            provider=inp.provider,
            image=artifact.image,
            static_prefix=artifact.static_prefix,
            config=inp.config,
        ),
        start_to_close_timeout=timedelta(minutes=5),
        retry_policy=RELEASE_RETRY,
    )


def health_request(
    inp: DeploymentInput, release: ReleaseResult, artifact: BuildResult
) -> HealthRequest:
    return HealthRequest(
        deployment_id=inp.deployment_id,
        provider=inp.provider,
        url=release.url,
        container_name=release.container_name,
        static_prefix=artifact.static_prefix,
        # A release's first cloud resource is what its health is read from (the bucket of an
        # `aws` site); providers that serve through the proxy report none.
        bucket_name=release.resources[0] if release.resources else None,
        region=inp.config.region,
        policy=inp.config.health,
    )


async def verify(
    inp: DeploymentInput, release: ReleaseResult, artifact: BuildResult
) -> HealthVerdict:
    policy = inp.config.health
    return await VERIFY_HEALTH.execute(
        health_request(inp, release, artifact),
        start_to_close_timeout=timedelta(seconds=policy.window_seconds + 120),
        heartbeat_timeout=timedelta(seconds=max(5.0, policy.request_timeout_seconds * 3)),
        retry_policy=RELEASE_RETRY,
    )


async def collect_logs(inp: DeploymentInput, release: ReleaseResult) -> None:
    """The container's output so far; a failure here never fails the deployment."""
    if release.container_name is None:
        return
    try:
        await COLLECT_LOGS.execute(
            LogCollectRequest(
                deployment_id=inp.deployment_id, container_name=release.container_name
            ),
            start_to_close_timeout=timedelta(seconds=60),
            retry_policy=LOGS_RETRY,
        )
    except ActivityError:
        workflow.logger.warning("runtime logs of %s not collected", inp.deployment_id)


async def retire(req: RetireRequest) -> None:
    await RETIRE.execute(req, start_to_close_timeout=RETIRE_TIMEOUT, retry_policy=PROJECTION_RETRY)


async def restore_previous(previous: PreviousDeployment) -> None:
    await RESTORE_PREVIOUS.execute(
        previous, start_to_close_timeout=timedelta(minutes=5), retry_policy=RELEASE_RETRY
    )


def health_summary(verdict: HealthVerdict) -> dict[str, object]:
    """What the deployments row shows of a verification."""
    return {
        "status": "healthy" if verdict.healthy else "unhealthy",
        "last_check_at": verdict.checked_at.isoformat() if verdict.checked_at else None,
        "response_time_ms": verdict.last_latency_ms,
        "http_status": verdict.last_status,
        "checks_run": verdict.checks,
        "consecutive_passes": verdict.consecutive_passes,
        "failures": verdict.failures,
        "reason": verdict.reason,
        "checks": [{"name": "http_status", "passed": verdict.healthy}],
    }


def artifact_refs(artifact: BuildResult) -> dict[str, str]:
    out: dict[str, str] = {}
    if artifact.image:
        out["image"] = artifact.image
    if artifact.static_prefix:
        out["static_prefix"] = artifact.static_prefix
    return out


def failure_message(exc: BaseException) -> str:
    cause: BaseException | None = exc
    while cause is not None and cause.__cause__ is not None:
        cause = cause.__cause__
    return str(cause or exc)[:2000]
