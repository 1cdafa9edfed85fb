"""OAuth endpoints of GitHub and GitLab on the fake forge: `authorize` plays the user approving
the request (a code bound to the PKCE challenge and redirect URI), the token endpoints accept a
code once with the matching verifier and client credentials, `/user` answers for the token."""

from __future__ import annotations

import base64
import hashlib
import secrets
import threading
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.integrations.fake_forge import Failure, FakeForge

CLIENT_ID = "forgeline-client"
CLIENT_SECRET = "client-secret-" + "c" * 20
TOKEN_PATHS = {"/login/oauth/access_token": "github", "/oauth/token": "gitlab"}
USER_PATHS = {"/user": "github", "/api/v4/user": "gitlab"}


@dataclass
class Grant:
    provider: str
    user: dict[str, Any]
    challenge: str
    redirect_uri: str
    used: bool = False


@dataclass
class FakeOAuth:
    grants: dict[str, Grant] = field(default_factory=dict)
    tokens: dict[str, dict[str, Any]] = field(default_factory=dict)
    exchanges: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def authorize(self, url: str, user: dict[str, Any]) -> tuple[str, str]:
        """The user approves `url` on the forge: (code, state) as the callback receives them."""
        query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
        assert query["code_challenge_method"] == "S256"
        assert query["client_id"] == CLIENT_ID and query["response_type"] == "code"
        provider = "gitlab" if urlsplit(url).path == "/oauth/authorize" else "github"
        code = secrets.token_hex(10)
        with self.lock:
            self.grants[code] = Grant(
                provider, user, query["code_challenge"], query["redirect_uri"]
            )
        return code, query["state"]

    def route(self, method: str, path: str, headers: dict[str, str], body: Any) -> Failure | None:
        bare = path.split("?", 1)[0]
        if method == "POST" and bare in TOKEN_PATHS:
            return self._token(TOKEN_PATHS[bare], headers, body)
        if method == "GET" and bare in USER_PATHS:
            token = headers.get("authorization", "").removeprefix("Bearer ")
            user = self.tokens.get(token)
            if user is None:
                return None  # not an OAuth token: the forge's other endpoints answer
            return Failure(200, body=user)
        return None

    def _token(self, provider: str, headers: dict[str, str], body: Any) -> Failure:
        raw = body.get("unparsed", "") if isinstance(body, dict) else ""
        form = {k: v[0] for k, v in parse_qs(raw).items()} if raw else dict(body or {})
        basic = headers.get("authorization", "").removeprefix("Basic ")
        client = base64.b64decode(basic).decode() if basic else ""
        refused = Failure(
            200 if provider == "github" else 400,
            body={"error": "bad_verification_code" if provider == "github" else "invalid_grant"},
        )
        if client != f"{CLIENT_ID}:{CLIENT_SECRET}":
            return Failure(401, body={"error": "invalid_client"})
        with self.lock:
            self.exchanges += 1
            grant = self.grants.get(str(form.get("code")))
            if grant is None or grant.used or grant.provider != provider:
                return refused
            grant.used = True  # a code is good once, whatever the verifier
            verifier = str(form.get("code_verifier", ""))
            digest = hashlib.sha256(verifier.encode()).digest()
            challenge = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
            if challenge != grant.challenge or form.get("redirect_uri") != grant.redirect_uri:
                return refused
            token = "gho_" + secrets.token_hex(16)
            self.tokens[token] = grant.user
        return Failure(200, body={"access_token": token, "token_type": "bearer", "scope": ""})


def install_oauth(forge: FakeForge) -> FakeOAuth:
    fake = FakeOAuth()
    forge.routes.insert(0, fake.route)
    return fake
