"""OAuth 2 sign-in with GitHub and GitLab through authlib: the authorization URL (state and a
PKCE S256 challenge), the code exchange with its verifier, and the forge account it signs in."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import httpx
from authlib.integrations.base_client.errors import OAuthError
from authlib.integrations.httpx_client import AsyncOAuth2Client

from infra.forges import REQUEST_TIMEOUT_SECONDS, ForgeRejected, ForgeUnavailable

OAuthProviderName = Literal["github", "gitlab"]


@dataclass(frozen=True)
class OAuthProvider:
    name: OAuthProviderName
    client_id: str
    client_secret: str
    authorize_url: str
    token_url: str
    user_url: str
    scope: str


@dataclass(frozen=True)
class ForgeIdentity:
    provider: OAuthProviderName
    account_id: str
    username: str
    email: str | None
    name: str | None
    access_token: str


def github_provider(
    web_url: str, api_url: str, client_id: str, client_secret: str
) -> OAuthProvider:
    web = web_url.rstrip("/")
    return OAuthProvider(
        "github",
        client_id,
        client_secret,
        f"{web}/login/oauth/authorize",
        f"{web}/login/oauth/access_token",
        f"{api_url.rstrip('/')}/user",
        "read:user user:email",
    )


def gitlab_provider(
    web_url: str, api_url: str, client_id: str, client_secret: str
) -> OAuthProvider:
    web = web_url.rstrip("/")
    return OAuthProvider(
        "gitlab",
        client_id,
        client_secret,
        f"{web}/oauth/authorize",
        f"{web}/oauth/token",
        f"{api_url.rstrip('/')}/user",
        "read_user",
    )


def _client(provider: OAuthProvider, redirect_uri: str) -> AsyncOAuth2Client:
    return AsyncOAuth2Client(
        client_id=provider.client_id,
        client_secret=provider.client_secret,
        scope=provider.scope,
        redirect_uri=redirect_uri,
        code_challenge_method="S256",
        timeout=REQUEST_TIMEOUT_SECONDS,
        trust_env=False,
        follow_redirects=False,
    )


def authorization_url(
    provider: OAuthProvider, redirect_uri: str, state: str, code_verifier: str
) -> str:
    url, _ = _client(provider, redirect_uri).create_authorization_url(
        provider.authorize_url, state=state, code_verifier=code_verifier
    )
    return str(url)


def _identity(provider: OAuthProvider, body: Any, token: str) -> ForgeIdentity:
    if not isinstance(body, dict) or not isinstance(body.get("id"), int):
        raise ForgeRejected(f"{provider.name}: the user answer has no account ID")
    username = body.get("login") if provider.name == "github" else body.get("username")
    email = body.get("email")
    name = body.get("name")
    return ForgeIdentity(
        provider=provider.name,
        account_id=str(body["id"]),
        username=str(username or body["id"])[:255],
        email=email[:320] if isinstance(email, str) and "@" in email else None,
        name=name[:255] if isinstance(name, str) else None,
        access_token=token,
    )


async def exchange_code(
    provider: OAuthProvider, redirect_uri: str, code: str, code_verifier: str
) -> ForgeIdentity:
    """The forge account behind `code`; a refused code or verifier is ForgeRejected."""
    async with _client(provider, redirect_uri) as client:
        try:
            token = await client.fetch_token(
                provider.token_url,
                code=code,
                code_verifier=code_verifier,
                headers={"Accept": "application/json"},
            )
            response = await client.get(provider.user_url)
        except OAuthError as exc:
            raise ForgeRejected(f"{provider.name} refused the code: {exc.error}") from exc
        except httpx.HTTPError as exc:
            raise ForgeUnavailable(f"{provider.name}: {type(exc).__name__}") from exc
    if response.status_code >= 500:
        raise ForgeUnavailable(f"{provider.name} user: {response.status_code}")
    if not response.is_success:
        raise ForgeRejected(
            f"{provider.name} user: {response.status_code}", status_code=response.status_code
        )
    return _identity(provider, response.json(), str(token.get("access_token", "")))
