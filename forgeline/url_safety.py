"""Repository URL checks run before anything clones: allowed transports, no credentials, and
no host that resolves to an internal address (re-checked right before the clone)."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import re
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import SplitResult, urlsplit

from forgeline.errors import ValidationFailed

Resolver = Callable[[str, int], Awaitable[Sequence[str]]]
UrlKind = Literal["https", "ssh", "local"]

MAX_URL_LENGTH = 2048
# The one git transport a checked URL may use: nothing else decides which protocols a clone,
# its redirects or its submodules may reach.
ALLOWED_PROTOCOL: dict[UrlKind, str] = {"https": "https", "ssh": "ssh", "local": "file"}

# Cloud metadata endpoints that are not all covered by "not global" (fd00:ec2::254 is ULA, but
# Alibaba's 100.100.100.200 sits in shared address space and some clouds use odd ranges).
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",
        "169.254.170.2",
        "fd00:ec2::254",
        "100.100.100.200",
        "192.0.0.192",
    )
)
# NAT64 well-known prefix: the low 32 bits are an IPv4 address a gateway will reach for us.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")

# `<transport>::<address>` is git's remote-helper syntax (ext::, fd::, anything installed).
_REMOTE_HELPER = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*::")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
_SCP_LIKE = re.compile(r"^(?:(?P<user>[^@/:]+)@)?(?P<host>\[[^\]]+\]|[^:/\[\]]+):(?P<path>.*)$")
_HOSTNAME_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_SSH_USER = re.compile(r"^[A-Za-z0-9._][A-Za-z0-9._-]{0,63}$")
# Characters git, ssh or a shell could treat specially if a path ever reached one unquoted.
_BAD_PATH_CHARS = re.compile(r"[\s\x00-\x1f\x7f'\"`$;&|<>\\]")
_SSH_SCHEMES = {"ssh", "git+ssh", "ssh+git"}


class UnsafeRepositoryUrl(
    ValidationFailed, title="Unsafe repository URL", slug="unsafe-repository-url"
):
    """The URL is not one Forgeline will clone; never retried."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail, field="url")


@dataclass(frozen=True)
class ValidatedUrl:
    """A URL that passed every check; `addresses` are what the host resolved to at check time."""

    url: str
    kind: UrlKind
    host: str | None = None
    port: int | None = None
    path: str = ""
    username: str | None = None
    addresses: tuple[str, ...] = field(default=())

    @property
    def redacted(self) -> str:
        """Safe to log: the URL never carries credentials, so it is the URL itself."""
        return self.url


@dataclass(frozen=True)
class CloneTarget:
    """Everything `git clone` needs to reach exactly the address that was checked."""

    validated: ValidatedUrl
    git_config: tuple[str, ...]
    env: dict[str, str]

    def git_args(self) -> list[str]:
        args: list[str] = []
        for item in self.git_config:
            args += ["-c", item]
        return args


async def system_resolver(host: str, port: int) -> Sequence[str]:
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise UnsafeRepositoryUrl(f"host {host!r} does not resolve") from exc
    return [str(info[4][0]) for info in infos]


