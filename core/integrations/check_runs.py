"""Check runs for runs of repositories connected through the GitHub App: one check run per run
(named after its pipeline), created at the first report and updated by the later ones, with a
summary of the failed stages and their log tail (stored logs are masked at capture; bounded
here). Reports of one run take its reporting turn (commit_status.reporting_turn), so two states
reported at once never create two check runs; no database connection is held while GitHub
answers."""

from __future__ import annotations

import uuid

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.integrations.commit_status import StatusReport
from db.models.pipelines import PipelineRun, StageExecution, StageLogChunk
from db.models.projects import GitProviderConnection, Repository
from forgeline.settings import Settings
from infra.github_app import CheckConclusion, CheckRunReport, CheckStatus, GitHubApp
from workflows.integrations_models import CommitState

CHECK_STATUSES: dict[CommitState, CheckStatus] = {
    "pending": "queued",
    "running": "in_progress",
    "success": "completed",
    "failure": "completed",
    "cancelled": "completed",
}
CONCLUSIONS: dict[CommitState, CheckConclusion] = {
    "success": "success",
    "failure": "failure",
    "cancelled": "cancelled",
}
TITLES: dict[CommitState, str] = {
    "success": "All stages passed",
    "failure": "Stages failed",
    "cancelled": "The run was cancelled",
}
# Bounds of what one check run shows of the logs: the last lines of each failed stage.
LOG_TAIL_CHARS = 4_000
MAX_FAILED_STAGES = 10
FAILED = ("failed", "timed_out", "error")
METADATA_KEY = "check_run"


def github_app(settings: Settings) -> GitHubApp | None:
    """The App as configured, or None when the operator configured none."""
    if settings.github_app_id is None or settings.github_app_private_key is None:
        return None
    return GitHubApp(
        api_url=settings.github_api_url,
        app_id=settings.github_app_id,
        private_key=settings.github_app_private_key.get_secret_value(),
    )


async def installation_of_run(session: AsyncSession, run_id: str) -> int | None:
    """The live App installation the run's repository is connected through, if any."""
    found = await session.scalar(
        select(GitProviderConnection.installation_id)
        .join(Repository, Repository.connection_id == GitProviderConnection.id)
        .join(PipelineRun, PipelineRun.project_id == Repository.project_id)
        .where(
            PipelineRun.id == uuid.UUID(run_id),
            GitProviderConnection.installation_id.isnot(None),
            GitProviderConnection.revoked_at.is_(None),
        )
    )
    return int(found) if found is not None else None


async def failed_stage_summary(session: AsyncSession, run_id: str) -> tuple[str, str]:
    """(summary, text): the failed stages (last attempt each) and their log tails."""
    rows = (
        await session.execute(
            select(StageExecution)
            .where(StageExecution.run_id == uuid.UUID(run_id))
            .order_by(StageExecution.stage_name, StageExecution.attempt.desc())
        )
    ).scalars()
    last: dict[str, StageExecution] = {}
    for row in rows:
        last.setdefault(row.stage_name, row)
    failed = [s for s in last.values() if s.status in FAILED][:MAX_FAILED_STAGES]
    if not failed:
        return "", ""
    lines = ["| stage | status | exit code | cause |", "|---|---|---|---|"]
    blocks = []
    for stage in failed:
        cause = (stage.failure_cause or stage.error or "").replace("|", "/").replace("\n", " ")
        lines.append(f"| {stage.stage_name} | {stage.status} | {stage.exit_code} | {cause[:200]} |")
        tail = await _log_tail(session, stage)
        if tail:
            fence = "~~~~"
            blocks.append(f"### {stage.stage_name}\n{fence}\n{tail}\n{fence}")
    return "\n".join(lines), "\n\n".join(blocks)


async def _log_tail(session: AsyncSession, stage: StageExecution) -> str:
    chunks = (
        await session.scalars(
            select(StageLogChunk.content)
            .where(StageLogChunk.stage_execution_id == stage.id)
            .order_by(StageLogChunk.seq.desc())
            .limit(20)
        )
    ).all()
    tail = "".join(reversed(chunks)) or (stage.log_tail or "")
    return tail[-LOG_TAIL_CHARS:].replace("~~~~", "~~~ ~")


async def check_run_report(
    session: AsyncSession, report: StatusReport, run_id: str
) -> CheckRunReport:
    state = report.state
    summary, log_text = ("", "")
    if state == "failure":
        summary, log_text = await failed_stage_summary(session, run_id)
    title = TITLES.get(state, report.description)
    return CheckRunReport(
        name=report.context,
        head_sha=report.sha,
        external_id=run_id,
        details_url=report.target_url,
        status=CHECK_STATUSES[state],
        conclusion=CONCLUSIONS.get(state),
        title=title,
        summary=summary or f"{title}: {report.target_url}",
        text=log_text,
    )


async def stored_check_run(session: AsyncSession, run_id: str) -> int | None:
    """The ID of the run's check run, once its first report has created (or found) it."""
    stored = await session.scalar(
        select(PipelineRun.metadata_[METADATA_KEY]).where(PipelineRun.id == uuid.UUID(run_id))
    )
    if isinstance(stored, dict) and stored.get("run") == run_id:
        value = stored.get("id")
        return value if isinstance(value, int) else None
    return None


async def record_check_run(
    session_maker: async_sessionmaker[AsyncSession], run_id: str, check_run_id: int
) -> None:
    """Keep the run's check run ID for its later reports (its own short transaction, after the
    forge answered). Keyed by the run: a rerun copies its source's metadata but not its check
    run."""
    async with session_maker() as session, session.begin():
        await session.execute(
            text(
                "UPDATE pipeline_runs SET metadata = jsonb_set(coalesce(metadata, '{}'::jsonb),"
                " '{check_run}', CAST(:value AS jsonb)) WHERE id = :id"
            ),
            {"value": f'{{"run": "{run_id}", "id": {int(check_run_id)}}}', "id": run_id},
        )
