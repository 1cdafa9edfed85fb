"""Line coverage from the reports a stage publishes as artifacts: Cobertura XML, JaCoCo XML and
lcov. Reports are hostile input (they come out of the repository's own build): at most
MAX_REPORT_BYTES are read, XML is parsed by expat as a stream with every DTD refused (no entity
can expand: billion laughs and external entities never run), and anything that is not a
well-formed report of a known shape yields a note instead of a figure, never an exception.
"""

from __future__ import annotations

import pyexpat
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import IO

MAX_REPORT_BYTES = 20 * 1024 * 1024
READ_CHUNK = 64 * 1024
MAX_XML_DEPTH = 256

# Artifact names (last path segment, lower case) that are read as coverage reports.
COBERTURA_NAMES = ("coverage.xml", "cobertura.xml", "cobertura-coverage.xml")
JACOCO_NAMES = ("jacoco.xml", "jacocotestreport.xml")
LCOV_NAMES = ("lcov.info", "coverage.lcov")


@dataclass(frozen=True)
class Coverage:
    """Lines covered out of lines measured; `percentage` rounded to two places."""

    covered: int
    total: int

    @property
    def percentage(self) -> Decimal:
        if self.total <= 0:
            return Decimal("0.00")
        value = Decimal(self.covered) * 100 / Decimal(self.total)
        return value.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


class UnreadableReport(ValueError):
    """Why a report gave no figure, in words shown on the pull request."""


def report_kind(name: str) -> str | None:
    """'cobertura', 'jacoco', 'lcov' or None, from the artifact's file name."""
    base = name.rsplit("/", 1)[-1].lower()
    if base in COBERTURA_NAMES:
        return "cobertura"
    if base in JACOCO_NAMES:
        return "jacoco"
    if base in LCOV_NAMES or base.endswith(".lcov"):
        return "lcov"
    return None


def _chunks(stream: IO[bytes], limit: int) -> Iterable[bytes]:
    read = 0
    while True:
        chunk = stream.read(READ_CHUNK)
        if not chunk:
            return
        read += len(chunk)
        if read > limit:
            raise UnreadableReport(f"larger than {limit} bytes")
        yield chunk


def _int(value: str | None, what: str) -> int:
    try:
        number = int(value or "")
    except ValueError:
        raise UnreadableReport(f"{what} is not a whole number") from None
    if number < 0 or number > 10**12:
        raise UnreadableReport(f"{what} is out of range")
    return number


class _XmlReport:
    """Streams an XML report through expat and keeps only the figures it needs."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.depth = 0
        self.root: str | None = None
        self.result: Coverage | None = None
        self.jacoco_line: Coverage | None = None
        parser = pyexpat.ParserCreate()
        parser.StartDoctypeDeclHandler = self._refuse_dtd
        parser.EntityDeclHandler = self._refuse_entity
        parser.ExternalEntityRefHandler = self._refuse_external
        parser.StartElementHandler = self._start
        parser.EndElementHandler = self._end
        self.parser = parser

    def _refuse_dtd(self, *_: object) -> None:
        raise UnreadableReport("has a DTD (refused: entities are never expanded)")

    def _refuse_entity(self, *_: object) -> None:
        raise UnreadableReport("declares entities (refused)")

    def _refuse_external(self, *_: object) -> int:
        raise UnreadableReport("refers to an external entity (refused)")

    def _start(self, name: str, attrs: dict[str, str]) -> None:
        self.depth += 1
        if self.depth > MAX_XML_DEPTH:
            raise UnreadableReport(f"nests deeper than {MAX_XML_DEPTH} elements")
        if self.depth == 1:
            self.root = name
            if self.kind == "cobertura" and name == "coverage":
                self.result = self._cobertura(attrs)
        elif (
            self.depth == 2
            and self.kind == "jacoco"
            and name == "counter"
            and (attrs.get("type") == "LINE")
        ):
            missed = _int(attrs.get("missed"), "LINE counter 'missed'")
            covered = _int(attrs.get("covered"), "LINE counter 'covered'")
            self.jacoco_line = Coverage(covered, covered + missed)

    def _end(self, name: str) -> None:
        self.depth -= 1

    @staticmethod
    def _cobertura(attrs: dict[str, str]) -> Coverage:
        if "lines-valid" in attrs and "lines-covered" in attrs:
            total = _int(attrs["lines-valid"], "lines-valid")
            covered = _int(attrs["lines-covered"], "lines-covered")
            if covered > total:
                raise UnreadableReport("covers more lines than it measures")
            return Coverage(covered, total)
        try:
            rate = Decimal(attrs.get("line-rate", ""))
        except ArithmeticError:
            raise UnreadableReport("line-rate is not a number") from None
        if not rate.is_finite() or not Decimal(0) <= rate <= Decimal(1):
            raise UnreadableReport("line-rate is not between 0 and 1")
        return Coverage(int((rate * 10000).to_integral_value()), 10000)

    def parse(self, chunks: Iterable[bytes]) -> Coverage:
        try:
            for chunk in chunks:
                self.parser.Parse(chunk, False)
            self.parser.Parse(b"", True)
        except pyexpat.ExpatError as exc:
            reason = pyexpat.ErrorString(exc.code)
            raise UnreadableReport(f"is not well-formed XML ({reason})") from None
        except RecursionError:
            raise UnreadableReport("nests too deeply") from None
        if self.kind == "jacoco":
            if self.root != "report" or self.jacoco_line is None:
                raise UnreadableReport("is not a JaCoCo report with a LINE counter")
            return self.jacoco_line
        if self.root != "coverage" or self.result is None:
            raise UnreadableReport("is not a Cobertura report (no <coverage> root)")
        return self.result


def _lcov(chunks: Iterable[bytes]) -> Coverage:
    covered = total = 0
    seen = False
    pending = b""
    for chunk in chunks:
        lines = (pending + chunk).split(b"\n")
        pending = lines.pop()
        if len(pending) > READ_CHUNK:
            raise UnreadableReport("has a line longer than 64 KiB")
        for line in lines:
            seen = _lcov_line(line.strip(), seen)
            if line.startswith(b"LF:"):
                total += _int(line[3:].strip().decode("ascii", "replace"), "LF")
            elif line.startswith(b"LH:"):
                covered += _int(line[3:].strip().decode("ascii", "replace"), "LH")
    if pending.startswith(b"LF:"):
        total += _int(pending[3:].strip().decode("ascii", "replace"), "LF")
        seen = True
    elif pending.startswith(b"LH:"):
        covered += _int(pending[3:].strip().decode("ascii", "replace"), "LH")
    if not seen:
        raise UnreadableReport("is not an lcov tracefile (no SF/LF records)")
    if covered > total:
        raise UnreadableReport("covers more lines than it measures")
    return Coverage(covered, total)


def _lcov_line(line: bytes, seen: bool) -> bool:
    return seen or line.startswith((b"SF:", b"LF:"))


def read_report(kind: str, stream: IO[bytes], *, limit: int = MAX_REPORT_BYTES) -> Coverage:
    """The report's line coverage; UnreadableReport says why there is none."""
    chunks = _chunks(stream, limit)
    if kind == "lcov":
        return _lcov(chunks)
    if kind in ("cobertura", "jacoco"):
        return _XmlReport(kind).parse(chunks)
    raise UnreadableReport(f"unknown report kind {kind!r}")


def combine(reports: Iterable[Coverage]) -> Coverage | None:
    """Several reports of one run (one per stage or module) add up line by line."""
    found = list(reports)
    if not found:
        return None
    return Coverage(sum(c.covered for c in found), sum(c.total for c in found))