def blocked_reason(address: str) -> str | None:
    """Why an address must not be contacted, or None when it is a public unicast address."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return "not an IP address"
    if ip in METADATA_ADDRESSES:
        return "cloud metadata address"
    if isinstance(ip, ipaddress.IPv6Address):
        embedded: ipaddress.IPv4Address | None = ip.ipv4_mapped or ip.sixtofour
        if ip.teredo is not None:
            embedded = ip.teredo[1]
        if ip in _NAT64 or ip in _NAT64_LOCAL:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is None and int(ip) >> 32 == 0 and int(ip) > 1:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)  # deprecated ::a.b.c.d
        if embedded is not None:
            inner = blocked_reason(str(embedded))
            if inner:
                return f"IPv6 address embedding an IPv4 {inner} address"
    if ip.is_loopback:
        return "loopback address"
    if ip.is_unspecified:
        return "unspecified address"
    if ip.is_link_local:
        return "link-local address"
    if ip.is_multicast:
        return "multicast address"
    if ip.is_private:
        return "private address"
    if ip.is_reserved:
        return "reserved address"
    if not ip.is_global:
        return "non-public address"
    return None


def _check_hostname(raw: str) -> tuple[str, ipaddress.IPv4Address | ipaddress.IPv6Address | None]:
    """Return the lower-cased host and, for an IP literal, the address it denotes."""
    if not raw:
        raise UnsafeRepositoryUrl("the URL has no host")
    if raw.startswith("[") and raw.endswith("]"):
        try:
            ip6 = ipaddress.IPv6Address(raw[1:-1])
        except ValueError as exc:
            raise UnsafeRepositoryUrl("malformed IPv6 host") from exc
        return str(ip6), ip6
    host = raw.lower().rstrip(".")
    if host.startswith("-"):
        raise UnsafeRepositoryUrl("host must not start with '-'")
    try:
        host = host.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise UnsafeRepositoryUrl("host is not a valid hostname") from exc
    labels = host.split(".")
    if len(host) > 253 or not all(_HOSTNAME_LABEL.match(label) for label in labels):
        raise UnsafeRepositoryUrl("host is not a valid hostname")
    # A numeric last label is never a real TLD: it is an IPv4 literal, possibly written in
    # decimal (2130706433), octal (0177.0.0.1), hex (0x7f.1) or short (127.1) form that
    # resolvers expand to loopback. Only the canonical dotted quad is accepted.
    last = labels[-1]
    if last.isdigit() or last.startswith("0x"):
        try:
            ip4 = ipaddress.IPv4Address(host)
        except ValueError as exc:
            raise UnsafeRepositoryUrl("numeric host must be a dotted-quad IPv4 address") from exc
        return host, ip4
    return host, None


def _check_path(path: str) -> str:
    if _BAD_PATH_CHARS.search(path):
        raise UnsafeRepositoryUrl("repository path contains whitespace or shell metacharacters")
    stripped = path.lstrip("/")
    if not stripped:
        raise UnsafeRepositoryUrl("the URL has no repository path")
    if stripped.startswith("-") or "/-" in path:
        raise UnsafeRepositoryUrl("path segments must not start with '-'")
    if any(seg == ".." for seg in path.split("/")):
        raise UnsafeRepositoryUrl("path must not contain '..'")
    return path


def _parse_scheme_url(url: str, scheme: str) -> ValidatedUrl:
    try:
        parts: SplitResult = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeRepositoryUrl(f"malformed URL: {exc}") from exc
    if parts.query or parts.fragment:
        raise UnsafeRepositoryUrl("repository URL must not have a query or fragment")
    netloc = parts.netloc
    userinfo, _, hostport = netloc.rpartition("@")
    username: str | None = None
    if "@" in netloc:
        if scheme == "https" or ":" in userinfo:
            raise UnsafeRepositoryUrl(
                "credentials in the URL are not allowed; pass an access token instead"
            )
        if not _SSH_USER.match(userinfo):
            raise UnsafeRepositoryUrl("invalid ssh user name")
        username = userinfo
    host_raw = hostport
    if hostport.startswith("["):
        host_raw = hostport[: hostport.find("]") + 1]
    elif ":" in hostport:
        host_raw = hostport.split(":", 1)[0]
    host, _ip = _check_hostname(host_raw)
    if port is not None and not 0 < port < 65536:
        raise UnsafeRepositoryUrl("invalid port")
    path = _check_path(parts.path)
    kind: UrlKind = "https" if scheme == "https" else "ssh"
    canonical_host = f"[{host}]" if ":" in host else host
    user_part = f"{username}@" if username else ""
    port_part = f":{port}" if port else ""
    canonical = (
        f"{'https' if kind == 'https' else 'ssh'}://{user_part}{canonical_host}{port_part}{path}"
    )
    return ValidatedUrl(
        url=canonical, kind=kind, host=host, port=port, path=path, username=username
    )


def _parse_scp_like(url: str) -> ValidatedUrl | None:
    match = _SCP_LIKE.match(url)
    if match is None:
        return None
    user = match.group("user")
    if user is not None and not _SSH_USER.match(user):
        raise UnsafeRepositoryUrl("invalid ssh user name")
    host, _ip = _check_hostname(match.group("host"))
    path = _check_path(match.group("path"))
    canonical_host = f"[{host}]" if ":" in host else host
    user_part = f"{user}@" if user else ""
    return ValidatedUrl(
        url=f"{user_part}{canonical_host}:{path}",
        kind="ssh",
        host=host,
        port=None,
        path=path,
        username=user,
    )


def _validate_local(url: str, *, allow_local: bool) -> ValidatedUrl:
    if not allow_local:
        raise UnsafeRepositoryUrl(
            "local paths and file: URLs are disabled (settings.allow_local_repositories)"
        )
    raw = url[len("file://") :] if url.startswith("file://") else url
    if not raw.startswith("/"):
        raise UnsafeRepositoryUrl("a local repository must be an absolute path")
    if "\x00" in raw or "\n" in raw:
        raise UnsafeRepositoryUrl("invalid characters in path")
    path = Path(os.path.realpath(raw))
    if not path.is_dir():
        raise UnsafeRepositoryUrl("local repository path is not an existing directory")
    is_worktree = (path / ".git").exists()
    is_bare = (path / "HEAD").is_file() and (path / "objects").is_dir()
    if not (is_worktree or is_bare):
        raise UnsafeRepositoryUrl("local path is not a git repository")
    return ValidatedUrl(url=str(path), kind="local", path=str(path))


def parse_repository_url(url: str, *, allow_local: bool) -> ValidatedUrl:
    """Structural checks only (no DNS): transport, credentials, host syntax, path."""
    if not isinstance(url, str) or not url.strip():
        raise UnsafeRepositoryUrl("repository URL is empty")
    if len(url) > MAX_URL_LENGTH:
        raise UnsafeRepositoryUrl("repository URL is too long")
    if url != url.strip() or any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
        raise UnsafeRepositoryUrl(
            "repository URL must not contain whitespace or control characters"
        )
    if url.startswith("-"):
        raise UnsafeRepositoryUrl("repository URL must not start with '-' (option injection)")
    if _REMOTE_HELPER.match(url):
        raise UnsafeRepositoryUrl("git remote-helper transports (ext::, fd::, ...) are not allowed")
    scheme_match = _SCHEME.match(url)
    if scheme_match:
        scheme = scheme_match.group(1).lower()
        if scheme == "file":
            return _validate_local(url, allow_local=allow_local)
        if scheme == "https":
            return _parse_scheme_url(url, "https")
        if scheme in _SSH_SCHEMES:
            return _parse_scheme_url(url, "ssh")
        # http is readable and rewritable in transit; git:// is unauthenticated and
        # unencrypted (GitHub turned it off in 2022), so both are refused.
        raise UnsafeRepositoryUrl(f"transport {scheme!r} is not allowed; use https or ssh")
    if url.lower().startswith("file:"):
        return _validate_local(url, allow_local=allow_local)
    if url.startswith(("/", ".", "~")):
        return _validate_local(url, allow_local=allow_local)
    scp = _parse_scp_like(url)
    if scp is not None:
        return scp
    raise UnsafeRepositoryUrl("repository URL must be https://, ssh:// or user@host:path")


async def validate_repository_url(
    url: str, *, allow_local: bool, resolver: Resolver | None = None
) -> ValidatedUrl:
    """Parse the URL and refuse it unless every address its host resolves to is public."""
    parsed = parse_repository_url(url, allow_local=allow_local)
    if parsed.kind == "local" or parsed.host is None:
        return parsed
    port = parsed.port or (443 if parsed.kind == "https" else 22)
    try:
        literal: str | None = str(ipaddress.ip_address(parsed.host))
    except ValueError:
        literal = None
    if literal is not None:
        addresses: Sequence[str] = [literal]
    else:
        addresses = await (resolver or system_resolver)(parsed.host, port)
    if not addresses:
        raise UnsafeRepositoryUrl(f"host {parsed.host!r} does not resolve")
    for address in addresses:
        reason = blocked_reason(address)
        if reason:
            raise UnsafeRepositoryUrl(
                f"host {parsed.host!r} resolves to a {reason}; internal addresses are refused"
            )
    unique = tuple(dict.fromkeys(a.split("%", 1)[0] for a in addresses))
    return ValidatedUrl(
        url=parsed.url,
        kind=parsed.kind,
        host=parsed.host,
        port=parsed.port,
        path=parsed.path,
        username=parsed.username,
        addresses=unique,
    )


async def resolve_for_clone(
    url: str, *, allow_local: bool, resolver: Resolver | None = None
) -> CloneTarget:
    """Call right before `git clone`: re-resolves (a DNS answer may have changed since the URL
    was stored) and pins git/ssh to the checked address, refusing redirects and other
    transports, so a rebinding resolver cannot swap in an internal host between check and use."""
    validated = await validate_repository_url(url, allow_local=allow_local, resolver=resolver)
    protocol = ALLOWED_PROTOCOL[validated.kind]
    # Every protocol is refused but the one this URL was checked for: git's own default would
    # let a redirect, a submodule or a fetch of promised objects reach file://, ext:: or ssh.
    config = [
        "protocol.allow=never",
        "protocol.ext.allow=never",
        f"protocol.{protocol}.allow=always",
        "http.followRedirects=false",
        "core.askPass=true",
    ]
    # GIT_ALLOW_PROTOCOL overrides every protocol.* setting, so it must say the same thing.
    env = {"GIT_TERMINAL_PROMPT": "0", "GIT_ALLOW_PROTOCOL": protocol}
    if validated.kind == "https":
        assert validated.host is not None
        port = validated.port or 443
        pinned = validated.addresses[0]
        pinned_literal = f"[{pinned}]" if ":" in pinned else pinned
        config.append(f"http.curloptResolve={validated.host}:{port}:{pinned_literal}")
    elif validated.kind == "ssh":
        # ssh would resolve the name again; HostName pins it while host-key checks still use
        # the original name via HostKeyAlias.
        env["GIT_SSH_COMMAND"] = (
            f"ssh -o BatchMode=yes -o HostName={validated.addresses[0]} "
            f"-o HostKeyAlias={validated.host}"
        )
    return CloneTarget(validated=validated, git_config=tuple(config), env=env)
