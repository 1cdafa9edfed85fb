"""Console pages of agent tasks: generate a pipeline from a project's page (optionally verified
by running it), and a task page that follows its phase, its verification runs and its verdict."""

from __future__ import annotations

import contextlib
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError

from api.audit import origin_of
from api.console.pages import (
    error_page,
    page,
    page_user,
    parse_id,
    posted_form,
    unavailable_page,
)
from api.deps import SessionDep, SettingsDep, TemporalDep, get_temporal
from api.errors import ServiceUnavailable
from core.accounts.scopes import PIPELINES_READ, PIPELINES_WRITE
from core.agent import service
from core.agent.task_runs import verification_runs
from forgeline.errors import DomainError, ValidationFailed
from forgeline.statuses.agent import TERMINAL_TASK_STATUSES, AgentTaskType
from workflows.agent_models import AgentTaskInputData

router = APIRouter(include_in_schema=False)


@router.post("/projects/{project_id}/agent-tasks")
async def generate(
    request: Request,
    project_id: str,
    session: SessionDep,
    settings: SettingsDep,
    temporal: TemporalDep,
) -> Response:
    user, form = await posted_form(request, session, PIPELINES_WRITE)
    try:
        data = _input_data(form)
        task = await service.create_and_start(
            session,
            user.principal,
            origin_of(request),
            settings,
            temporal,
            parse_id(project_id),
            AgentTaskType.GENERATE_PIPELINE,
            data,
            None,
        )
    except service.TaskNotStarted:
        message = "Temporal is not reachable; the task was not started. Retry later."
        return unavailable_page(request, user, message)
    except DomainError as exc:
        return error_page(request, user, exc)
    return RedirectResponse(f"/agent-tasks/{task.id}", status_code=303)


def _input_data(form: dict[str, str]) -> AgentTaskInputData:
    """The form's choices (an unticked box is absent from the form: off)."""
    attempts = form.get("attempts", "").strip() or "3"
    try:
        return AgentTaskInputData.model_validate(
            {
                "verify": form.get("verify") == "on",
                "verify_attempts": int(attempts)
                if attempts.isdecimal() and len(attempts) < 3
                else -1,
                "preferences": {
                    "include_lint": form.get("lint") == "on",
                    "include_security_scan": form.get("scan") == "on",
                },
            }
        )
    except ValidationError:
        raise ValidationFailed("Verification runs must be a whole number from 1 to 10") from None


@router.get("/agent-tasks/{task_id}")
async def task_page(request: Request, task_id: str, session: SessionDep) -> Response:
    user = await page_user(request, session, PIPELINES_READ)
    org = user.principal.organization_id
    try:
        task = await service.get_task(session, user.principal, parse_id(task_id))
        runs = await verification_runs(session, org, task.id)
    except DomainError as exc:
        return error_page(request, user, exc)
    finished = task.status in TERMINAL_TASK_STATUSES
    live: dict[str, Any] | None = None
    if not finished:
        # The live phase is a bonus: without Temporal the stored task still answers.
        with contextlib.suppress(ServiceUnavailable):
            live = await service.live_progress(await get_temporal(request), task)
    output: dict[str, Any] = task.output_data or {}
    context: dict[str, Any] = {
        "user": user,
        "task": task,
        "finished": finished,
        "phase": (live or {}).get("phase") or task.status,
        "live": live,
        "output": output,
        "verdict": output.get("verification"),
        "verify": bool((task.input_data or {}).get("verify")),
        "runs": runs,
        "can_cancel": not finished and user.principal.has(PIPELINES_WRITE),
    }
    return page(request, "agent_task.html", context)


@router.post("/agent-tasks/{task_id}/cancel")
async def cancel(
    request: Request, task_id: str, session: SessionDep, temporal: TemporalDep
) -> Response:
    """Cancel a task still under way (its verification run is cancelled with it)."""
    user, _form = await posted_form(request, session, PIPELINES_WRITE)
    try:
        task = await service.cancel_task(
            session, user.principal, origin_of(request), temporal, parse_id(task_id)
        )
    except DomainError as exc:
        return error_page(request, user, exc)
    return RedirectResponse(f"/agent-tasks/{task.id}", status_code=303)
