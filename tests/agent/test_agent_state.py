"""The agent task's input vs the state it carries across continue-as-new, and typed tool results:
payloads of the earlier flat shape (recorded histories) still decode to the same state."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from pydantic import ValidationError

from forgeline.statuses.agent import AgentTaskStatus, AgentTaskType
from workflows.agent_models import AgentTaskState, AgentTaskWorkflowInput, ToolActivityOutput


def _ids() -> dict[str, str]:
    return {
        "task_id": str(uuid.uuid4()),
        "organization_id": str(uuid.uuid4()),
        "project_id": str(uuid.uuid4()),
    }


def _result(name: str, **extra: Any) -> dict[str, Any]:
    return {"call_id": "c1", "name": name, "ok": True, "content": "x", **extra}


def test_flat_continue_as_new_payload_decodes_into_the_state() -> None:
    flat = {
        **_ids(),
        "task_type": "troubleshoot_failure",
        "continue_as_new_after_steps": 2,
        "step_number": 7,
        "tokens_used": 1234,
        "conversation_ref": "agent/x/conversation/1-0007.json",
        "planner_state": {"phase": 3, "logs_read": True},
        "pending_results": [_result("validate_pipeline", data={"valid": True})],
        "validated": True,
        "final_text": "done",
        "continued_runs": 1,
    }
    inp = AgentTaskWorkflowInput.model_validate_json(json.dumps(flat))
    assert inp.task_type == AgentTaskType.TROUBLESHOOT_FAILURE
    assert inp.continue_as_new_after_steps == 2
    state = inp.state
    assert (state.step_number, state.tokens_used, state.continued_runs) == (7, 1234, 1)
    assert state.validated and state.logs_read and state.final_text == "done"
    assert state.planner_state == {"phase": 3, "logs_read": True}
    assert state.pending_results[0].passed_validation
    # The new shape round-trips unchanged.
    again = AgentTaskWorkflowInput.model_validate_json(inp.model_dump_json())
    assert again == inp
    assert "step_number" not in json.loads(inp.model_dump_json())


def test_a_fresh_input_starts_with_an_empty_state() -> None:
    inp = AgentTaskWorkflowInput.model_validate({**_ids(), "task_type": "generate_pipeline"})
    assert inp.state == AgentTaskState()


def test_hostile_payloads_are_refused_not_half_decoded() -> None:
    with pytest.raises(ValidationError):
        AgentTaskWorkflowInput.model_validate({**_ids(), "task_type": "rm -rf /"})
    with pytest.raises(ValidationError):
        AgentTaskWorkflowInput.model_validate(
            {**_ids(), "task_type": "analyze_repo", "step_number": "many"}
        )
    with pytest.raises(ValidationError):
        AgentTaskWorkflowInput.model_validate(
            {**_ids(), "task_type": "analyze_repo", "state": {"pending_results": [{"x": 1}]}}
        )
    # A flat field next to a nested state: the nested state wins, nothing is lost silently.
    mixed = AgentTaskWorkflowInput.model_validate(
        {**_ids(), "task_type": "analyze_repo", "step_number": 3, "state": {"step_number": 5}}
    )
    assert mixed.state.step_number == 5


def test_tool_results_carry_a_typed_verdict() -> None:
    typed = ToolActivityOutput.model_validate(_result("validate_pipeline", valid=False))
    assert typed.valid is False and not typed.passed_validation
    recorded = ToolActivityOutput.model_validate(_result("validate_pipeline", data={"valid": True}))
    assert recorded.valid is True and recorded.passed_validation
    # Only validate_pipeline gives a verdict, whatever another tool's data says.
    other = ToolActivityOutput.model_validate(_result("read_file", data={"valid": True}))
    assert other.valid is None and not other.passed_validation
    garbage = ToolActivityOutput.model_validate(_result("validate_pipeline", data={"valid": "yes"}))
    assert garbage.valid is None and not garbage.passed_validation


def test_statuses_serialize_as_the_strings_histories_hold() -> None:
    assert json.dumps(AgentTaskStatus.COMPLETED) == '"completed"'
    assert AgentTaskStatus("cancelled") is AgentTaskStatus.CANCELLED
