"""AgentTaskWorkflow activities: execution bookkeeping, checkout, LLM/planner turns, tool calls,
and the final output (pipeline rows, exported YAML, diagnoses). All projections idempotent."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
import uuid
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from core.agent import outcomes, projections
from core.agent.planner_turns import planner_turn as next_planner_turn
from core.agent.repo_files import RepoFiles
from core.agent.tools import AgentToolbox, ToolInputError, task_key
from db.models.agent import AgentTask
from db.models.pipelines import PipelineRun, StageExecution, StageLogChunk
from db.models.projects import ProjectFile, Repository
from db.session import session_scope
from forgeline.crypto import DecryptionFailed, decrypt_str
from forgeline.settings import Settings
from forgeline.statuses.agent import AgentProvider, AgentTaskStatus, execution_status_of
from forgeline.url_safety import UnsafeRepositoryUrl
from infra.git import (
    CloneLimits,
    GitError,
    RepositoryTooLarge,
    RepositoryUnavailable,
    clone_repository,
)
from infra.llm import TOOL_SCHEMAS, AnthropicLlm
from infra.storage import ObjectNotFound, ObjectStore
from workflows.agent_models import (
    PLANNER_VERSION,
    AgentTaskInputData,
    CheckoutInput,
    CheckoutResult,
    FinishInput,
    FinishOutput,
    LlmTurnInput,
    LlmTurnOutput,
    PlannerTurnInput,
    PlannerTurnOutput,
    StartExecutionInput,
    StartExecutionOutput,
    ToolActivityInput,
    ToolActivityOutput,
    ToolCall,
)
from workflows.contracts.agent import (
    CHECKOUT_REPOSITORY,
    FINISH_TASK,
    LLM_TURN,
    PLANNER_TURN,
    RUN_TOOL,
    START_EXECUTION,
)

MANIFEST_NAMES = {
    "package.json", "pyproject.toml", "requirements.txt", "go.mod", "Cargo.toml", "pom.xml",
    "build.gradle", "build.gradle.kts", "Gemfile", "composer.json", "Dockerfile",
    "pnpm-workspace.yaml",
}  # fmt: skip
LANGUAGES = {
    ".py": "python", ".js": "javascript", ".mjs": "javascript", ".ts": "typescript",
    ".tsx": "typescript", ".jsx": "javascript", ".go": "go", ".rs": "rust", ".java": "java",
    ".kt": "kotlin", ".rb": "ruby", ".php": "php", ".html": "html", ".css": "css", ".vue": "vue",
    ".svelte": "svelte",
}  # fmt: skip
T = TypeVar("T")
MAX_INDEXED_FILES = 5_000
LOG_TAIL_CHARS = 6_000
SYSTEM_PROMPT = """You are Forgeline's CI/CD agent. You inspect one git repository through tools \
and produce a correct, runnable pipeline (install, lint, test, build, security_scan, deploy).
Always ground decisions in files you listed or read. Use detect_framework early. For pipeline \
work call propose_pipeline and then validate_pipeline until it reports OK. Keep the deploy \
stage propose_pipeline gives: Forgeline itself deploys after it succeeds, so it needs no API \
credentials. Be concise; when done, answer with a short summary and no tool call."""


def _non_retryable(message: str, kind: str) -> ApplicationError:
    return ApplicationError(message, type=kind, non_retryable=True)


class AgentActivities:
    """Clients are built once per worker in registration.py and injected here."""

    def __init__(
        self,
        settings: Settings,
        session_maker: async_sessionmaker[AsyncSession],
        store: ObjectStore,
        llm: AnthropicLlm | None,
    ) -> None:
        self.settings = settings
        self.session_maker = session_maker
        self.store = store
        self.llm = llm

    # --- executions -------------------------------------------------------------------------

    @START_EXECUTION.implement
    async def start_execution(self, inp: StartExecutionInput) -> StartExecutionOutput:
        use_llm = self.llm is not None and not inp.force_planner
        provider = AgentProvider.ANTHROPIC if use_llm else AgentProvider.PLANNER
        version = self.llm.model if (use_llm and self.llm) else PLANNER_VERSION
        async with session_scope(self.session_maker) as session:
            task = await session.get(AgentTask, inp.task_id)
            if task is None:
                raise _non_retryable(f"agent task {inp.task_id} not found", "TaskNotFound")
            if inp.sequence > 1:
                previous = projections.execution_id(inp.task_id, inp.sequence - 1)
                await projections.finish_execution(
                    session, previous, status="failed", reasoning=None, error=inp.previous_error
                )
            exec_id = await projections.start_execution(
                session,
                inp.task_id,
                sequence=inp.sequence,
                provider=provider,
                model=version if use_llm else None,
                planner_version=None if use_llm else PLANNER_VERSION,
            )
            budget = task.token_budget or self.settings.agent_token_budget
            return StartExecutionOutput(
                execution_id=exec_id,
                sequence=inp.sequence,
                provider=provider,
                agent_version=version,
                input_data=dict(task.input_data or {}),
                max_steps=self.settings.agent_max_steps,
                token_budget=budget,
            )

    # --- repository ---------------------------------------------------------------------------

    def _workspace(self, task_id: uuid.UUID) -> Path:
        return self.settings.workspaces_dir / "agent" / str(task_id)

    async def _clone(
        self, task_id: uuid.UUID, project_id: uuid.UUID, branch: str | None, commit: str | None
    ) -> CheckoutResult:
        async with session_scope(self.session_maker) as session:
            repo = (
                await session.execute(select(Repository).where(Repository.project_id == project_id))
            ).scalar_one_or_none()
            if repo is None:
                raise _non_retryable("the project has no repository connected", "RepositoryMissing")
            url, default_branch, encrypted = (
                repo.url,
                repo.default_branch,
                repo.access_token_encrypted,
            )
        token: str | None = None
        if encrypted:
            try:
                token = decrypt_str(encrypted, self.settings)
            except DecryptionFailed:
                raise _non_retryable(
                    "the repository access token cannot be decrypted; set it again",
                    "RepositoryCredentials",
                ) from None
        limits = CloneLimits(
            max_bytes=self.settings.repo_max_bytes,
            max_files=self.settings.repo_max_files,
            timeout_seconds=self.settings.git_clone_timeout_seconds,
        )
        use_branch = None if commit else (branch or default_branch)
        try:
            result = await clone_repository(
                url,
                self._workspace(task_id),
                branch=use_branch,
                commit=commit,
                token=token,
                allow_local=self.settings.allow_local_repositories,
                limits=limits,
                on_progress=_heartbeat,
            )
        except UnsafeRepositoryUrl as exc:
            raise _non_retryable(
                f"repository URL refused: {exc.detail}", "UnsafeRepositoryUrl"
            ) from None
        except RepositoryUnavailable as exc:
            raise _non_retryable(
                f"repository unavailable: {exc}".rstrip(": "), "RepositoryUnavailable"
            ) from None
        except RepositoryTooLarge as exc:
            raise _non_retryable(str(exc), "RepositoryTooLarge") from None
        except GitError as exc:
            raise ApplicationError(f"clone failed: {exc}", type="GitError") from None
        return CheckoutResult(
            workspace=str(result.path),
            commit_sha=result.commit_sha,
            branch=result.branch,
            file_count=result.file_count,
            size_bytes=result.size_bytes,
        )

    async def _ensure_checkout(self, task_id: uuid.UUID, checkout: CheckoutResult) -> Path:
        """The workspace of an earlier activity, re-cloned at the same commit on a new worker."""
        root = Path(checkout.workspace)
        if root.is_dir() and (root / ".git").exists():
            return root
        async with session_scope(self.session_maker) as session:
            task = await session.get(AgentTask, task_id)
            if task is None:
                raise _non_retryable(f"agent task {task_id} not found", "TaskNotFound")
            project_id = task.project_id
        again = await self._clone(task_id, project_id, None, checkout.commit_sha)
        return Path(again.workspace)

    @CHECKOUT_REPOSITORY.implement
    async def checkout_repository(self, inp: CheckoutInput) -> CheckoutResult:
        result = await self._clone(inp.task_id, inp.project_id, inp.branch, inp.commit)
        await self._index_files(inp.project_id, Path(result.workspace), result.commit_sha)
        return result

    async def _index_files(self, project_id: uuid.UUID, root: Path, sha: str) -> None:
        files = RepoFiles(root)
        paths = (await asyncio.to_thread(files.walk, MAX_INDEXED_FILES))[:MAX_INDEXED_FILES]
        rows = []
        for rel in paths:
            name = rel.rsplit("/", 1)[-1]
            suffix = "." + name.rsplit(".", 1)[-1] if "." in name else ""
            try:
                size = (root / rel).stat().st_size
            except OSError:
                continue
            rows.append(
                {
                    "id": uuid.uuid5(projections.NAMESPACE, f"{project_id}:{sha}:{rel}"),
                    "project_id": project_id,
                    "commit_sha": sha,
                    "path": rel[:1000],
                    "size_bytes": size,
                    "language": LANGUAGES.get(suffix),
                    "is_manifest": name in MANIFEST_NAMES,
                }
            )
        async with session_scope(self.session_maker) as session:
            for start in range(0, len(rows), 1000):
                await session.execute(
                    insert(ProjectFile)
                    .values(rows[start : start + 1000])
                    .on_conflict_do_nothing(index_elements=["project_id", "commit_sha", "path"])
                )

    # --- turns --------------------------------------------------------------------------------

    @PLANNER_TURN.implement
    async def planner_turn(self, inp: PlannerTurnInput) -> PlannerTurnOutput:
        if inp.description:  # a fallback step the workflow drives itself: just record it
            async with session_scope(self.session_maker) as session:
                await projections.record_step(
                    session,
                    inp.execution_id,
                    inp.step_number,
                    step_type="planner_fallback",
                    description=inp.description,
                    content={},
                )
            return PlannerTurnOutput(planner_state=inp.planner_state)
        out = next_planner_turn(
            task_type=inp.task_type,
            input_data=inp.input_data,
            state=inp.planner_state,
            tool_results=inp.tool_results,
        )
        if not out.done:
            async with session_scope(self.session_maker) as session:
                await projections.record_step(
                    session,
                    inp.execution_id,
                    inp.step_number,
                    step_type="planner_turn",
                    description=out.text,
                    content={"tool_calls": [c.model_dump() for c in out.tool_calls]},
                )
        return out

    def _conversation_key(self, inp: LlmTurnInput) -> str:
        return task_key(str(inp.task_id), f"conversation/{inp.sequence}-{inp.step_number:04d}.json")

    def _load(self, key: str) -> bytes | None:
        try:
            return self.store.get_bytes(key)
        except (ObjectNotFound, FileNotFoundError):
            return None

    @LLM_TURN.implement
    async def llm_turn(self, inp: LlmTurnInput) -> LlmTurnOutput:
        if self.llm is None:
            raise _non_retryable("no Anthropic key configured on this worker", "LlmNotConfigured")
        key = self._conversation_key(inp)
        done_key = key.replace(".json", ".turn.json")
        # A retry after a crash returns the recorded turn instead of paying for another call.
        cached = await asyncio.to_thread(self._load, done_key)
        if cached is not None:
            return LlmTurnOutput.model_validate_json(cached)
        messages: list[dict[str, Any]] = []
        if inp.conversation_ref:
            raw = await asyncio.to_thread(self._load, inp.conversation_ref)
            if raw is None:
                raise _non_retryable("conversation transcript is missing", "TranscriptMissing")
            messages = json.loads(raw)
        else:
            messages = [{"role": "user", "content": _task_prompt(inp)}]
        if inp.tool_results:
            messages.append(
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": r.call_id,
                            "content": r.content or "(empty)",
                            "is_error": not r.ok,
                        }
                        for r in inp.tool_results
                    ],
                }
            )
        activity.heartbeat()
        reply = await heartbeat_while(
            self.llm.create(
                system=SYSTEM_PROMPT,
                messages=messages,
                tools=TOOL_SCHEMAS,
                max_tokens=inp.max_tokens,
            )
        )
        messages.append({"role": "assistant", "content": reply.content})
        calls = []
        for use in reply.tool_uses:
            args = use.get("input")
            calls.append(
                ToolCall(
                    call_id=str(use.get("id")),
                    name=str(use.get("name")),
                    arguments=args if isinstance(args, dict) else {"__invalid__": args},
                )
            )
        out = LlmTurnOutput(
            conversation_ref=key,
            stop_reason=reply.stop_reason,
            text=reply.text,
            tool_calls=calls,
            input_tokens=reply.input_tokens,
            output_tokens=reply.output_tokens,
            cost_usd=str(reply.cost_usd),
        )
        await asyncio.to_thread(
            self.store.put_bytes, key, json.dumps(messages).encode(), "application/json"
        )
        async with session_scope(self.session_maker) as session:
            task = await session.get(AgentTask, inp.task_id)
            await projections.record_step(
                session,
                inp.execution_id,
                inp.step_number,
                step_type="llm_turn",
                description=reply.text or f"{len(calls)} tool call(s)",
                content={
                    "stop_reason": reply.stop_reason,
                    "tool_calls": [c.model_dump() for c in calls],
                    "cost_usd": str(reply.cost_usd),
                    "transcript_key": key,
                },
                input_tokens=reply.input_tokens,
                output_tokens=reply.output_tokens,
            )
            await projections.refresh_usage(
                session,
                task_id=inp.task_id,
                execution=inp.execution_id,
                model=self.llm.model,
                organization_id=task.organization_id if task else None,
                project_id=task.project_id if task else uuid.UUID(int=0),
                step_number=inp.step_number,
                input_tokens=reply.input_tokens,
                output_tokens=reply.output_tokens,
            )
        await asyncio.to_thread(
            self.store.put_bytes, done_key, out.model_dump_json().encode(), "application/json"
        )
        return out

    # --- tools --------------------------------------------------------------------------------

    @RUN_TOOL.implement
    async def run_tool(self, inp: ToolActivityInput) -> ToolActivityOutput:
        started = time.monotonic()
        call = inp.call
        status, error = "success", None
        data: dict[str, Any] = {}
        valid: bool | None = None
        try:
            if "__invalid__" in call.arguments:
                raise ToolInputError("tool input must be a JSON object")
            if call.name == "read_run_logs":
                content, summary, data = await self._read_run_logs(inp.task_id, call.arguments)
                ok = True
            else:
                root = await self._ensure_checkout(inp.task_id, inp.checkout)
                toolbox = AgentToolbox(
                    root,
                    self.store,
                    str(inp.task_id),
                    AgentTaskInputData.model_validate(inp.input_data),
                )
                result = await heartbeat_while(
                    asyncio.to_thread(toolbox.run, call.name, call.arguments)
                )
                ok, content, summary, data = result.ok, result.content, result.summary, result.data
                valid = result.valid
                if not ok:
                    status = "failed"
        except ToolInputError as exc:
            ok, content, summary, status, error = (
                False,
                f"error: {exc}",
                "invalid input",
                "failed",
                str(exc),
            )
        duration = int((time.monotonic() - started) * 1000)
        async with session_scope(self.session_maker) as session:
            await projections.record_tool_invocation(
                session,
                execution=inp.execution_id,
                step_number=inp.step_number,
                invocation_key=inp.invocation_key,
                tool_name=call.name,
                parameters=_json_safe(call.arguments),
                status=status,
                result_summary=summary,
                duration_ms=duration,
                error=error,
            )
        return ToolActivityOutput(
            call_id=call.call_id,
            name=call.name,
            ok=ok,
            content=content,
            data=data,
            duration_ms=duration,
            valid=valid,
        )

    async def _read_run_logs(
        self, task_id: uuid.UUID, args: dict[str, Any]
    ) -> tuple[str, str, dict[str, Any]]:
        raw = str(args.get("pipeline_run_id") or "")
        try:
            run_id = uuid.UUID(raw)
        except ValueError:
            raise ToolInputError("pipeline_run_id must be a UUID") from None
        async with session_scope(self.session_maker) as session:
            task = await session.get(AgentTask, task_id)
            run = await session.get(PipelineRun, run_id)
            if task is None or run is None or run.project_id != task.project_id:
                raise ToolInputError("no such pipeline run in this project")
            stages = (
                (
                    await session.execute(
                        select(StageExecution)
                        .where(
                            StageExecution.run_id == run_id,
                            StageExecution.status.in_(("failed", "timed_out")),
                        )
                        .order_by(StageExecution.created_at)
                    )
                )
                .scalars()
                .all()
            )
            failed = []
            for stage in stages:
                chunks = (
                    (
                        await session.execute(
                            select(StageLogChunk.content)
                            .where(StageLogChunk.stage_execution_id == stage.id)
                            .order_by(StageLogChunk.seq.desc())
                            .limit(20)
                        )
                    )
                    .scalars()
                    .all()
                )
                tail = "".join(reversed(chunks))[-LOG_TAIL_CHARS:] or (stage.log_tail or "")
                failed.append(
                    {
                        "stage_name": stage.stage_name,
                        "status": stage.status,
                        "exit_code": stage.exit_code,
                        "attempt": stage.attempt,
                        "error": stage.error,
                        "log_tail": tail,
                    }
                )
        payload = {
            "pipeline_run_id": str(run_id),
            "status": run.status,
            "error": run.error,
            "failed_stages": failed,
        }
        await asyncio.to_thread(
            self.store.put_bytes,
            task_key(str(task_id), "run_logs.json"),
            json.dumps(payload).encode(),
            "application/json",
        )
        return (
            json.dumps(payload, indent=1)[:16_000],
            f"{len(failed)} failed stage(s)",
            {"failed_stages": len(failed)},
        )

    # --- output -------------------------------------------------------------------------------

    @FINISH_TASK.implement
    async def finish_task(self, inp: FinishInput) -> FinishOutput:
        status, error = inp.status, inp.error
        output: dict[str, Any] = {}
        toolbox: AgentToolbox | None = None
        async with session_scope(self.session_maker) as session:
            task = await session.get(AgentTask, inp.task_id)
            if task is None:
                raise _non_retryable(f"agent task {inp.task_id} not found", "TaskNotFound")
            input_data = AgentTaskInputData.model_validate(task.input_data or {})
        if status == AgentTaskStatus.COMPLETED and inp.checkout is not None:
            root = await self._ensure_checkout(inp.task_id, inp.checkout)
            toolbox = AgentToolbox(root, self.store, str(inp.task_id), input_data)
            try:
                output = await heartbeat_while(asyncio.to_thread(self._build_output, inp, toolbox))
            except _OutputMissing as exc:
                status, error = AgentTaskStatus.FAILED, str(exc)
        if inp.final_text:
            output["summary"] = inp.final_text[:8000]
        if inp.llm_error:
            output["llm_fallback_reason"] = inp.llm_error
        output.update({"steps": inp.steps, "tokens_used": inp.tokens_used})
        if inp.stop_reason:
            output["stop_reason"] = inp.stop_reason
        if inp.checkout is not None:
            output["commit_sha"] = inp.checkout.commit_sha
        async with session_scope(self.session_maker) as session:
            task = await session.get(AgentTask, inp.task_id)
            assert task is not None
            if status == "completed" and inp.task_type == "generate_pipeline" and toolbox:
                validated = toolbox.validated()
                assert validated is not None
                proposal, report = validated
                analysis = toolbox.analysis()
                pid = await projections.save_pipeline(
                    session,
                    task=task,
                    proposal=proposal,
                    report=report,
                    config={
                        "framework": proposal.framework,
                        "apps": [a.model_dump(mode="json") for a in analysis.apps],
                        "default_image": analysis.primary.image,
                        "estimated_build_seconds": proposal.estimated_build_seconds,
                        "commit_sha": inp.checkout.commit_sha if inp.checkout else None,
                    },
                )
                output["pipeline_id"] = str(pid)
                await projections.remember_framework(
                    session,
                    task.project_id,
                    "monorepo" if analysis.is_monorepo else analysis.primary.framework,
                )
            if inp.execution_id is not None:
                await projections.finish_execution(
                    session,
                    inp.execution_id,
                    status=execution_status_of(status),
                    reasoning=(inp.final_text or output.get("summary") or None),
                    error=error,
                    transcript_key=inp.conversation_ref,
                )
            await projections.finish_task(
                session, inp.task_id, status=status, output=output, error=error
            )
        # The checkout is scratch space; the index lives in project_files, the output in rows.
        shutil.rmtree(self._workspace(inp.task_id), ignore_errors=True)
        return FinishOutput(status=status, output=output, error=error)

    def _build_output(self, inp: FinishInput, toolbox: AgentToolbox) -> dict[str, Any]:
        analysis = toolbox.analysis()
        primary = analysis.primary
        base: dict[str, Any] = {
            "detected_framework": primary.framework,
            "confidence": primary.confidence,
            "package_manager": primary.package_manager,
            "is_monorepo": analysis.is_monorepo,
            "apps": [a.model_dump(mode="json") for a in analysis.apps],
        }
        validated = toolbox.validated()
        if inp.task_type == "generate_pipeline":
            if validated is None:
                raise _OutputMissing("no pipeline passed validation")
            generated = validated[0]
            base.update(
                {
                    "recommended_stages": [s.name for s in generated.stages],
                    "estimated_build_time_seconds": generated.estimated_build_seconds,
                    "output_directory": primary.output_directory,
                    "install_command": primary.install_command,
                    "build_command": primary.build_command,
                    "test_command": primary.test_command,
                    "lint_command": primary.lint_command,
                }
            )
            return base
        if inp.task_type == "analyze_repo":
            base.update({"file_count": analysis.file_count, "notes": analysis.notes})
            return base
        proposal = validated[0] if validated else None
        if inp.task_type == "troubleshoot_failure":
            raw = toolbox.stored("run_logs.json")
            if raw is None:
                raise _OutputMissing("the failed run's logs could not be read")
            base.update(outcomes.diagnose(json.loads(raw), proposal))
            if validated:
                base["proposed_pipeline"] = validated[0].model_dump(mode="json")
            return base
        base["existing_ci"] = outcomes.existing_ci(toolbox.files)
        base["suggestions"] = outcomes.suggestions(analysis, toolbox.files, proposal)
        if inp.task_type == "optimize_config" and validated:
            base["proposed_pipeline"] = validated[0].model_dump(mode="json")
            base["github_actions_yaml"] = validated[1].github_actions_yaml
            base["gitlab_ci_yaml"] = validated[1].gitlab_ci_yaml
        return base

    @property
    def activities(self) -> list[Any]:
        return [
            self.start_execution,
            self.checkout_repository,
            self.planner_turn,
            self.llm_turn,
            self.run_tool,
            self.finish_task,
        ]


class _OutputMissing(Exception):
    pass


def _heartbeat() -> None:
    if activity.in_activity():
        activity.heartbeat()


async def heartbeat_while(awaitable: Awaitable[T], every: float = 1.0) -> T:
    """Await one long call (LLM request, actionlint) while heartbeating, so a dead worker is
    noticed after the heartbeat timeout instead of the start-to-close timeout."""
    task = asyncio.ensure_future(awaitable)
    while True:
        done, _ = await asyncio.wait({task}, timeout=every)
        if done:
            return task.result()
        _heartbeat()


def _json_safe(value: dict[str, Any]) -> dict[str, Any]:
    text = json.dumps(value, default=str)
    if len(text) > 20_000:
        return {"truncated": True, "keys": sorted(value)[:50]}
    result: dict[str, Any] = json.loads(text)
    return result


def _task_prompt(inp: LlmTurnInput) -> str:
    goals = {
        "generate_pipeline": "Generate a CI/CD pipeline for this repository and validate it.",
        "analyze_repo": "Analyse the repository: apps, frameworks, package managers, commands.",
        "optimize_config": "Propose an optimised pipeline (caching, parallel jobs) and validate "
        "it; list the optimisations.",
        "troubleshoot_failure": "Read the failed run's logs (read_run_logs), diagnose the cause "
        "and propose a pipeline change.",
        "suggest_improvements": "Suggest concrete improvements to the repository's build, tests "
        "and CI.",
    }
    return (
        f"Task: {inp.task_type}. {goals[inp.task_type]}\n"
        f"Input: {json.dumps(inp.input_data, default=str)[:4000]}"
    )
