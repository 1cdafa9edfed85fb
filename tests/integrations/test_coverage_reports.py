"""Coverage reports as a stage publishes them (Cobertura, JaCoCo, lcov) read into a line figure,
and hostile ones (billion laughs, external entities, 50 MB, deep nesting, garbage) turned into a
note, never an exception; the quality score's formula."""

from __future__ import annotations

import io
from decimal import Decimal
from pathlib import Path

import pytest

from core.integrations import coverage
from core.integrations.pr_reports import read_coverage
from core.integrations.quality import quality_score
from infra.storage import LocalObjectStore

COBERTURA = b"""<?xml version="1.0" ?>
<coverage line-rate="0.5" lines-covered="150" lines-valid="200" version="7.4">
  <packages><package name="app"/></packages>
</coverage>"""
JACOCO = b"""<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<report name="demo"><package name="a"><counter type="LINE" missed="1" covered="1"/></package>
<counter type="INSTRUCTION" missed="5" covered="5"/><counter type="LINE" missed="10" covered="30"/>
</report>"""
LCOV = b"TN:\nSF:src/a.py\nDA:1,1\nLF:10\nLH:7\nend_of_record\nSF:src/b.py\nLF:10\nLH:3\n"
BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<coverage line-rate="1" lines-covered="1" lines-valid="1">&lol3;</coverage>"""
EXTERNAL = b"""<?xml version="1.0"?>
<!DOCTYPE coverage [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<coverage line-rate="1">&xxe;</coverage>"""


def read(kind: str, data: bytes, limit: int = coverage.MAX_REPORT_BYTES) -> coverage.Coverage:
    return coverage.read_report(kind, io.BytesIO(data), limit=limit)


def test_known_formats_give_line_coverage() -> None:
    assert read("cobertura", COBERTURA).percentage == Decimal("75.00")
    assert read("cobertura", b'<coverage line-rate="0.8123"/>').percentage == Decimal("81.23")
    assert read("jacoco", JACOCO) == coverage.Coverage(30, 40)
    assert read("lcov", LCOV) == coverage.Coverage(10, 20)
    assert coverage.report_kind("reports/Coverage.xml") == "cobertura"
    assert coverage.report_kind("build/jacocoTestReport.xml") == "jacoco"
    assert coverage.report_kind("coverage/lcov.info") == "lcov"
    assert coverage.report_kind("dist/index.html") is None


@pytest.mark.parametrize(
    ("kind", "data", "reason"),
    [
        ("cobertura", BILLION_LAUGHS, "DTD"),
        ("cobertura", EXTERNAL, "DTD"),
        ("cobertura", b"<coverage line-rate='1'>" + b"<a>" * 300, "nests deeper"),
        ("cobertura", b"\x00\xff garbage \x89PNG", "not well-formed"),
        ("cobertura", b"<html><body>coverage</body></html>", "not a Cobertura"),
        ("cobertura", b'<coverage line-rate="NaN"/>', "line-rate"),
        ("cobertura", b'<coverage lines-covered="9" lines-valid="3"/>', "more lines"),
        ("cobertura", b'<coverage lines-covered="-1" lines-valid="3"/>', "out of range"),
        ("jacoco", COBERTURA, "JaCoCo"),
        ("lcov", b"\x00" * 1000, "not an lcov"),
        ("lcov", b"SF:a\nLF:ten\n", "whole number"),
        ("lcov", b"SF:a\n" + b"x" * 200_000, "longer than"),
    ],
)
def test_hostile_reports_give_a_reason(kind: str, data: bytes, reason: str) -> None:
    with pytest.raises(coverage.UnreadableReport, match=reason):
        read(kind, data)


def test_a_report_past_the_limit_is_not_read_to_its_end() -> None:
    huge = b'<coverage line-rate="1">' + b"<x/>" * 1_000_000 + b"</coverage>"
    with pytest.raises(coverage.UnreadableReport, match="larger than"):
        read("cobertura", huge, limit=1024 * 1024)


async def test_reports_in_the_store_give_a_figure_and_notes(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    store.put_bytes("r/coverage.xml", COBERTURA)
    store.put_bytes("r/lcov.info", LCOV)
    store.put_bytes("r/bomb/coverage.xml", BILLION_LAUGHS)
    store.put_bytes("r/junk/lcov.info", b"\xde\xad\xbe\xef")
    reading = await read_coverage(
        store,
        [
            ("coverage.xml", "cobertura", "r/coverage.xml", len(COBERTURA)),
            ("lcov.info", "lcov", "r/lcov.info", len(LCOV)),
            ("bomb/coverage.xml", "cobertura", "r/bomb/coverage.xml", len(BILLION_LAUGHS)),
            ("junk/lcov.info", "lcov", "r/junk/lcov.info", 4),
            ("big/coverage.xml", "cobertura", "r/missing.xml", 50 * 1024 * 1024),
            ("gone/coverage.xml", "cobertura", "r/gone.xml", 10),
        ],
    )
    # (150 + 10) of (200 + 20) lines.
    assert reading.percentage == Decimal("72.73")
    notes = "\n".join(reading.notes)
    assert "bomb/coverage.xml: has a DTD" in notes
    assert "junk/lcov.info: is not an lcov tracefile" in notes
    assert "big/coverage.xml: larger than 20 MiB, ignored" in notes
    assert "gone/coverage.xml: could not be read" in notes


def test_quality_score_formula() -> None:
    # CI 50, coverage 30, security 20; unknown signals leave the sums.
    assert quality_score([], None, "pending") is None
    assert quality_score(["running"], None, None) is None
    assert quality_score(["success", "success"], None, "pending") == Decimal("100.00")
    assert quality_score(["success", "failure"], None, None) == Decimal("50.00")
    assert quality_score(["success"], Decimal("80"), None) == Decimal("92.50")
    assert quality_score(["success"], Decimal("80"), "failure") == Decimal("74.00")
    assert quality_score(["failure", "running"], Decimal("0"), "success") == Decimal("20.00")
    assert quality_score([], Decimal("150"), None) == Decimal("100.00")
