"""GitHub App endpoints on the fake forge: installation tokens minted against a JWT signed with
the App's private key (verified with its public key, every mint counted), the repositories an
installation covers, and check runs (created and updated, kept in arrival order)."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.integrations.fake_forge import Failure, FakeForge

ACCESS_TOKENS = re.compile(r"^/app/installations/(\d+)/access_tokens$")
CHECK_RUNS = re.compile(r"^/repos/([^/]+)/([^/]+)/check-runs$")
CHECK_RUN = re.compile(r"^/repos/([^/]+)/([^/]+)/check-runs/(\d+)$")
COMMIT_CHECK_RUNS = re.compile(r"^/repos/([^/]+)/([^/]+)/commits/([0-9a-f]+)/check-runs(\?.*)?$")
INSTALLATION_REPOSITORIES = re.compile(r"^/installation/repositories(\?.*)?$")


def private_key_pem() -> tuple[str, Any]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return pem, key.public_key()


@dataclass
class CheckRun:
    id: int
    repository: str
    fields: dict[str, Any]
    updates: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class FakeGitHubApp:
    app_id: int
    public_key: Any
    installations: dict[int, list[str]] = field(default_factory=dict)
    # Installation ID -> tokens minted, in order.
    minted: dict[int, list[str]] = field(default_factory=dict)
    check_runs: dict[int, CheckRun] = field(default_factory=dict)
    # A GitHub user's token -> the installations that user administers.
    user_installations: dict[str, list[int]] = field(default_factory=dict)
    # Creations whose answer is lost (the run exists on the forge, the client sees a 502).
    lose_created: int = 0
    # Token -> what its request asked for (`repositories`, `permissions`; empty: everything).
    scopes: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Token requests scoped to repositories (a checkout's): their bodies, in arrival order, and
    # the failures the next ones get instead of a token.
    scoped_requests: list[dict[str, Any]] = field(default_factory=list)
    scoped_failures: list[Failure] = field(default_factory=list)

    def mints(self, installation_id: int) -> int:
        return len(self.minted.get(installation_id, []))

    def all_tokens(self) -> list[str]:
        return [t for tokens in self.minted.values() for t in tokens]

    def _installation_of(self, headers: dict[str, str]) -> int | None:
        auth = headers.get("authorization", "")
        token = auth.removeprefix("token ").removeprefix("Bearer ")
        for installation, tokens in self.minted.items():
            if token in tokens:
                return installation
        return None

    def route(self, method: str, path: str, headers: dict[str, str], body: Any) -> Failure | None:
        if (m := ACCESS_TOKENS.match(path)) and method == "POST":
            return self._mint(int(m.group(1)), headers, body if isinstance(body, dict) else {})
        if path.split("?", 1)[0] == "/user/installations" and method == "GET":
            token = headers.get("authorization", "").split(" ", 1)[-1]
            if token not in self.user_installations:
                return Failure(401, body={"message": "Bad credentials"})
            ids = self.user_installations[token]
            installs = [{"id": i} for i in ids]
            return Failure(200, body={"total_count": len(ids), "installations": installs})
        if INSTALLATION_REPOSITORIES.match(path) and method == "GET":
            installation = self._installation_of(headers)
            if installation is None:
                return Failure(401, body={"message": "Bad credentials"})
            repos = [{"full_name": n} for n in self.installations.get(installation, [])]
            return Failure(200, body={"total_count": len(repos), "repositories": repos})
        if (listed := COMMIT_CHECK_RUNS.match(path)) and method == "GET":
            if self._installation_of(headers) is None:
                return Failure(401, body={"message": "Bad credentials"})
            repository, sha = "/".join(listed.groups()[:2]), listed.group(3)
            runs = [
                {"id": r.id, **r.fields}
                for r in self.check_runs.values()
                if r.repository == repository and r.fields.get("head_sha") == sha
            ]
            return Failure(200, body={"total_count": len(runs), "check_runs": runs})
        many = CHECK_RUNS.match(path)
        one = CHECK_RUN.match(path)
        if many is None and one is None:
            return None
        installation = self._installation_of(headers)
        repository = "/".join((many or one).groups()[:2])  # type: ignore[union-attr]
        if installation is None or repository not in self.installations.get(installation, []):
            return Failure(403 if installation else 401, body={"message": "Not allowed"})
        fields = body if isinstance(body, dict) else {}
        if many is not None and method == "POST":
            run = CheckRun(max(self.check_runs, default=0) + 1, repository, dict(fields))
            self.check_runs[run.id] = run
            if self.lose_created > 0:
                self.lose_created -= 1
                return Failure(502, body={"message": "Bad Gateway"})
            return Failure(201, body={"id": run.id, **fields})
        if one is not None and method == "PATCH":
            found = self.check_runs.get(int(one.group(3)))
            if found is None or found.repository != repository:
                return Failure(404, body={"message": "Not Found"})
            found.updates.append(dict(fields))
            return Failure(200, body={"id": found.id, **found.fields, **fields})
        return Failure(422, body={"message": "Validation Failed"})

    def _mint(self, installation_id: int, headers: dict[str, str], body: dict[str, Any]) -> Failure:
        if "repositories" in body:
            self.scoped_requests.append(body)
            if self.scoped_failures:
                return self.scoped_failures.pop(0)
        token = headers.get("authorization", "").removeprefix("Bearer ")
        try:
            claims = jwt.decode(token, self.public_key, algorithms=["RS256"])
        except jwt.PyJWTError:
            return Failure(401, body={"message": "A JSON web token could not be decoded"})
        if str(claims.get("iss")) != str(self.app_id):
            return Failure(401, body={"message": "Wrong issuer"})
        if installation_id not in self.installations:
            return Failure(404, body={"message": "Not Found"})
        covered = {n.split("/", 1)[-1] for n in self.installations[installation_id]}
        if not set(body.get("repositories", [])) <= covered:
            return Failure(422, body={"message": "There is at least one repository not covered"})
        minted = "ghs_" + secrets.token_hex(18)
        self.minted.setdefault(installation_id, []).append(minted)
        self.scopes[minted] = body
        return Failure(
            201, body={"token": minted, "expires_at": "2099-01-01T00:00:00Z", "permissions": {}}
        )

    def sequence(self, check_run_id: int) -> list[tuple[str, str | None]]:
        """(status, conclusion) of the check run: its creation, then each update."""
        run = self.check_runs[check_run_id]
        return [(str(f.get("status")), f.get("conclusion")) for f in [run.fields, *run.updates]]


def install_app(forge: FakeForge, app_id: int = 4242) -> tuple[FakeGitHubApp, str]:
    """The App's endpoints on `forge`; returns the fake and the App's private key (PEM)."""
    pem, public = private_key_pem()
    app = FakeGitHubApp(app_id, public)
    forge.routes.append(app.route)
    return app, pem
