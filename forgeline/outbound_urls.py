"""Checks on URLs Forgeline sends notifications to (webhook endpoints, Slack incoming webhooks):
http(s) only, no credentials, and no host that resolves to an internal address under the same
rules as repository URLs (forgeline.url_safety). Loopback is allowed only where the caller says
so (development and tests), and plain http only to loopback."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from forgeline.errors import ValidationFailed
from forgeline.url_safety import MAX_URL_LENGTH, Resolver, UnsafeRepositoryUrl, blocked_reason
from forgeline.url_safety import system_resolver as _system_resolver

_HOSTNAME_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")


class UnsafeOutboundUrl(ValidationFailed, title="Unsafe URL", slug="unsafe-url"):
    """A URL notifications must not be sent to."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail, field="url")


@dataclass(frozen=True)
class OutboundTarget:
    """A checked URL and the addresses its host resolved to (connect to these, not the name)."""

    url: str
    scheme: str
    host: str
    port: int
    addresses: tuple[str, ...]


def _host_of(url: str) -> tuple[str, str, int, str | None]:
    if len(url) > MAX_URL_LENGTH:
        raise UnsafeOutboundUrl(f"the URL is longer than {MAX_URL_LENGTH} characters")
    if any(ch.isspace() or ord(ch) < 0x20 for ch in url):
        raise UnsafeOutboundUrl("the URL contains whitespace or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeOutboundUrl(f"malformed URL: {exc}") from exc
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http"):
        raise UnsafeOutboundUrl("the URL must be https://")
    if "@" in parts.netloc:
        raise UnsafeOutboundUrl("credentials in the URL are not allowed")
    raw = (parts.hostname or "").rstrip(".")
    if not raw:
        raise UnsafeOutboundUrl("the URL has no host")
    literal: str | None = None
    try:
        literal = str(ipaddress.ip_address(raw))
    except ValueError:
        labels = raw.split(".")
        if not all(_HOSTNAME_LABEL.match(label) for label in labels):
            raise UnsafeOutboundUrl("the host is not a valid hostname") from None
        # 2130706433, 0x7f.1, 127.1: numeric forms resolvers expand to addresses.
        if labels[-1].isdigit() or labels[-1].startswith("0x"):
            raise UnsafeOutboundUrl("a numeric host must be a dotted-quad IPv4 address") from None
    return scheme, raw, port or (443 if scheme == "https" else 80), literal


async def check_outbound_url(
    url: str, *, allow_loopback: bool, resolver: Resolver | None = None
) -> OutboundTarget:
    """Refuse the URL unless every address its host resolves to may be contacted. Called when
    the URL is stored and again right before each delivery (a DNS answer may have changed)."""
    scheme, host, port, literal = _host_of(url)
    addresses: Sequence[str]
    if literal is not None:
        addresses = [literal]
    else:
        try:
            addresses = await (resolver or _system_resolver)(host, port)
        except UnsafeRepositoryUrl as exc:
            raise UnsafeOutboundUrl(f"host {host!r} does not resolve") from exc
    if not addresses:
        raise UnsafeOutboundUrl(f"host {host!r} does not resolve")
    for address in addresses:
        reason = blocked_reason(address)
        loopback = ipaddress.ip_address(address.split("%", 1)[0]).is_loopback
        if reason and not (allow_loopback and loopback):
            raise UnsafeOutboundUrl(
                f"host {host!r} resolves to a {reason}; internal addresses are refused"
            )
        if scheme == "http" and not loopback:
            raise UnsafeOutboundUrl("the URL must be https:// (plain http only to loopback)")
    unique = tuple(dict.fromkeys(a.split("%", 1)[0] for a in addresses))
    return OutboundTarget(url=url, scheme=scheme, host=host, port=port, addresses=unique)
