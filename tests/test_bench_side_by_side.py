"""The side-by-side bench driver's summary: ratios per tree as ranges, whatever else lies in the
output folder (files of other names, broken tables, a run that timed out)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.side_by_side import summary

TABLE = """# tree=/t bench=runs exit=0 wall_s=10 load_before={load} load_after=2.00
benchmark        metric       value   unit  baseline  ratio  note
---------------  -----------  ------  ----  --------  -----  ----
run, 1 stage     latency p50  {v}     ms    50.00     {r}x   chain of 1
baseline only    latency p50  40.00   ms
"""


def test_ranges_per_tree(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "1-before-runs.txt").write_text(TABLE.format(load="3.00", v="100", r="2.00"))
    (tmp_path / "1-after-runs.txt").write_text(TABLE.format(load="5.00", v="110", r="2.20"))
    (tmp_path / "2-after-runs.txt").write_text(TABLE.format(load="9.50", v="90", r="1.80"))
    summary(tmp_path)
    out = capsys.readouterr().out
    assert "| run, 1 stage | latency p50 | 2.00-2.00x (1) | 1.80-2.20x (2) |" in out
    assert "baseline only" not in out
    assert "load average during the runs: 2.0-9.5" in out


def test_hostile_and_partial_outputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "notes.txt").write_text("anything  at  all  here  ok  1.5x")
    (tmp_path / "1-sideways-runs.txt").write_text(TABLE.format(load="1", v="1", r="9.00"))
    (tmp_path / "1-before-runs.txt").write_bytes(b"\xff\xfe timed out \x00")
    (tmp_path / "1-after-runs.txt").write_text("a  b  c  d  e  nanx  f\n" + "x  " * 5000)
    summary(tmp_path)
    out = capsys.readouterr().out
    assert out.splitlines()[:2] == ["| bench | metric | before | after |", "|---|---|---|---|"]
    assert "9.00" not in out and "1.5" not in out
