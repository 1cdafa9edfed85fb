"""The reverse proxy in front of Docker deployments: one route per environment (its stable host
names) and one per deployment (its own host, used by health checks before it takes traffic).

`RouteTable` is the interface; `CaddyRoutes` drives Caddy through its admin API. A swap is one
atomic replacement of the route list, guarded by Caddy's ETag (If-Match), so concurrent writers
never lose each other's changes and never leave two routes with one ID.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx

from db.app_hosts import is_hostname
from infra.site_rules import SiteRules, caddy_site_routes

__all__ = ["is_hostname"]

SERVER_NAME = "forgeline"
ENV_ROUTE_PREFIX = "fl-env-"
DEPLOYMENT_ROUTE_PREFIX = "fl-dep-"
LABEL_MAX = 40


class ProxyUnavailable(RuntimeError):
    """The proxy's admin API did not answer or refused the change (retryable)."""


def host_label(name: str) -> str:
    """A DNS label from any name: ASCII, lowercase, [a-z0-9-], no leading/trailing hyphen."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    label = re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")
    return label[:LABEL_MAX].strip("-") or "app"


def environment_hosts(
    environment: str, project: str, environment_id: str, apps_domain: str
) -> list[str]:
    """Candidate host names of an environment, preferred first; the later ones carry the
    environment ID for when a nicer one is already claimed by another environment."""
    env, proj = host_label(environment), host_label(project)
    compact = environment_id.replace("-", "")
    return [
        f"{env}.{proj}.{apps_domain}",
        f"{env}.{proj}-{compact[:8]}.{apps_domain}",
        f"{env}.{proj}-{compact}.{apps_domain}",
    ]


def deployment_host(deployment_id: str, apps_domain: str) -> str:
    """One label under the apps domain: never equal to an environment's (two labels) host."""
    return f"fl-{deployment_id.replace('-', '')}.{apps_domain}"


def public_url(host: str, http_port: int) -> str:
    return f"http://{host}" if http_port == 80 else f"http://{host}:{http_port}"


def proxy_http_base(admin_url: str, http_port: int) -> str:
    """Where the worker reaches the proxy's HTTP side: the admin API's host, the HTTP port."""
    host = urlsplit(admin_url).hostname or "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{http_port}"


# Response headers of a static site served by the proxy: its own origin, no sniffing.
SITE_RESPONSE_HEADERS: dict[str, list[str]] = {
    "X-Content-Type-Options": ["nosniff"],
    "Referrer-Policy": ["strict-origin-when-cross-origin"],
}


@dataclass(frozen=True)
class Route:
    id: str
    hosts: list[str]
    upstream: str  # host:port the proxy dials ("" for a static site)
    meta: dict[str, str] = field(default_factory=dict)
    # A static site: the directory the proxy's file server serves instead of dialling upstream.
    root: str | None = None
    # A static site's own headers, rewrites and redirects (applied before the file server).
    rules: SiteRules | None = None


class RouteTable(Protocol):
    """What the deployment activities need from a reverse proxy."""

    async def put(self, route: Route) -> None:
        """Create the route or atomically replace the one with the same ID."""

    async def get(self, route_id: str) -> Route | None: ...

    async def remove(self, route_ids: list[str]) -> None: ...

    async def routes(self, prefix: str = "") -> list[Route]: ...


def _fnv1a32(data: bytes) -> str:
    value = 0x811C9DC5
    for byte in data:
        value = ((value ^ byte) * 0x01000193) & 0xFFFFFFFF
    return f"{value:08x}"


