"""Temporal adapters of the forge-integration domain: unpack the contract input, call the core
or the forge and git wrappers, map their errors to retry decisions."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError

from activities.integrations.errors import forge_errors
from core.integrations import (
    check_runs,
    commit_status,
    event_runs,
    pr_reports,
    pull_requests,
    schedules,
)
from core.integrations import repository as queries
from core.integrations.clone_access import (
    InstallationTokenUnavailable,
    InstallationUnusable,
    clone_access,
    clone_plan,
)
from db.session import session_scope
from forgeline.settings import (
    DEPLOYMENTS_TASK_QUEUE,
    PIPELINES_TASK_QUEUE,
    Settings,
)
from infra import github_app
from infra.forges import (
    CommitStatus,
    status_client,
)
from infra.git import GitError
from infra.git_changes import changed_paths
from infra.github_app import CheckRunReport
from workflows.contracts.integrations import (
    COMPUTE_CHANGED_PATHS,
    MATCH_TRIGGERS,
    RECORD_DELIVERY_OUTCOME,
    RECORD_PULL_REQUEST,
    REPORT_COMMIT_STATUS,
    START_RUNS,
    START_SCHEDULED_RUN,
)
from workflows.integrations_models import (
    DELIVERY_NOT_FOUND_ERROR,
    ChangedPaths,
    ChangedPathsInput,
    CommitStatusInput,
    CommitStatusResult,
    DeliveryOutcome,
    ForgeEvent,
    ScheduledRun,
    ScheduledRunInput,
    StartedRuns,
    StartRunsInput,
    TriggerCandidates,
)


class IntegrationActivities:
    def __init__(
        self,
        settings: Settings,
        session_maker: async_sessionmaker[AsyncSession],
        temporal: Client,
        *,
        run_task_queue: str = PIPELINES_TASK_QUEUE,
        status_task_queue: str | None = None,
        deployments_task_queue: str = DEPLOYMENTS_TASK_QUEUE,
    ) -> None:
        self.deployments_task_queue = deployments_task_queue
        self.settings = settings
        self.session_maker = session_maker
        self.temporal = temporal
        self.run_task_queue = run_task_queue
        # Commit statuses and pull request reports: the settings' integrations queue unless told.
        self.status_task_queue = status_task_queue or settings.integrations_task_queue

    @MATCH_TRIGGERS.implement
    async def match_triggers(self, event: ForgeEvent) -> TriggerCandidates:
        async with self.session_maker() as session:
            return await event_runs.match_triggers(session, event)

    @COMPUTE_CHANGED_PATHS.implement
    async def compute_changed_paths(self, inp: ChangedPathsInput) -> ChangedPaths:
        event = inp.event
        async with self.session_maker() as session:
            plan = await clone_plan(session, uuid.UUID(event.repository_id))
        if plan is None:
            return ChangedPaths()
        try:
            access = await clone_access(self.settings, plan)
        except InstallationUnusable:
            # Path filters then match, as when git cannot tell; the run's checkout says why.
            return ChangedPaths()
        except InstallationTokenUnavailable as exc:
            raise ApplicationError(exc.detail, type="GitError") from None
        try:
            paths = await changed_paths(
                access.url,
                head=event.head_sha,
                before=event.before_sha if event.kind == "push" else None,
                base_sha=event.base_sha,
                base_branch=event.base_branch,
                token=access.token,
                allow_local=self.settings.allow_local_repositories,
                operator_host=access.operator_host,
                on_progress=activity.heartbeat,
            )
        except GitError as exc:
            raise ApplicationError(str(exc), type="GitError") from exc
        return ChangedPaths(paths=paths)

    @START_RUNS.implement
    async def start_runs(self, inp: StartRunsInput) -> StartedRuns:
        return await event_runs.start_runs(
            self.session_maker,
            self.temporal,
            self.settings,
            inp,
            run_task_queue=self.run_task_queue,
            status_task_queue=self.status_task_queue,
        )

    @START_SCHEDULED_RUN.implement
    async def start_scheduled_run(self, inp: ScheduledRunInput) -> ScheduledRun:
        return await schedules.start_scheduled_run(
            self.session_maker,
            self.temporal,
            self.settings,
            inp,
            run_task_queue=self.run_task_queue,
        )

    @RECORD_DELIVERY_OUTCOME.implement
    async def record_delivery_outcome(self, outcome: DeliveryOutcome) -> None:
        async with session_scope(self.session_maker) as session:
            found = await queries.record_outcome(
                session, uuid.UUID(outcome.delivery_row_id), outcome.status, outcome.error
            )
        if not found:
            raise ApplicationError(
                f"delivery {outcome.delivery_row_id} not found", type=DELIVERY_NOT_FOUND_ERROR
            )

    @RECORD_PULL_REQUEST.implement
    async def record_pull_request(self, event: ForgeEvent) -> None:
        # The row, the previews torn down when it closes, then its report and comment.
        await pr_reports.after_pull_request_event(
            self.session_maker,
            self.temporal,
            event,
            deployments_task_queue=self.deployments_task_queue,
            report_task_queue=self.status_task_queue,
        )

    @REPORT_COMMIT_STATUS.implement
    async def report_commit_status(self, inp: CommitStatusInput) -> CommitStatusResult:
        try:
            return await self._report_commit_status(inp)
        finally:
            # The pull request's CI status follows every status its runs announce, after the
            # forge's report (never delaying it) and whether or not the forge took it.
            async with session_scope(self.session_maker) as session:
                await pull_requests.record_run_status(session, uuid.UUID(inp.run_id))
            await pr_reports.request_for_run(
                self.session_maker,
                self.temporal,
                uuid.UUID(inp.run_id),
                task_queue=self.status_task_queue,
            )

    async def _report_commit_status(self, inp: CommitStatusInput) -> CommitStatusResult:
        # Checked and sent in the run's turn: a later state's report waits for this one. The
        # check reads in a short session, closed before the forge is called: a forge that hangs
        # pins no database connection (nor does waiting for the turn).
        async with commit_status.reporting_turn(self.session_maker, inp.run_id, on_wait=_heartbeat):
            async with self.session_maker() as session:
                report, reason = await commit_status.build_report(
                    session, self.settings, inp.run_id, inp.state
                )
                installation = None
                check: CheckRunReport | None = None
                check_run_id = None
                if report is not None and report.provider == "github":
                    installation = await check_runs.installation_of_run(session, inp.run_id)
                    if installation is not None:
                        check = await check_runs.check_run_report(session, report, inp.run_id)
                        check_run_id = await check_runs.stored_check_run(session, inp.run_id)
            if report is None:
                return CommitStatusResult(reported=False, reason=reason)
            if installation is not None and check is not None:
                return await self._report_check_run(
                    report.forge_repository, inp.run_id, installation, check, check_run_id
                )
            return await self._send_status(report)

    async def _send_status(self, report: commit_status.StatusReport) -> CommitStatusResult:
        if report.token is None:
            return CommitStatusResult(
                reported=False, reason="the repository has no access token for its forge"
            )
        async with forge_errors():
            client = status_client(
                report.provider,
                token=report.token,
                github_api_url=self.settings.github_api_url,
                gitlab_api_url=self.settings.gitlab_api_url,
            )
            await client.set_status(
                report.forge_repository,
                CommitStatus(
                    sha=report.sha,
                    state=report.state,
                    context=report.context,
                    target_url=report.target_url,
                    description=report.description,
                ),
            )
        return CommitStatusResult(reported=True)

    async def _report_check_run(
        self,
        repository: str,
        run_id: str,
        installation_id: int,
        check: CheckRunReport,
        check_run_id: int | None,
    ) -> CommitStatusResult:
        """The run's one check run: created by its first report, updated by the later ones
        (the run's turn is held: no other report of the run creates one meanwhile)."""
        app = check_runs.github_app(self.settings)
        if app is None:
            return CommitStatusResult(
                reported=False, reason="the GitHub App is not configured (FORGELINE_GITHUB_APP_*)"
            )
        async with forge_errors():
            if check_run_id is not None:
                await github_app.update_check_run(
                    app, installation_id, repository, check_run_id, check
                )
                return CommitStatusResult(reported=True)
            found = await github_app.find_check_run(app, installation_id, repository, check)
            if found is None:
                created = await github_app.create_check_run(app, installation_id, repository, check)
                await check_runs.record_check_run(self.session_maker, run_id, created)
            else:
                await check_runs.record_check_run(self.session_maker, run_id, found)
                await github_app.update_check_run(app, installation_id, repository, found, check)
        return CommitStatusResult(reported=True)


def _heartbeat() -> None:
    """While a report waits for its run's turn (the activity's, when called as one)."""
    if activity.in_activity():
        activity.heartbeat()
