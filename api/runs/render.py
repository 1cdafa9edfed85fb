"""Run and stage-execution rows rendered as the API's response schemas."""

from __future__ import annotations

from api.runs.schemas import RunOut, StageExecutionOut
from db.models.pipelines import PipelineRun, StageExecution


def run_out(run: PipelineRun) -> RunOut:
    return RunOut(
        id=run.id,
        pipeline_id=run.pipeline_id,
        project_id=run.project_id,
        run_number=run.run_number,
        status=run.status,
        trigger=run.trigger,
        branch=run.branch,
        commit_sha=run.commit_sha,
        variable_names=list(run.env_var_names or []),
        rerun_of_id=run.rerun_of_id,
        reuse_from_run_id=run.reuse_from_run_id,
        workflow_id=run.workflow_id,
        queued_at=run.queued_at,
        started_at=run.started_at,
        finished_at=run.finished_at,
        duration_seconds=run.duration_seconds,
        error=run.error,
        created_at=run.created_at,
        pipeline_version=run.pipeline_version,
        pipeline_source=run.pipeline_source,
    )


def stage_out(row: StageExecution) -> StageExecutionOut:
    return StageExecutionOut(
        id=row.id,
        stage_name=row.stage_name,
        attempt=row.attempt,
        status=row.status,
        exit_code=row.exit_code,
        runner=row.runner,
        started_at=row.started_at,
        finished_at=row.finished_at,
        duration_ms=row.duration_ms,
        log_line_count=row.log_line_count,
        log_size_bytes=row.log_size_bytes,
        log_stored_externally=row.log_object_key is not None,
        reused_from_id=row.reused_from_id,
        skip_reason=row.skip_reason,
        error=row.error,
        warnings=list(row.warnings or []),
        failure_class=row.failure_class,
        failure_cause=row.failure_cause,
        failure_evidence=list(row.failure_evidence or []),
    )
