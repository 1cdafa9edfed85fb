"""One turn of the agent: the built-in planner's next scripted step, or one model call whose
conversation lives in the object store. Each turn is recorded as a numbered step."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.agent import projections
from core.agent.errors import AgentFailure
from core.agent.planner_turns import planner_turn
from core.agent.progress import Tick, while_ticking
from core.agent.prompts import SYSTEM_PROMPT, task_prompt, tool_schemas
from core.agent.tools import task_key
from db.models.agent import AgentTask
from db.session import session_scope
from infra.llm import AnthropicLlm
from infra.storage import ObjectNotFound, ObjectStore
from workflows.agent_models import (
    LlmTurnInput,
    LlmTurnOutput,
    PlannerTurnInput,
    PlannerTurnOutput,
    ToolCall,
)


async def take_planner_turn(
    session_maker: async_sessionmaker[AsyncSession], inp: PlannerTurnInput
) -> PlannerTurnOutput:
    if inp.description:  # a fallback step the workflow drives itself: just record it
        async with session_scope(session_maker) as session:
            await projections.record_step(
                session,
                inp.execution_id,
                inp.step_number,
                step_type="planner_fallback",
                description=inp.description,
                content={},
            )
        return PlannerTurnOutput(planner_state=inp.planner_state)
    out = planner_turn(
        task_type=inp.task_type,
        input_data=inp.input_data,
        state=inp.planner_state,
        tool_results=inp.tool_results,
    )
    if not out.done:
        async with session_scope(session_maker) as session:
            await projections.record_step(
                session,
                inp.execution_id,
                inp.step_number,
                step_type="planner_turn",
                description=out.text,
                content={"tool_calls": [c.model_dump() for c in out.tool_calls]},
            )
    return out


class ModelTurns:
    """Turns of the model: the transcript and each finished turn are stored, so a retry after a
    crash returns the recorded turn instead of paying for another call."""

    def __init__(
        self,
        session_maker: async_sessionmaker[AsyncSession],
        store: ObjectStore,
        llm: AnthropicLlm,
    ) -> None:
        self.session_maker = session_maker
        self.store = store
        self.llm = llm

    def _load(self, key: str) -> bytes | None:
        try:
            return self.store.get_bytes(key)
        except (ObjectNotFound, FileNotFoundError):
            return None

    async def take(self, inp: LlmTurnInput, tick: Tick) -> LlmTurnOutput:
        key = task_key(str(inp.task_id), f"conversation/{inp.sequence}-{inp.step_number:04d}.json")
        done_key = key.replace(".json", ".turn.json")
        cached = await asyncio.to_thread(self._load, done_key)
        if cached is not None:
            return LlmTurnOutput.model_validate_json(cached)
        messages = await self._conversation(inp)
        tick()
        reply = await while_ticking(
            self.llm.create(
                system=SYSTEM_PROMPT,
                messages=messages,
                tools=tool_schemas(inp.task_type, inp.input_data),
                max_tokens=inp.max_tokens,
            ),
            tick,
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

    async def _conversation(self, inp: LlmTurnInput) -> list[dict[str, Any]]:
        """The stored transcript (or the opening message) plus the previous turn's results."""
        messages: list[dict[str, Any]] = []
        if inp.conversation_ref:
            raw = await asyncio.to_thread(self._load, inp.conversation_ref)
            if raw is None:
                raise AgentFailure("TranscriptMissing", "conversation transcript is missing")
            messages = json.loads(raw)
        else:
            messages = [{"role": "user", "content": task_prompt(inp.task_type, inp.input_data)}]
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
        return messages
