"""The one bounded loader for YAML, JSON and TOML that comes from outside (a repository, a pasted
pipeline): size and nesting depth capped, YAML anchors and aliases refused, one clear error.

A 320-byte YAML file of nested aliases expands to tens of megabytes in `yaml.safe_load`, and a
few hundred kilobytes of `[` exhaust the parsers' recursion: neither may reach a worker.
"""

from __future__ import annotations

import json
import os
import stat
import tomllib
from pathlib import Path
from typing import Any, Literal

import yaml

DocumentFormat = Literal["YAML", "JSON", "TOML"]
MAX_DOCUMENT_BYTES = 1_048_576
# Real manifests and CI files nest a dozen levels at most.
MAX_DOCUMENT_DEPTH = 64


class UnsafeDocument(ValueError):
    """The document is too large, nests too deeply, uses YAML aliases, or does not parse."""

    def __init__(self, document_format: DocumentFormat, reason: str) -> None:
        super().__init__(f"{document_format} {reason}")
        self.document_format = document_format
        self.reason = reason


def _check_size(text: str, document_format: DocumentFormat, max_bytes: int) -> None:
    # Characters first: encoding a huge string only to measure it would cost its size again.
    if len(text) > max_bytes or len(text.encode("utf-8", errors="replace")) > max_bytes:
        raise UnsafeDocument(document_format, f"document larger than {max_bytes} bytes")


def _check_depth(value: Any, document_format: DocumentFormat, max_depth: int) -> None:
    """Iterative, so the check itself cannot exhaust the stack it protects."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > max_depth:
            raise UnsafeDocument(document_format, f"document nests deeper than {max_depth} levels")
        stack.extend((child, depth + 1) for child in children)


def load_yaml(
    text: str, *, max_bytes: int = MAX_DOCUMENT_BYTES, max_depth: int = MAX_DOCUMENT_DEPTH
) -> Any:
    """Parse one untrusted YAML document with the safe loader, after an event pass (which does
    not recurse) has refused anchors, aliases and excessive nesting."""
    _check_size(text, "YAML", max_bytes)
    try:
        depth = 0
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                raise UnsafeDocument("YAML", "anchors and aliases are not accepted")
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > max_depth:
                    raise UnsafeDocument("YAML", f"document nests deeper than {max_depth} levels")
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UnsafeDocument("YAML", f"does not parse: {exc}") from exc


def load_json(
    text: str, *, max_bytes: int = MAX_DOCUMENT_BYTES, max_depth: int = MAX_DOCUMENT_DEPTH
) -> Any:
    _check_size(text, "JSON", max_bytes)
    try:
        value = json.loads(text)
    except RecursionError as exc:
        raise UnsafeDocument("JSON", f"document nests deeper than {max_depth} levels") from exc
    except ValueError as exc:  # JSONDecodeError, and integers past Python's digit limit
        raise UnsafeDocument("JSON", f"does not parse: {exc}") from exc
    _check_depth(value, "JSON", max_depth)
    return value


def load_toml(
    text: str, *, max_bytes: int = MAX_DOCUMENT_BYTES, max_depth: int = MAX_DOCUMENT_DEPTH
) -> dict[str, Any]:
    _check_size(text, "TOML", max_bytes)
    try:
        value = tomllib.loads(text)
    except RecursionError as exc:
        raise UnsafeDocument("TOML", f"document nests deeper than {max_depth} levels") from exc
    except (tomllib.TOMLDecodeError, ValueError) as exc:
        raise UnsafeDocument("TOML", f"does not parse: {exc}") from exc
    _check_depth(value, "TOML", max_depth)
    return value


def read_document(
    path: Path, document_format: DocumentFormat, *, max_bytes: int = MAX_DOCUMENT_BYTES
) -> str:
    """A repository file's text for one of the loaders above: at most `max_bytes` read (a larger
    file is refused, never read whole); a symbolic link, a FIFO or a device is not opened."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        raise UnsafeDocument(document_format, f"cannot be read: {exc.strerror}") from exc
    with os.fdopen(fd, "rb") as file:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UnsafeDocument(document_format, "is not a regular file")
        data = file.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise UnsafeDocument(document_format, f"document larger than {max_bytes} bytes")
    return data.decode("utf-8", errors="replace")
