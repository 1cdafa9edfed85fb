"""Every retry policy in workflows/ and activities/ ends: a maximum number of attempts (an
activity that can never succeed, such as a write of bad data, fails instead of retrying for ever),
and every activity call names its policy (the server's default retries without limit)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ACTIVITY_CALLS = (
    "execute_activity",
    "execute_activity_method",
    "execute_local_activity",
    "execute_local_activity_method",
    "start_activity",
    "start_activity_method",
    "start_local_activity",
    "start_local_activity_method",
)


def _sources() -> list[Path]:
    return sorted(p for d in ("workflows", "activities") for p in (ROOT / d).rglob("*.py"))


def _name(call: ast.Call) -> str:
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")


def _bounded(policy: ast.Call) -> bool:
    """maximum_attempts given, and not Temporal's "unlimited" (0 or less)."""
    attempts = next((k.value for k in policy.keywords if k.arg == "maximum_attempts"), None)
    if attempts is None:
        return False
    if isinstance(attempts, ast.Constant):
        return isinstance(attempts.value, int) and attempts.value > 0
    return True  # an expression (a stage's own retry count plus a fixed margin)


def test_every_retry_policy_has_a_maximum() -> None:
    unbounded = [
        f"{path.relative_to(ROOT)}:{node.lineno}"
        for path in _sources()
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call) and _name(node) == "RetryPolicy" and not _bounded(node)
    ]
    assert unbounded == []


def test_every_activity_call_names_its_retry_policy() -> None:
    missing = [
        f"{path.relative_to(ROOT)}:{node.lineno}"
        for path in (ROOT / "workflows").rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call)
        and _name(node) in ACTIVITY_CALLS
        and not any(k.arg == "retry_policy" for k in node.keywords)
    ]
    assert missing == []
