"""A local fake of the GitHub and GitLab commit status APIs and of their pull request comments
(GitHub issue comments, GitLab merge request notes): a real HTTP server on loopback that records
every request it receives and can be told to fail the next ones (an outage, a rate limit with its
headers) before it accepts again."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.loopback_http import serving

GITHUB_STATUS = re.compile(r"^/repos/([^/]+)/([^/]+)/statuses/([0-9a-f]+)$")
GITLAB_STATUS = re.compile(r"^/api/v4/projects/([^/]+)/statuses/([0-9a-f]+)$")
GITHUB_COMMENTS = re.compile(r"^/repos/([^/]+)/([^/]+)/issues/(\d+)/comments(\?.*)?$")
GITHUB_COMMENT = re.compile(r"^/repos/([^/]+)/([^/]+)/issues/comments/(\d+)$")
GITLAB_NOTES = re.compile(r"^/api/v4/projects/([^/]+)/merge_requests/(\d+)/notes(\?.*)?$")
GITLAB_NOTE = re.compile(r"^/api/v4/projects/([^/]+)/merge_requests/(\d+)/notes/(\d+)$")


@dataclass
class Comment:
    id: int
    thread: str
    body: str
    edits: int = 0


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    answered: int


@dataclass
class Failure:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: dict[str, Any] | list[Any] = field(default_factory=lambda: {"message": "failure"})


@dataclass
class FakeForge:
    """Both forges' status endpoints; `statuses()` lists what was accepted, in order."""

    url: str = ""
    received: list[Received] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    # Failures of the comment endpoints only (statuses keep being accepted meanwhile).
    comment_failures: list[Failure] = field(default_factory=list)
    comments: dict[int, Comment] = field(default_factory=dict)
    # More endpoints (GitHub App, check runs, OAuth): each answers its paths, None for others.
    routes: list[Callable[[str, str, dict[str, str], Any], Failure | None]] = field(
        default_factory=list
    )
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def github_api_url(self) -> str:
        return self.url

    @property
    def gitlab_api_url(self) -> str:
        return f"{self.url}/api/v4"

    def fail_next(self, *failures: Failure) -> None:
        with self.lock:
            self.failures.extend(failures)

    def accepted(self, sha: str | None = None) -> list[Received]:
        """Requests answered with success, in arrival order; with `sha`, only that commit's.
        (Nothing of an earlier test reaches this forge: each test's integrations workflows run
        on a task queue of its own, see isolation.py.)"""
        with self.lock:
            return [
                r
                for r in self.received
                if r.answered < 300 and (sha is None or r.path.endswith(sha))
            ]

    def states(self, sha: str | None = None) -> list[tuple[str, str]]:
        """(context, state) of each accepted status, in arrival order."""
        out = []
        for r in self.accepted(sha):
            context = r.body.get("context") or r.body.get("name") or ""
            out.append((str(context), str(r.body.get("state"))))
        return out

    def fail_comments(self, *failures: Failure) -> None:
        with self.lock:
            self.comment_failures.extend(failures)

    def comments_on(self, thread: str) -> list[Comment]:
        """Comments of one pull request (`owner/name#3` or `group%2Fname!3`), oldest first."""
        with self.lock:
            return [c for c in self.comments.values() if c.thread == thread]

    def _comment(self, method: str, path: str, parsed: Any) -> Failure | None:
        """The comment endpoints' answer, or None when `path` is not one of them."""
        many = GITHUB_COMMENTS.match(path) or GITLAB_NOTES.match(path)
        one = GITHUB_COMMENT.match(path) or GITLAB_NOTE.match(path)
        if many is None and one is None:
            return None
        if self.comment_failures:
            return self.comment_failures.pop(0)
        body = parsed.get("body") if isinstance(parsed, dict) else None
        if many is not None:
            thread = _thread(path, many)
            if method == "GET":
                page = [_comment_body(c) for c in self.comments.values() if c.thread == thread]
                return Failure(200, body=page)
            if method == "POST" and isinstance(body, str):
                comment = Comment(max(self.comments, default=0) + 1, thread, body)
                self.comments[comment.id] = comment
                return Failure(201, body=_comment_body(comment))
            return Failure(422, body={"message": "Validation Failed"})
        assert one is not None
        found = self.comments.get(int(one.groups()[-1]))
        if found is None:
            return Failure(404, body={"message": "Not Found"})
        if method in ("PATCH", "PUT") and isinstance(body, str):
            found.body = body
            found.edits += 1
            return Failure(200, body=_comment_body(found))
        return Failure(422, body={"message": "Validation Failed"})

    def answer(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Failure:
        try:
            parsed = json.loads(body or b"{}")
        except ValueError:
            parsed = {"unparsed": body.decode(errors="replace")}
        with self.lock:
            authenticated = "authorization" in headers or "private-token" in headers
            outcome = self._comment(method, path, parsed) if authenticated else None
            if outcome is None:
                outcome = self.failures.pop(0) if self.failures else None
            for route in self.routes:
                if outcome is None:
                    outcome = route(method, path, headers, parsed)
            if outcome is None:
                known = GITHUB_STATUS.match(path) or GITLAB_STATUS.match(path)
                if method != "POST" or not known:
                    outcome = Failure(404, body={"message": "Not Found"})
                elif headers.get("authorization") is None and headers.get("private-token") is None:
                    outcome = Failure(401, body={"message": "Requires authentication"})
                else:
                    outcome = Failure(201, body=_status_body(parsed, path))
            kept = parsed if isinstance(parsed, dict) else {}
            self.received.append(Received(method, path, headers, kept, outcome.status))
        return outcome


def _thread(path: str, match: re.Match[str]) -> str:
    groups = match.groups()
    if path.startswith("/api/v4/"):
        return f"{groups[0]}!{groups[1]}"
    return f"{groups[0]}/{groups[1]}#{groups[2]}"


def _comment_body(comment: Comment) -> dict[str, Any]:
    return {"id": comment.id, "body": comment.body, "user": {"login": "forgeline"}}


def _status_body(request: dict[str, Any], path: str) -> dict[str, Any]:
    return {
        "url": f"https://api.example.test{path}",
        "avatar_url": None,
        "id": 1,
        "node_id": "SC_1",
        "state": request.get("state", "pending"),
        "description": request.get("description"),
        "target_url": request.get("target_url"),
        "context": request.get("context", request.get("name", "default")),
        "created_at": "2026-01-01T00:00:00Z",
        "updated_at": "2026-01-01T00:00:00Z",
        "creator": None,
    }


def _handler(forge: FakeForge) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self._answer("GET")

        def do_PATCH(self) -> None:
            self._answer("PATCH")

        def do_PUT(self) -> None:
            self._answer("PUT")

        def do_POST(self) -> None:
            self._answer("POST")

        def _answer(self, method: str) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length)
            headers = {k.lower(): v for k, v in self.headers.items()}
            outcome = forge.answer(method, self.path, headers, body)
            payload = json.dumps(outcome.body).encode()
            self.send_response(outcome.status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(payload)))
            for name, value in outcome.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@contextmanager
def running_fake_forge() -> Iterator[FakeForge]:
    forge = FakeForge()
    with serving(_handler(forge)) as forge.url:
        yield forge