class CaddyRoutes:
    """Routes of one Caddy HTTP server, edited through the admin API (`/config/...`)."""

    def __init__(
        self,
        admin_url: str,
        *,
        http_port: int,
        server: str = SERVER_NAME,
        timeout: float = 10.0,
        attempts: int = 20,
    ) -> None:
        self._admin = admin_url.rstrip("/")
        self._http_port = http_port
        self._server = server
        self._timeout = timeout
        self._attempts = attempts

    @property
    def _routes_path(self) -> str:
        return f"/config/apps/http/servers/{self._server}/routes"

    def server_config(self) -> dict[str, Any]:
        # No automatic HTTPS: app hosts are plain HTTP here (TLS belongs to the edge in front).
        return {
            "listen": [f":{self._http_port}"],
            "automatic_https": {"disable": True},
            "routes": [],
        }

    def _client(self) -> httpx.AsyncClient:
        # No keep-alive: each config load may close the admin API's idle connections.
        return httpx.AsyncClient(
            timeout=self._timeout, limits=httpx.Limits(max_keepalive_connections=0)
        )

    async def _request(
        self, http: httpx.AsyncClient, method: str, path: str, **kwargs: Any
    ) -> httpx.Response:
        try:
            return await http.request(method, self._admin + path, **kwargs)
        except httpx.HTTPError as exc:
            raise ProxyUnavailable(f"proxy admin API {self._admin}: {exc!r}") from exc

    async def _ensure_server(self, http: httpx.AsyncClient) -> None:
        """Create the missing part of apps/http/servers/<server> (a fresh or foreign Caddy)."""
        parts = ["apps", "http", "servers", self._server]
        nested: dict[str, Any] = self.server_config()
        for depth in range(len(parts), 0, -1):
            parent = "/config/" + "/".join(parts[: depth - 1])
            got = await self._request(http, "GET", parent)
            if got.status_code == 200 and got.content.strip() not in (b"null", b""):
                key = parts[depth - 1]
                put = await self._request(http, "PUT", f"{parent.rstrip('/')}/{key}", json=nested)
                # "already exists" means a concurrent writer created it: fine.
                if put.status_code >= 400 and "exist" not in put.text:
                    raise ProxyUnavailable(f"proxy refused the server config: {put.text}")
                return
            nested = {parts[depth - 1]: nested}
        put = await self._request(http, "POST", "/config/", json=nested)
        if put.status_code >= 400:
            raise ProxyUnavailable(f"proxy refused the server config: {put.text}")

    async def _read(self, http: httpx.AsyncClient) -> tuple[list[dict[str, Any]], str]:
        for _ in range(3):
            got = await self._request(http, "GET", self._routes_path)
            if got.status_code == 200 and got.content.strip() != b"null":
                etag = f'"{self._routes_path} {_fnv1a32(got.content)}"'
                routes = json.loads(got.content)
                return (routes if isinstance(routes, list) else []), etag
            if got.status_code >= 500 or got.content.strip() == b"null" or got.status_code == 404:
                await self._ensure_server(http)
                continue
            raise ProxyUnavailable(f"proxy answered {got.status_code}: {got.text}")
        raise ProxyUnavailable("proxy server config could not be created")

    async def _edit(self, change: Any) -> None:
        """Read the route list, apply `change`, write it back only if nobody wrote meanwhile."""
        async with self._client() as http:
            for attempt in range(self._attempts):
                routes, etag = await self._read(http)
                updated = change([dict(r) for r in routes])
                if updated == routes:
                    return
                try:
                    wrote = await self._request(
                        http,
                        "PATCH",
                        self._routes_path,
                        json=updated,
                        headers={"If-Match": etag},
                    )
                except ProxyUnavailable:
                    # Dropped while a concurrent change reloaded Caddy: read again, the
                    # comparison above tells whether this change landed.
                    if attempt + 1 == self._attempts:
                        raise
                    await asyncio.sleep(0.05 * (attempt + 1))
                    continue
                if wrote.status_code == 412:
                    continue
                if wrote.status_code >= 400:
                    raise ProxyUnavailable(f"proxy refused the routes: {wrote.text}")
                return
        raise ProxyUnavailable("proxy routes kept changing under a concurrent writer")

    @staticmethod
    def _to_caddy(route: Route) -> dict[str, Any]:
        if route.root is not None:
            serve: list[dict[str, Any]] = [
                {"handler": "headers", "response": {"set": SITE_RESPONSE_HEADERS}},
                {"handler": "file_server", "root": route.root},
            ]
            if route.rules:
                site = [*caddy_site_routes(route.rules, route.root), {"handle": serve}]
                serve = [{"handler": "subroute", "routes": site}]
            return {
                "@id": route.id,
                "match": [{"host": list(route.hosts)}],
                "handle": serve,
                "terminal": True,
            }
        return {
            "@id": route.id,
            "match": [{"host": list(route.hosts)}],
            "handle": [
                {
                    "handler": "reverse_proxy",
                    "upstreams": [{"dial": route.upstream}],
                    "headers": {"request": {"set": {"X-Forgeline-Route": [route.id]}}},
                }
            ],
            "terminal": True,
        }

    @staticmethod
    def _from_caddy(raw: dict[str, Any]) -> Route | None:
        try:
            hosts = raw["match"][0]["host"]
            root = _file_server_root(raw["handle"])
            if root is not None:
                return Route(id=str(raw["@id"]), hosts=list(hosts), upstream="", root=root)
            upstream = raw["handle"][0]["upstreams"][0]["dial"]
            return Route(id=str(raw["@id"]), hosts=list(hosts), upstream=str(upstream))
        except (KeyError, IndexError, TypeError, AttributeError):
            return None

    async def put(self, route: Route) -> None:
        claimed = set(route.hosts)
        wanted = self._to_caddy(route)

        def change(routes: list[dict[str, Any]]) -> list[dict[str, Any]]:
            out: list[dict[str, Any]] = []
            placed = False
            for raw in routes:
                if raw.get("@id") == route.id:
                    if not placed:
                        out.append(wanted)
                        placed = True
                    continue
                out.append(raw)
            if not placed:
                out.append(wanted)
            # A host belongs to one route: a stale route elsewhere must not shadow this one.
            for raw in out:
                if raw is wanted:
                    continue
                for matcher in raw.get("match") or []:
                    if isinstance(matcher, dict) and isinstance(matcher.get("host"), list):
                        matcher["host"] = [h for h in matcher["host"] if h not in claimed]
            return [r for r in out if r is wanted or _has_hosts(r)]

        await self._edit(change)

    async def get(self, route_id: str) -> Route | None:
        async with self._client() as http:
            routes, _ = await self._read(http)
        for raw in routes:
            if raw.get("@id") == route_id:
                return self._from_caddy(raw)
        return None

    async def routes(self, prefix: str = "") -> list[Route]:
        async with self._client() as http:
            routes, _ = await self._read(http)
        found = [self._from_caddy(r) for r in routes if str(r.get("@id", "")).startswith(prefix)]
        return [r for r in found if r is not None]

    async def remove(self, route_ids: list[str]) -> None:
        dropped = set(route_ids)
        await self._edit(lambda routes: [r for r in routes if r.get("@id") not in dropped])


