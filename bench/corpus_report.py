"""What bench/corpus.py prints: one row per repository, the totals, and for each first-run failure
whether `troubleshoot_failure` named the cause the repair that made the pipeline green found."""

from __future__ import annotations

import json
import re
import statistics
import uuid
from pathlib import Path
from typing import Any

# What a cause is about, read from the words a diagnosis uses: a repair and a troubleshoot
# diagnosis of the same failure name the same kind when the troubleshooter is right.
CAUSE_KINDS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("registry signatures", re.compile(r"signature", re.I)),
    ("lockfile", re.compile(r"lockfile|npm ci\b", re.I)),
    ("missing script", re.compile(r"script", re.I)),
    ("requirements file", re.compile(r"requirements", re.I)),
    ("env file", re.compile(r"\.env\b", re.I)),
    ("import path", re.compile(r"import path|PYTHONPATH|No module named|module", re.I)),
    ("tool missing", re.compile(r"not installed|not found|corepack|image", re.I)),
    ("timeout", re.compile(r"timeout|timed out", re.I)),
    ("network", re.compile(r"network|DNS|registry|host name", re.I)),
)


def cause_kind(text: str | None) -> str | None:
    for kind, pattern in CAUSE_KINDS:
        if text and pattern.search(text):
            return kind
    return None


def judge_cause(repair: str | None, troubleshoot: dict[str, Any] | None) -> bool | None:
    """Right when the troubleshooter calls the failure the pipeline's (config) and names the
    same kind of cause as the repair; None when there is no repair to judge against."""
    if not repair or troubleshoot is None:
        return None
    said = f"{troubleshoot.get('cause') or ''} {troubleshoot.get('fix') or ''}"
    expected = cause_kind(repair.split(": ", 1)[-1])
    return troubleshoot.get("failure_class") == "config" and cause_kind(said) == expected


def right_cause(result: dict[str, Any]) -> bool | None:
    """For a failed first run whose failed stage passed on the run after the repair (the repair
    found the cause): whether troubleshoot_failure named it. None when nothing is to judge."""
    runs = result.get("runs") or []
    first = result.get("first_run") or {}
    if len(runs) < 2 or not first or first.get("status") == "success":
        return None
    failed = first.get("failed_stage")
    fixed = any(s["name"] == failed and s["status"] == "success" for s in runs[1]["stages"])
    if not fixed:
        return None
    return judge_cause(result.get("first_repair"), result.get("troubleshoot"))


def _first_run(result: dict[str, Any]) -> str:
    first = result.get("first_run") or {}
    if not first:
        return result.get("error") or "-"
    if first.get("status") == "success":
        return "green"
    return f"{first.get('failed_stage')} ({first.get('failure_class') or '?'})"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} s"


def rows(results: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = [
        ("repository", "stages", "first run", "verified", "attempts", "time to verified", "at")
    ]
    for r in results:
        out.append(
            (
                r["name"],
                str(len(r.get("stages") or [])),
                _first_run(r),
                "yes" if r.get("verified") else f"no: {r.get('stop_reason') or r.get('error')}",
                str(r.get("attempts") or 0),
                _seconds(r.get("verified_seconds")),
                str(r.get("forgeline") or "?"),
            )
        )
    return out


def table(lines: list[tuple[str, ...]]) -> str:
    """A Markdown table (readable in a terminal, pasted as is into bench/README.md)."""
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    text = []
    for index, line in enumerate(lines):
        text.append("| " + " | ".join(c.ljust(widths[i]) for i, c in enumerate(line)) + " |")
        if index == 0:
            text.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(text)


def causes(results: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = [
        ("repository", "first-run failure", "troubleshoot_failure says", "repair found", "right")
    ]
    for r in results:
        first = r.get("first_run") or {}
        if not first or first.get("status") == "success":
            continue
        said = r.get("troubleshoot") or {}
        verdict = right_cause(r)
        out.append(
            (
                r["name"],
                f"{first.get('failed_stage')}: {_short(first.get('cause'))}",
                f"{said.get('failure_class')}: {_short(said.get('cause'))}" if said else "-",
                _short(r.get("first_repair")) or "none",
                {True: "yes", False: "no", None: "n/a"}[verdict],
            )
        )
    return out


def _short(text: str | None, limit: int = 90) -> str:
    text = " ".join((text or "").split()).replace("|", "/")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def read_result(path: Path) -> dict[str, Any] | None:
    """A repository's cached result; None when there is none, or when it is not a whole result
    (a file cut short, as one written by an older benchmark that was killed midway)."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) and isinstance(value.get("name"), str) else None


def write_result(path: Path, result: dict[str, Any]) -> None:
    """Written whole or not at all (renamed into place), whoever reads it meanwhile."""
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(f".{path.name}.{uuid.uuid4().hex}.part")
    part.write_text(json.dumps(result, indent=1, default=str))
    part.replace(path)


def meets(result: dict[str, Any]) -> bool:
    """Whether the repository meets issue 16's criterion: nothing in the corpus file says it is
    outside (its own CI red today, or a build needing a host other than the registries)."""
    return not result.get("outside")


def totals(results: list[dict[str, Any]]) -> dict[str, Any]:
    n = len(results)
    first_green = sum(1 for r in results if (r.get("first_run") or {}).get("status") == "success")
    verified = sum(1 for r in results if r.get("verified"))
    times = [r["verified_seconds"] for r in results if r.get("verified_seconds") is not None]
    judged = [v for r in results if (v := right_cause(r)) is not None]
    return {
        "repositories": n,
        "first_run_green": first_green,
        "verified": verified,
        "first_run_green_pct": 100 * first_green / n if n else 0.0,
        "verified_pct": 100 * verified / n if n else 0.0,
        "median_seconds": statistics.median(times) if times else None,
        "right_cause": sum(judged),
        "judged": len(judged),
        "right_cause_pct": 100 * sum(judged) / len(judged) if judged else None,
    }


def _totals_lines(label: str, t: dict[str, Any]) -> list[str]:
    n = t["repositories"]
    if not n:
        return [f"{label}: none"]
    return [
        f"{label}: {n}",
        f"  first-run green: {t['first_run_green']}/{n} = {t['first_run_green_pct']:.0f}%"
        " (target >= 70%)",
        f"  verified green: {t['verified']}/{n} = {t['verified_pct']:.0f}% (target >= 90%)",
        f"  median time to a verified pipeline: {_seconds(t['median_seconds'])}",
    ]


def summary(results: list[dict[str, Any]]) -> str:
    """The totals twice: over every repository, and over those meeting issue 16's criterion
    (the targets' denominator); the repositories outside it with their reasons."""
    t = totals(results)
    counted = [r for r in results if meets(r)]
    right = (
        f"{t['right_cause']}/{t['judged']} = {t['right_cause_pct']:.0f}%"
        if t["judged"]
        else "no first-run failure was repaired to green"
    )
    lines = _totals_lines("all repositories", t)
    lines += _totals_lines(
        "repositories meeting the criterion (own CI green, only the registries needed)",
        totals(counted),
    )
    outside = [r for r in results if not meets(r)]
    if outside:
        lines.append(f"outside the criterion: {len(outside)}")
        lines += [f"  {r['name']}: {_short(str(r['outside']), 200)}" for r in outside]
    lines.append(f"right cause (troubleshoot_failure vs the repair): {right} (target >= 80%)")
    return "\n".join(lines)


def report(results: list[dict[str, Any]]) -> str:
    """What `--report` prints: the rows, the first-run failures' causes, the totals."""
    return "\n\n".join([table(rows(results)), table(causes(results)), summary(results)])
