"""ANSI colour (SGR) sequences in log text rendered as HTML: the text is escaped first, then only
the recognised colour codes become spans with fixed class names; every other escape is dropped."""

from __future__ import annotations

import re

from markupsafe import Markup, escape

_SGR = re.compile(r"\x1b\[([0-9;]{0,32})m")
_OTHER_ESCAPES = re.compile(r"\x1b(\[[0-9;?]*[A-Za-z]|\][^\x07]*\x07|.)?")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def _classes(params: str, current: list[str]) -> list[str]:
    codes = [int(p) for p in params.split(";") if p.isdigit()] or [0]
    out = list(current)
    for code in codes:
        if code == 0:
            out = []
        elif code == 1:
            out = [c for c in out if c != "ansi-bold"] + ["ansi-bold"]
        elif 30 <= code <= 37 or 90 <= code <= 97:
            out = [c for c in out if not c.startswith("ansi-fg")] + [f"ansi-fg{code}"]
        elif code == 39:
            out = [c for c in out if not c.startswith("ansi-fg")]
        elif 40 <= code <= 47:
            out = [c for c in out if not c.startswith("ansi-bg")] + [f"ansi-bg{code}"]
        elif code == 49:
            out = [c for c in out if not c.startswith("ansi-bg")]
    return out


def ansi_to_html(text: str) -> Markup:
    parts: list[str] = []
    classes: list[str] = []
    position = 0
    for match in _SGR.finditer(text):
        parts.append(_segment(text[position : match.start()], classes))
        classes = _classes(match.group(1), classes)
        position = match.end()
    parts.append(_segment(text[position:], classes))
    return Markup("".join(parts))  # noqa: S704  # every segment was escaped by _segment


def _segment(raw: str, classes: list[str]) -> str:
    cleaned = _CONTROL.sub("", _OTHER_ESCAPES.sub("", raw))
    if not cleaned:
        return ""
    body = str(escape(cleaned))
    if not classes:
        return body
    return f'<span class="{" ".join(classes)}">{body}</span>'
