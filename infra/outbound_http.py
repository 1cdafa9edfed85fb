"""POSTs to URLs outside Forgeline (webhook endpoints, Slack): the URL is checked again right
before sending and the connection goes to the address that was checked, never to a name resolved
a second time, so a rebinding DNS answer cannot swap in an internal host. Redirects are not
followed."""

from __future__ import annotations

import time
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import httpx

from forgeline.outbound_urls import OutboundTarget, check_outbound_url
from forgeline.url_safety import Resolver

EXCERPT_BYTES = 2048


@dataclass(frozen=True)
class PostResult:
    status_code: int | None
    excerpt: str | None
    error: str | None
    duration_ms: int

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def _pinned_url(target: OutboundTarget) -> str:
    parts = urlsplit(target.url)
    address = target.addresses[0]
    host = f"[{address}]" if ":" in address else address
    return urlunsplit((parts.scheme, f"{host}:{target.port}", parts.path or "/", parts.query, ""))


def _host_header(target: OutboundTarget) -> str:
    default = 443 if target.scheme == "https" else 80
    return target.host if target.port == default else f"{target.host}:{target.port}"


async def post_checked(
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    allow_loopback: bool,
    timeout_seconds: float,
    resolver: Resolver | None = None,
) -> PostResult:
    """One POST; never raises for the receiver's answer or a network error (see `error`).
    An unsafe URL raises forgeline.outbound_urls.UnsafeOutboundUrl."""
    target = await check_outbound_url(url, allow_loopback=allow_loopback, resolver=resolver)
    started = time.monotonic()
    extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
    try:
        async with (
            httpx.AsyncClient(
                timeout=timeout_seconds, follow_redirects=False, trust_env=False
            ) as client,
            client.stream(
                "POST",
                _pinned_url(target),
                content=body,
                headers={**headers, "Host": _host_header(target)},
                extensions=extensions,
            ) as response,
        ):
            # Only the start of the answer is kept; an endless body is not read to its end.
            excerpt = await _excerpt(response)
    except httpx.HTTPError as exc:
        elapsed = int((time.monotonic() - started) * 1000)
        return PostResult(None, None, f"{type(exc).__name__}: {exc}"[:500] or "error", elapsed)
    elapsed = int((time.monotonic() - started) * 1000)
    error = None if 200 <= response.status_code < 300 else f"HTTP {response.status_code}"
    return PostResult(response.status_code, excerpt, error, elapsed)


async def _excerpt(response: httpx.Response) -> str:
    kept = b""
    async for chunk in response.aiter_bytes():
        kept += chunk[: EXCERPT_BYTES - len(kept)]
        if len(kept) >= EXCERPT_BYTES:
            break
    return kept.decode("utf-8", "replace")
