"""Two checkouts benched in alternation on one machine, so both see the same load.

    python -m bench.side_by_side --before /tmp/bench-before --after . --out /tmp/ab \\
        --rounds 2 --only runs --only runners

Bench by bench, each round runs `python -m bench.run --only <name> --skip-baseline` once per tree
(each tree with its own virtualenv and its own bench code; a bench measures its baseline on demand
in the same process), the tree that goes first swapping every round; a series cut short leaves
every bench before it complete. Each run's table goes to
`<out>/<round>-<tree>-<name>.txt` with the load average before and after it and its wall time;
`--summary` prints every row's ratio per tree as `min-max (runs)` from those files.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path


def load_average() -> str:
    return Path("/proc/loadavg").read_text().split(" ", 3)[0]


def run_one(tree: Path, name: str, out: Path, timeout: float) -> None:
    python = tree / ".venv" / "bin" / "python"
    started = time.monotonic()
    load_before = load_average()
    env = {**os.environ, "PYTHONPATH": str(tree)}
    command = [str(python), "-m", "bench.run", "--only", name, "--skip-baseline"]
    try:
        done = subprocess.run(
            command, cwd=tree, env=env, capture_output=True, text=True, timeout=timeout
        )
        body, code = done.stdout + "\n--- stderr (tail)\n" + done.stderr[-3000:], done.returncode
    except subprocess.TimeoutExpired:
        body, code = "timed out", -1
    header = (
        f"# tree={tree} bench={name} exit={code} wall_s={time.monotonic() - started:.0f} "
        f"load_before={load_before} load_after={load_average()}\n"
    )
    out.write_text(header + body)
    print(header.strip(), flush=True)


def summary(out: Path) -> None:
    """Every row's ratio per tree over the runs in `out`, as a Markdown table."""
    ratios: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    loads: list[float] = []
    for path in sorted(out.glob("*.txt")):
        parts = path.stem.split("-", 2)
        if len(parts) != 3 or parts[1] not in ("before", "after"):
            continue  # not a run's table
        tree = parts[1]
        text = path.read_text(errors="replace")
        loads += [float(x) for x in re.findall(r"load_(?:before|after)=([\d.]+)", text)]
        for line in text.split("\n--- stderr")[0].splitlines():
            cells = re.split(r"\s{2,}", line.strip())
            if len(cells) >= 6 and re.fullmatch(r"\d+(\.\d+)?x", cells[5]):
                ratios[(cells[0], cells[1], tree)].append(float(cells[5][:-1]))
    keys = sorted({(bench, metric) for bench, metric, _ in ratios})
    print("| bench | metric | before | after |\n|---|---|---|---|")
    for bench, metric in keys:
        cells = []
        for tree in ("before", "after"):
            values = ratios.get((bench, metric, tree), [])
            cells.append(f"{min(values):.2f}-{max(values):.2f}x ({len(values)})" if values else "-")
        print(f"| {bench} | {metric} | {cells[0]} | {cells[1]} |")
    if loads:
        print(f"\nload average during the runs: {min(loads):.1f}-{max(loads):.1f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--before", type=Path, required=True)
    parser.add_argument("--after", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--first-round", type=int, default=1, help="resume a series at this round")
    parser.add_argument("--only", action="append", default=[])
    parser.add_argument("--timeout", type=float, default=1200.0)
    parser.add_argument("--summary", action="store_true", help="only summarize --out")
    args = parser.parse_args(argv)
    if args.summary:
        summary(args.out)
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    trees = {"before": args.before.resolve(), "after": args.after.resolve()}
    for name in args.only:
        for round_no in range(args.first_round, args.rounds + 1):
            order = ["before", "after"] if round_no % 2 else ["after", "before"]
            for tree in order:
                target = args.out / f"{round_no}-{tree}-{name}.txt"
                run_one(trees[tree], name, target, args.timeout)
    summary(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
