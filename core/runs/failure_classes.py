"""Whose fault a failed stage attempt was: `classify` reads what the runner saw (exit status,
signal, timeout, Forgeline's own limit markers, a lost runner) and the log's tail, and names a
failure class, its cause and the log lines that show it. Pure and bounded: a hostile log (huge
lines, binary, escape sequences, millions of lines) costs at most the scanned tail.
"""

from __future__ import annotations

import re
import signal
from dataclasses import dataclass, field

from core.runs.failure_patterns import (
    CLASS_PRECEDENCE,
    ENDS_ITS_COMMAND,
    PATTERNS,
    TESTS_FAILED,
    FailurePattern,
)
from forgeline.statuses.runs import FailureClass
from infra.runners.base import SERVICE_MARKER

# Only the end of the log is read: where a failure explains itself.
SCAN_CHARS = 64 * 1024
SCAN_LINES = 400
# A line is matched on its first characters only (a minified bundle is one line).
MATCH_CHARS = 1000
MAX_EVIDENCE = 5
# How a cause ends when nothing specific was found (a specific cause never gives way to it).
GENERIC_CAUSE = "no known pattern matched"
EVIDENCE_CHARS = 300

# Forgeline's own lines about a stage (written into its log by the runners and the capture).
MEMORY_MARKER = "forgeline: a process of the stage was killed: memory limit"
DISK_MARKER = "forgeline: stage stopped: its workspace exceeded the disk limit"
LOG_LIMIT_MARKER = "forgeline: log truncated:"

_ENDS_ITS_COMMAND = frozenset(i for i, p in enumerate(PATTERNS) if p.cause in ENDS_ITS_COMMAND)
_TEST_REPORTS = frozenset(i for i, p in enumerate(PATTERNS) if p.cause == TESTS_FAILED)
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


@dataclass(frozen=True)
class FailureSignals:
    """What the runner knows about an attempt that did not succeed."""

    exit_code: int | None = None
    timed_out: bool = False
    timeout_seconds: int | None = None
    # The worker or its process died mid-attempt: nothing of the stage's own is to blame.
    runner_lost: bool = False
    # The runner itself failed (engine error, container could not start).
    runner_error: str | None = None
    # Stopped because its log reached the pipeline's limit.
    log_limit_reached: bool = False
    log_tail: str | bytes = ""


@dataclass(frozen=True)
class FailureClassification:
    failure_class: FailureClass
    cause: str
    evidence: list[str] = field(default_factory=list)

    @property
    def retried(self) -> bool:
        return self.failure_class in (FailureClass.INFRASTRUCTURE, FailureClass.FLAKY)


def clean_line(line: str, limit: int = EVIDENCE_CHARS) -> str:
    """A log line as evidence: no escape sequences or control characters, at most `limit`."""
    text = _ANSI.sub("", line[: limit * 4])
    text = _CONTROL.sub("", text).strip()
    return text[:limit] + ("…" if len(text) > limit else "")


def tail_lines(log: str | bytes) -> list[str]:
    """The last SCAN_LINES lines of at most SCAN_CHARS of the log, cleaned for matching."""
    if isinstance(log, bytes):
        log = log[-SCAN_CHARS * 4 :].decode("utf-8", errors="replace")
    text = log[-SCAN_CHARS:]
    lines = text.splitlines()[-SCAN_LINES:]
    return [clean_line(line, MATCH_CHARS) for line in lines]


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


@dataclass
class _Hits:
    """Matched lines per class, in log order, and the first pattern that matched."""

    lines: dict[FailureClass, list[tuple[int, int, str]]] = field(default_factory=dict)

    def add(self, index: int, rank: int, rule: FailurePattern, line: str) -> None:
        self.lines.setdefault(rule.failure_class, []).append((rank, index, line))

    def best(self, failure_class: FailureClass) -> tuple[str, list[str]] | None:
        found = self.lines.get(failure_class)
        if not found:
            return None
        rank = min(r for r, _, _ in found)
        cause = PATTERNS[rank].cause
        # The lines of the cause's own pattern first, then the class's others; shown in log order.
        chosen = sorted(found, key=lambda hit: (hit[0] != rank, -hit[1]))[:MAX_EVIDENCE]
        evidence: list[str] = []
        for _, _, line in sorted(chosen, key=lambda hit: hit[1]):
            text = clean_line(line)
            if text not in evidence:
                evidence.append(text)
        return cause, evidence


def _scan(lines: list[str]) -> _Hits:
    hits = _Hits()
    for index, line in enumerate(lines):
        if not line:
            continue
        for rank, rule in enumerate(PATTERNS):
            if rule.pattern.search(line):
                hits.add(index, rank, rule, line)
    _drop_test_output(hits)
    return hits


