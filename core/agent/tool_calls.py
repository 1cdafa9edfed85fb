"""One tool call of the agent against the task's checkout (or, for read_run_logs, the failed
run's stored logs), recorded as an idempotent tool invocation."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.agent import projections, repository
from core.agent.progress import Tick, while_ticking
from core.agent.project_settings import build_settings_of
from core.agent.tools import AgentToolbox, ToolInputError, task_key
from core.agent.verification_tools import VERIFY_TOOLS, verifies_input
from core.agent.workspaces import Workspaces
from db.models.agent import AgentTask
from db.models.pipelines import PipelineRun
from db.session import session_scope
from forgeline.statuses.agent import ToolInvocationStatus
from infra.storage import ObjectStore
from workflows.agent_models import AgentTaskInputData, ToolActivityInput, ToolActivityOutput

LOG_TAIL_CHARS = 6_000
MAX_LOG_CONTENT = 16_000
MAX_PARAMETERS_CHARS = 20_000


class ToolCalls:
    def __init__(
        self,
        session_maker: async_sessionmaker[AsyncSession],
        store: ObjectStore,
        workspaces: Workspaces,
    ) -> None:
        self.session_maker = session_maker
        self.store = store
        self.workspaces = workspaces

    async def run(self, inp: ToolActivityInput, tick: Tick) -> ToolActivityOutput:
        """A call the tool refuses (bad arguments, unknown tool) is reported back to the agent
        as a failed result, never retried."""
        started = time.monotonic()
        call = inp.call
        status, error = ToolInvocationStatus.SUCCESS, None
        data: dict[str, Any] = {}
        valid: bool | None = None
        try:
            if "__invalid__" in call.arguments:
                raise ToolInputError("tool input must be a JSON object")
            if call.name == "read_run_logs":
                content, summary, data = await self._read_run_logs(inp.task_id, call.arguments)
                ok = True
            elif call.name in VERIFY_TOOLS and verifies_input(inp.input_data):
                content, summary, data = await VERIFY_TOOLS[call.name](
                    self.session_maker, self.store, inp.task_id, call.arguments
                )
                ok = True
            else:
                root = await self.workspaces.ensure(inp.task_id, inp.checkout, tick)
                async with self.session_maker() as session:
                    project = await build_settings_of(session, inp.task_id)
                toolbox = AgentToolbox(
                    root,
                    self.store,
                    str(inp.task_id),
                    AgentTaskInputData.model_validate(inp.input_data),
                    project,
                )
                result = await while_ticking(
                    asyncio.to_thread(toolbox.run, call.name, call.arguments), tick
                )
                ok, content, summary, data = result.ok, result.content, result.summary, result.data
                valid = result.valid
                if not ok:
                    status = ToolInvocationStatus.FAILED
        except ToolInputError as exc:
            ok, content, summary, status, error = (
                False,
                f"error: {exc}",
                "invalid input",
                ToolInvocationStatus.FAILED,
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
            failed = await repository.failed_stages(session, run_id, tail_chars=LOG_TAIL_CHARS)
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
            json.dumps(payload, indent=1)[:MAX_LOG_CONTENT],
            f"{len(failed)} failed stage(s)",
            {"failed_stages": len(failed)},
        )


def _json_safe(value: dict[str, Any]) -> dict[str, Any]:
    text = json.dumps(value, default=str)
    if len(text) > MAX_PARAMETERS_CHARS:
        return {"truncated": True, "keys": sorted(value)[:50]}
    result: dict[str, Any] = json.loads(text)
    return result