def _file_server_root(handlers: list[dict[str, Any]]) -> str | None:
    """The root a route's file server serves, looking into subroutes (a site with rules)."""
    for handler in handlers:
        if handler.get("handler") == "file_server":
            return str(handler["root"])
        if handler.get("handler") == "subroute":
            for inner in handler.get("routes") or []:
                found = _file_server_root(inner.get("handle") or [])
                if found is not None:
                    return found
    return None


def _has_hosts(raw: dict[str, Any]) -> bool:
    matchers = raw.get("match")
    if not matchers:
        return True  # not a host route of ours: leave it alone
    return any(
        not isinstance(m, dict) or not isinstance(m.get("host"), list) or m["host"]
        for m in matchers
    )


def caddy_config(*, admin_listen: str, http_listen: str) -> dict[str, Any]:
    """The configuration the embedded stack and the tests start Caddy with."""
    return {
        "admin": {"listen": admin_listen},
        "apps": {
            "http": {
                "servers": {
                    SERVER_NAME: {
                        "listen": [http_listen],
                        "automatic_https": {"disable": True},
                        "routes": [],
                    }
                }
            }
        },
    }


def embedded_caddy_command(
    *, admin_url: str, http_host: str, http_port: int, state_dir: Path
) -> list[str] | None:
    """`caddy run` for the embedded stack (admin API on loopback only), or None without caddy."""
    binary = shutil.which("caddy")
    admin = urlsplit(admin_url)
    if binary is None or admin.hostname not in ("127.0.0.1", "localhost", "::1"):
        return None
    state_dir.mkdir(parents=True, exist_ok=True)
    config = state_dir / "caddy.json"
    config.write_text(
        json.dumps(
            caddy_config(
                admin_listen=f"127.0.0.1:{admin.port or 2019}",
                http_listen=f"{http_host}:{http_port}",
            )
        )
    )
    # --resume: routes survive a restart (Caddy's autosave under XDG_CONFIG_HOME=state_dir).
    return [binary, "run", "--config", str(config), "--resume"]
