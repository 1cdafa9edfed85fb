"""A static site's own rules (a project's `headers`, `rewrites` and `redirects`) as Caddy routes.

Sources are path patterns in the syntax Vercel and Netlify users write: `:name` matches one path
segment, `:name*` any number of them (`:name+` at least one), `(...)` is a regular-expression group
(RE2, as Caddy evaluates it) and a bare `*` matches anything. Destinations refer to what a source
captured with `:name` or `$1`. The order is the one those hosts use: redirects first, then the
headers of every rule whose source matches, then the first rewrite whose source matches a path that
is not a file of the site, then the file server.

Nothing a project writes is read by Caddy as a placeholder: braces in header values and
destinations are escaped, so `{env.X}` comes out literally and never reveals the proxy's
environment.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

_TOKEN = re.compile(r":([A-Za-z_][A-Za-z0-9_]*)([*+?]?)|\((?!\?)|\*")
_NAME_REF = re.compile(r":([A-Za-z_][A-Za-z0-9_]*)|\$([0-9])")


class InvalidSiteRule(ValueError):
    """A source pattern that does not compile."""


@dataclass(frozen=True)
class HeaderRule:
    source: str
    headers: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Rewrite:
    source: str
    destination: str


@dataclass(frozen=True)
class Redirect:
    source: str
    destination: str
    status_code: int = 308


@dataclass(frozen=True)
class SiteRules:
    headers: tuple[HeaderRule, ...] = field(default_factory=tuple)
    rewrites: tuple[Rewrite, ...] = field(default_factory=tuple)
    redirects: tuple[Redirect, ...] = field(default_factory=tuple)

    def __bool__(self) -> bool:
        return bool(self.headers or self.rewrites or self.redirects)


def _closing_paren(source: str, start: int) -> int:
    depth = 0
    for index in range(start, len(source)):
        char = source[index]
        if char == "\\":
            continue
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                return index
    raise InvalidSiteRule(f"unbalanced parenthesis in {source!r}")


def source_regex(source: str) -> str:
    """The anchored regular expression of a source pattern."""
    out: list[str] = ["^"]
    position = 0
    while position < len(source):
        match = _TOKEN.search(source, position)
        if match is None:
            out.append(re.escape(source[position:]))
            break
        out.append(re.escape(source[position : match.start()]))
        token = match.group(0)
        if token == "*":
            out.append(".*")
            position = match.end()
        elif token == "(":
            end = _closing_paren(source, match.start())
            out.append(source[match.start() : end + 1])
            position = end + 1
        else:
            name, modifier = match.group(1), match.group(2)
            if modifier == "*":
                out.append(f"(?P<{name}>.*)")
            elif modifier == "+":
                out.append(f"(?P<{name}>.+)")
            elif modifier == "?":
                out.append(f"(?P<{name}>[^/]*)")
            else:
                out.append(f"(?P<{name}>[^/]+)")
            position = match.end()
    out.append("$")
    pattern = "".join(out)
    try:
        re.compile(pattern)
    except re.error as exc:
        raise InvalidSiteRule(f"source {source!r} is not a valid pattern: {exc}") from exc
    return pattern


def escape_placeholders(value: str) -> str:
    """A value Caddy's replacer leaves as it is: every brace escaped."""
    return value.replace("{", "\\{").replace("}", "\\}")


def _destination(destination: str, matcher: str) -> str:
    """Escape the destination, then turn `:name` / `$1` into the matcher's captures."""
    escaped = escape_placeholders(destination)

    def capture(ref: re.Match[str]) -> str:
        group = ref.group(1) or ref.group(2)
        return "{http.regexp." + matcher + "." + group + "}"

    if destination.startswith("https://"):
        scheme_end = len("https://")
        host_end = escaped.find("/", scheme_end)
        if host_end == -1:
            return escaped
        return escaped[:host_end] + _NAME_REF.sub(capture, escaped[host_end:])
    return _NAME_REF.sub(capture, escaped)


def _path_match(source: str, matcher: str) -> dict[str, Any]:
    return {"path_regexp": {"name": matcher, "pattern": source_regex(source)}}


def caddy_site_routes(rules: SiteRules, root: str) -> list[dict[str, Any]]:
    """Caddy routes (for a subroute in front of the file server) enforcing the rules."""
    routes: list[dict[str, Any]] = []
    for index, redirect in enumerate(rules.redirects):
        name = f"redirect{index}"
        routes.append(
            {
                "group": "redirects",
                "match": [_path_match(redirect.source, name)],
                "handle": [
                    {
                        "handler": "static_response",
                        "status_code": redirect.status_code,
                        "headers": {"Location": [_destination(redirect.destination, name)]},
                    }
                ],
                "terminal": True,
            }
        )
    for index, rule in enumerate(rules.headers):
        values = {header: [escape_placeholders(value)] for header, value in rule.headers}
        routes.append(
            {
                "match": [_path_match(rule.source, f"headers{index}")],
                "handle": [{"handler": "headers", "response": {"set": values}}],
            }
        )
    not_a_file = {
        "file": {
            "root": root,
            "try_files": ["{http.request.uri.path}", "{http.request.uri.path}/index.html"],
        }
    }
    for index, rewrite in enumerate(rules.rewrites):
        name = f"rewrite{index}"
        match = _path_match(rewrite.source, name)
        routes.append(
            {
                "group": "rewrites",
                "match": [{**match, "not": [not_a_file]}],
                "handle": [{"handler": "rewrite", "uri": _destination(rewrite.destination, name)}],
            }
        )
    return routes


def site_rules_from_config(config: dict[str, Any]) -> SiteRules:
    """Rules from a stored project config (`headers`, `rewrites`, `redirects`), skipping any
    entry that is not well formed rather than failing the release over it."""

    def items(key: str) -> list[dict[str, Any]]:
        raw = config.get(key)
        return [r for r in raw if isinstance(r, dict)] if isinstance(raw, list) else []

    def path(value: Any) -> str | None:
        return value if isinstance(value, str) and value.startswith("/") else None

    headers = tuple(
        HeaderRule(
            source=src,
            headers=tuple(
                (str(k), str(v)) for k, v in (r.get("headers") or {}).items() if isinstance(v, str)
            ),
        )
        for r in items("headers")
        if (src := path(r.get("source"))) and isinstance(r.get("headers"), dict)
    )
    rewrites = tuple(
        Rewrite(source=src, destination=dst)
        for r in items("rewrites")
        if (src := path(r.get("source"))) and (dst := path(r.get("destination")))
    )
    redirects = tuple(
        Redirect(source=src, destination=dst, status_code=int(r.get("status_code") or 308))
        for r in items("redirects")
        if (src := path(r.get("source")))
        and isinstance(dst := r.get("destination"), str)
        and (dst.startswith("/") or dst.startswith("https://"))
        and int(r.get("status_code") or 308) in (301, 302, 307, 308)
    )
    return SiteRules(headers=headers, rewrites=rewrites, redirects=redirects)
