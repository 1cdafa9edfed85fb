"""Filter patterns with the glob semantics of GitHub Actions (branches, tags, paths):
`*` any characters but `/`, `**` any characters, `?` and `+` zero-or-one and one-or-more of the
preceding character, `[a-z0-9]` one character of a set or range, `\\` escapes, and a leading `!`
negates. In a list the last pattern that matches decides.

Matching simulates the pattern as an automaton (every state at once), so its time is linear in
the value's length whatever the pattern: no backtracking a hostile pattern could blow up.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

MAX_PATTERN_LENGTH = 255
_CLASS_BODY = re.compile(r"[A-Za-z0-9](?:-[A-Za-z0-9])?")

Quantifier = Literal["1", "?", "+", "*"]
# A state: (token index, whether the token has consumed at least one character).
State = tuple[int, bool]


class InvalidPattern(ValueError):
    pass


@dataclass(frozen=True)
class _Token:
    accepts: Callable[[str], bool]
    quantifier: Quantifier = "1"
    # `**/`: nothing, or any characters ending with a slash.
    optional_dirs: bool = False


def _any(_: str) -> bool:
    return True


def _not_slash(char: str) -> bool:
    return char != "/"


def _literal(expected: str) -> Callable[[str], bool]:
    return expected.__eq__


def _char_class(pattern: str, start: int) -> tuple[Callable[[str], bool], int]:
    end = pattern.find("]", start + 1)
    if end == -1:
        raise InvalidPattern(f"unclosed '[' in {pattern!r}")
    body = pattern[start + 1 : end]
    items = _CLASS_BODY.findall(body)
    if not body or "".join(items) != body:
        raise InvalidPattern(f"a character set holds letters, digits and ranges: {pattern!r}")
    ranges = [(item[0], item[-1]) for item in items]
    if any(low > high for low, high in ranges):
        raise InvalidPattern(f"a reversed range in {pattern!r}")
    return (lambda c: any(low <= c <= high for low, high in ranges)), end + 1


def _tokens(pattern: str) -> tuple[_Token, ...]:
    tokens: list[_Token] = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if pattern.startswith("**/", i):
            tokens.append(_Token(_any, optional_dirs=True))
            i += 3
        elif pattern.startswith("**", i):
            tokens.append(_Token(_any, "*"))
            i += 2
        elif char == "*":
            tokens.append(_Token(_not_slash, "*"))
            i += 1
        elif (
            char in "?+"
            and tokens
            and tokens[-1].quantifier == "1"
            and not (tokens[-1].optional_dirs)
        ):
            tokens[-1] = _Token(tokens[-1].accepts, "?" if char == "?" else "+")
            i += 1
        elif char == "[":
            accepts, i = _char_class(pattern, i)
            tokens.append(_Token(accepts))
        elif char == "\\":
            if i + 1 >= len(pattern):
                raise InvalidPattern(f"trailing '\\' in {pattern!r}")
            tokens.append(_Token(_literal(pattern[i + 1])))
            i += 2
        else:
            tokens.append(_Token(_literal(char)))
            i += 1
    return tuple(tokens)


@dataclass(frozen=True)
class Glob:
    tokens: tuple[_Token, ...]

    def _closure(self, states: set[State]) -> set[State]:
        pending = list(states)
        closed = set(states)
        while pending:
            index, inside = pending.pop()
            if index >= len(self.tokens):
                continue
            token = self.tokens[index]
            skip = (not inside and (token.quantifier in "?*" or token.optional_dirs)) or (
                inside and token.quantifier in "+*" and not token.optional_dirs
            )
            if skip and (index + 1, False) not in closed:
                closed.add((index + 1, False))
                pending.append((index + 1, False))
        return closed

    def fullmatch(self, value: str) -> bool:
        states = self._closure({(0, False)})
        for char in value:
            following: set[State] = set()
            for index, _ in states:
                if index >= len(self.tokens):
                    continue
                token = self.tokens[index]
                if token.optional_dirs:
                    following.add((index, True))
                    if char == "/":
                        following.add((index + 1, False))
                elif token.accepts(char):
                    if token.quantifier in "+*":
                        following.add((index, True))
                    else:
                        following.add((index + 1, False))
            if not following:
                return False
            states = self._closure(following)
        return (len(self.tokens), False) in states


@lru_cache(maxsize=4096)
def compile_pattern(pattern: str) -> tuple[bool, Glob]:
    """(negated, glob) of one filter pattern; InvalidPattern when it cannot be one."""
    if not pattern or len(pattern) > MAX_PATTERN_LENGTH:
        raise InvalidPattern(f"a pattern has 1 to {MAX_PATTERN_LENGTH} characters")
    if any(ord(c) < 0x20 or c == "\x7f" for c in pattern):
        raise InvalidPattern("control characters in a pattern")
    negated = pattern.startswith("!")
    body = pattern[1:] if negated else pattern
    if not body:
        raise InvalidPattern("'!' negates a pattern and cannot stand alone")
    return negated, Glob(_tokens(body))


def validate_patterns(patterns: Sequence[str]) -> list[str]:
    """The patterns, each compiled once; a list of only negations matches nothing, refused."""
    compiled = [compile_pattern(p) for p in patterns]
    if compiled and all(negated for negated, _ in compiled):
        raise InvalidPattern("a filter needs at least one pattern that is not negated")
    return list(patterns)


def matches(patterns: Sequence[str], value: str) -> bool:
    """Whether the filter list selects `value`: the last pattern that matches decides."""
    selected = False
    for pattern in patterns:
        negated, glob = compile_pattern(pattern)
        if glob.fullmatch(value):
            selected = not negated
    return selected
