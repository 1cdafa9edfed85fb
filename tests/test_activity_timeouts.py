"""Every activity call in workflows/ says how long it may take: a start-to-close timeout always;
bookkeeping (database writes and projections, retried on their own policy) at most
BOOKKEEPING_MAX unless it heartbeats, so a lost worker delays a deployment or a run by seconds
rather than minutes; and anything longer than LONG_WITHOUT_HEARTBEAT heartbeats, so a lost
worker is noticed at the heartbeat timeout instead of the end of a long one. Static: reads the
calls' source."""

from __future__ import annotations

import ast
import importlib
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CONTRACT_CALLS = {"execute", "start", "execute_local"}
BOOKKEEPING_MAX = timedelta(seconds=60)
LONG_WITHOUT_HEARTBEAT = timedelta(minutes=5)
# Retry policies that mark a call as bookkeeping.
BOOKKEEPING_POLICY_WORDS = ("BOOKKEEPING", "PROJECTION", "DB_RETRY")
# Timeouts computed from the call's input, bounded by a request timeout of the same input.
DYNAMIC: dict[tuple[str, str], str] = {
    ("workflows/deployment_monitor.py", "MONITOR_PROBE"): "one probe: its request timeout + 30 s",
    ("workflows/notification.py", "DELIVER"): "one delivery: its request timeout + 20 s",
}


def contract_calls(tree: ast.AST) -> list[tuple[ast.Call, str, dict[str, ast.expr]]]:
    found = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in CONTRACT_CALLS
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id.isupper()
        ):
            keywords = {k.arg: k.value for k in node.keywords if k.arg}
            found.append((node, node.func.value.id, keywords))
    return found


def value_of(expr: ast.expr, module: Any) -> timedelta | None:
    """The timeout when the module's constants decide it, None when the call's input does."""
    try:
        value = eval(compile(ast.Expression(expr), "<timeout>", "eval"), vars(module))
    except NameError:
        return None
    assert isinstance(value, timedelta), ast.unparse(expr)
    return value


def test_every_activity_call_is_bounded_and_long_ones_heartbeat() -> None:
    problems: list[str] = []
    checked = 0
    for path in sorted((ROOT / "workflows").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        calls = contract_calls(ast.parse(path.read_text(), rel))
        if not calls:
            continue
        module = importlib.import_module(rel.removesuffix(".py").replace("/", "."))
        for call, contract, keywords in calls:
            where = f"{rel}:{call.lineno} {contract}"
            timeout = keywords.get("start_to_close_timeout")
            if timeout is None:
                problems.append(f"{where}: no start_to_close_timeout")
                continue
            checked += 1
            value = value_of(timeout, module)
            heartbeat = "heartbeat_timeout" in keywords
            policy = ast.unparse(keywords.get("retry_policy", ast.Constant(None)))
            if value is None:
                if not heartbeat and (rel, contract) not in DYNAMIC:
                    problems.append(f"{where}: a computed timeout and no heartbeat")
                continue
            bookkeeping = any(word in policy for word in BOOKKEEPING_POLICY_WORDS)
            if bookkeeping and value > BOOKKEEPING_MAX and not heartbeat:
                problems.append(f"{where}: bookkeeping ({policy}) may take {value}")
            if value > LONG_WITHOUT_HEARTBEAT and not heartbeat:
                problems.append(f"{where}: {value} without a heartbeat")
    assert checked > 40  # the scan sees the calls (it would pass vacuously otherwise)
    assert not problems, "\n".join(problems)
