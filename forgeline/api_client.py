"""A small synchronous client for the Forgeline HTTP API (used by the CLI and scripts): JSON
calls with problem details turned into one-line errors, text downloads, and server-sent event
streams that resume after a dropped connection."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx

# A followed stream reconnects this many times in a row without receiving anything new.
STREAM_RECONNECTS = 5
STREAM_BACKOFF_SECONDS = 0.5


class ApiError(Exception):
    """A problem+json answer (or a transport failure) turned into one readable message."""

    def __init__(self, status: int, detail: str, errors: list[dict[str, Any]] | None = None):
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.errors = errors or []

    def __str__(self) -> str:
        head = f"HTTP {self.status}: {self.detail}" if self.status else self.detail
        fields = []
        for error in self.errors:
            # Request validation names a `loc`; a document's schema errors name their `path`.
            location = str(error.get("path") or ".".join(str(p) for p in error.get("loc", [])))
            fields.append(f"{location}: {error.get('msg') or error.get('message', '')}")
        text = "; ".join([head, *fields])
        # One line whatever the server sent: no line breaks, no control characters.
        return "".join(ch if ch.isprintable() else " " for ch in text)


@dataclass(frozen=True)
class YamlDocument:
    """A YAML answer and its ETag (the version it is, for If-Match)."""

    text: str
    etag: str | None
    # Where a created pipeline lives (`/v1/pipelines/<id>`).
    location: str | None = None


@dataclass(frozen=True)
class ServerEvent:
    """One server-sent event: its type (`message` when unnamed), data and ID."""

    event: str
    data: str
    id: str | None


def _problem(response: httpx.Response) -> ApiError:
    try:
        problem = response.json()
    except ValueError:
        problem = None
    if not isinstance(problem, dict):
        text = response.text[:300].strip() or response.reason_phrase
        return ApiError(response.status_code, text)
    errors = problem.get("errors")
    return ApiError(
        response.status_code,
        str(problem.get("detail") or problem.get("title") or response.reason_phrase),
        [e for e in errors if isinstance(e, dict)] if isinstance(errors, list) else None,
    )


class ForgelineClient:
    def __init__(self, base_url: str, api_key: str | None, *, timeout: float = 30.0) -> None:
        headers = {"User-Agent": "forgeline-cli"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._http = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout)

    def __enter__(self) -> ForgelineClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.close()

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """The answer of a successful request; a transport failure or a problem answer is an
        ApiError."""
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ApiError(0, f"Cannot reach {self._http.base_url}: {exc}") from exc
        if response.status_code >= 400:
            raise _problem(response)
        return response

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._send(method, path, **kwargs)
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError as exc:
            raise ApiError(
                response.status_code,
                f"{self._http.base_url} answered {method} {path} with something that is not JSON",
            ) from exc

    def text(self, path: str, **params: Any) -> str:
        """A text answer (a log download, a YAML export)."""
        clean = {k: v for k, v in params.items() if v is not None}
        return self._send("GET", path, params=clean).text

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)

    def _yaml(self, method: str, path: str, **kwargs: Any) -> YamlDocument:
        response = self._send(method, path, **kwargs)
        headers = response.headers
        return YamlDocument(response.text, headers.get("etag"), headers.get("location"))

    def get_yaml(self, path: str) -> YamlDocument:
        """A pipeline as its YAML document, with the ETag naming its version."""
        return self._yaml("GET", path, headers={"Accept": "application/yaml"})

    def send_yaml(
        self, method: str, path: str, text: str, *, if_match: str | None = None
    ) -> YamlDocument:
        """PUT (or POST) a YAML document; `if_match` refuses (409) a pipeline changed since."""
        headers = {"Content-Type": "application/yaml", "Accept": "application/yaml"}
        if if_match:
            headers["If-Match"] = if_match
        return self._yaml(method, path, content=text.encode("utf-8"), headers=headers)

    def patch(self, path: str, body: dict[str, Any]) -> Any:
        return self.request("PATCH", path, json=body)

    def _events_once(
        self, path: str, params: dict[str, Any], last_event_id: str | None
    ) -> Iterator[ServerEvent]:
        headers = {"Accept": "text/event-stream"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = last_event_id
        timeout = httpx.Timeout(self._http.timeout.connect, read=None)
        with self._http.stream(
            "GET", path, params=params, headers=headers, timeout=timeout
        ) as response:
            if response.status_code >= 400:
                response.read()
                raise _problem(response)
            if not response.headers.get("content-type", "").startswith("text/event-stream"):
                raise ApiError(response.status_code, f"{path} did not answer with an event stream")
            fields: dict[str, str] = {}
            data: list[str] = []
            for line in response.iter_lines():
                if line == "":
                    if data or fields:
                        yield ServerEvent(
                            fields.get("event", "message"), "\n".join(data), fields.get("id")
                        )
                    fields, data = {}, []
                    continue
                if line.startswith(":"):
                    continue  # a comment (keep-alive ping)
                name, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if name == "data":
                    data.append(value)
                elif name in ("event", "id"):
                    fields[name] = value
            # An event the stream did not finish (no blank line) is dropped: the resume
            # from the last complete event's ID sends it again.

    def events(
        self,
        path: str,
        *,
        until: frozenset[str] = frozenset({"end"}),
        **params: Any,
    ) -> Iterator[ServerEvent]:
        """Follow an event stream to an event of a type in `until`, reconnecting with
        Last-Event-ID after a dropped connection so no event is repeated or lost. Gives up with
        an ApiError after STREAM_RECONNECTS attempts in a row that brought nothing new."""
        clean = {k: v for k, v in params.items() if v is not None}
        last_id: str | None = None
        failures = 0
        while True:
            progressed = False
            try:
                for event in self._events_once(path, clean, last_id):
                    progressed = True
                    failures = 0
                    if event.id is not None:
                        last_id = event.id
                    yield event
                    if event.event in until:
                        return
                reason = "the server closed the stream"
            except (httpx.TransportError, httpx.DecodingError) as exc:
                reason = f"the connection dropped ({type(exc).__name__})"
            if not progressed:
                failures += 1
                if failures > STREAM_RECONNECTS:
                    raise ApiError(0, f"Stream {path} lost: {reason}, {failures} times in a row")
            time.sleep(STREAM_BACKOFF_SECONDS * min(failures, 4))

    def get(self, path: str, **params: Any) -> Any:
        clean = {k: v for k, v in params.items() if v is not None}
        return self.request("GET", path, params=clean)

    def post(self, path: str, body: dict[str, Any]) -> Any:
        return self.request("POST", path, json=body)

    def put(self, path: str, body: dict[str, Any]) -> Any:
        return self.request("PUT", path, json=body)

    def paginate(
        self, path: str, *, limit: int = 100, most: int | None = None, **params: Any
    ) -> list[dict[str, Any]]:
        """Every item of a keyset-paginated list (or its first `most`), following next_cursor."""
        items: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            page = self.get(path, limit=limit, cursor=cursor, **params)
            items.extend(page["items"])
            cursor = page.get("next_cursor")
            if not cursor or (most is not None and len(items) >= most):
                return items[:most]