def _drop_test_output(hits: _Hits) -> None:
    """Lines of a cause that ends its command at once (a missing package.json script) that a
    test run's report follows were that run's output (a snapshot diff, a test's expected text),
    not what ended the stage: the command they would have ended ran the tests after them."""
    reports = [i for r, i, _ in hits.lines.get(FailureClass.CODE, []) if r in _TEST_REPORTS]
    found = hits.lines.get(FailureClass.CONFIG)
    if not reports or not found:
        return
    last = max(reports)
    kept = [hit for hit in found if not (hit[0] in _ENDS_ITS_COMMAND and hit[1] < last)]
    if kept:
        hits.lines[FailureClass.CONFIG] = kept
    else:
        del hits.lines[FailureClass.CONFIG]


def _marker(lines: list[str], marker: str) -> list[str]:
    return [clean_line(line) for line in lines if line.startswith(marker)][-1:]


def _last_lines(lines: list[str]) -> list[str]:
    return [clean_line(line) for line in lines if line.strip()][-MAX_EVIDENCE:]


def classify(signals: FailureSignals) -> FailureClassification:
    """The failure class of an attempt that failed or timed out, with its cause and evidence."""
    lines = tail_lines(signals.log_tail)
    if signals.runner_lost:
        return FailureClassification(
            FailureClass.INFRASTRUCTURE,
            "the runner was lost during the attempt",
            _last_lines(lines),
        )
    if signals.runner_error is not None:
        return FailureClassification(
            FailureClass.INFRASTRUCTURE,
            "the runner could not run the stage",
            [clean_line(signals.runner_error)],
        )
    memory = _marker(lines, MEMORY_MARKER)
    if memory:
        return FailureClassification(
            FailureClass.INFRASTRUCTURE, "the stage ran out of memory (OOM kill)", memory
        )
    services = _marker(lines, SERVICE_MARKER)
    if services:
        return FailureClassification(
            FailureClass.CONFIG, "the stage's services did not start", services
        )
    disk = _marker(lines, DISK_MARKER)
    if disk:
        return FailureClassification(
            FailureClass.CONFIG, "the stage's workspace exceeded the pipeline's disk limit", disk
        )
    if signals.log_limit_reached:
        return FailureClassification(
            FailureClass.CONFIG,
            "the stage's log reached the pipeline's log limit",
            _marker(lines, LOG_LIMIT_MARKER),
        )
    hits = _scan(lines)
    if signals.timed_out:
        # A stall on the network explains a timeout; anything else is the pipeline's limit.
        for failure_class in (FailureClass.INFRASTRUCTURE, FailureClass.FLAKY):
            found = hits.best(failure_class)
            if found is not None:
                return FailureClassification(failure_class, found[0], found[1])
        limit = f" of {signals.timeout_seconds}s" if signals.timeout_seconds else ""
        return FailureClassification(
            FailureClass.CONFIG, f"the stage hit its timeout{limit}", _last_lines(lines)
        )
    for failure_class in CLASS_PRECEDENCE:
        found = hits.best(failure_class)
        if found is not None:
            return FailureClassification(failure_class, found[0], found[1])
    return _by_exit_status(signals.exit_code, lines)


def _by_exit_status(exit_code: int | None, lines: list[str]) -> FailureClassification:
    evidence = _last_lines(lines)
    if exit_code == 127:
        return FailureClassification(
            FailureClass.CONFIG, "a command the stage calls was not found (exit 127)", evidence
        )
    if exit_code == 126:
        return FailureClassification(
            FailureClass.CONFIG, "a command the stage calls is not executable (exit 126)", evidence
        )
    if exit_code is not None and 128 < exit_code < 128 + 65:
        number = exit_code - 128
        name = _signal_name(number)
        if number in (signal.SIGSEGV, signal.SIGABRT, signal.SIGBUS, signal.SIGFPE, signal.SIGILL):
            return FailureClassification(
                FailureClass.CODE, f"a process of the stage crashed ({name})", evidence
            )
        return FailureClassification(
            FailureClass.INFRASTRUCTURE,
            f"a process of the stage was killed ({name}): out of memory or stopped by the host",
            evidence,
        )
    if exit_code is not None and exit_code < 0:
        # asyncio reports a process killed by a signal as its negated number.
        return _by_exit_status(128 - exit_code, lines)
    code = "" if exit_code is None else f" with {exit_code}"
    return FailureClassification(
        FailureClass.CODE, f"the stage's commands exited{code}; {GENERIC_CAUSE}", evidence
    )
