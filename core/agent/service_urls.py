"""How a test stage reaches a service container: the service's credentials, the variables the
container is started with, and a repository's connection URL pointed at the service's hostname
(only plain values reach a generated variable: no shell or CI-expression syntax)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import quote, unquote, urlsplit

from forgeline.service_containers import ServiceContainer

URL_SCHEMES = {
    "postgres": "postgres", "postgresql": "postgres", "postgis": "postgres", "mysql": "mysql",
    "mysql2": "mysql", "mariadb": "mysql", "redis": "redis", "rediss": "redis", "mongodb": "mongo",
}  # fmt: skip
DEFAULT_DATABASE = "test"
DEFAULT_USERS = {"postgres": "postgres", "mysql": "root", "mariadb": "root"}
# What may reach a generated variable: no shell or CI-expression syntax from the repository.
_SAFE = re.compile(r"^[A-Za-z0-9._~-]{1,63}$")
_SAFE_QUERY = re.compile(r"^[A-Za-z0-9._~=&%-]{0,200}$")


@dataclass
class Credentials:
    user: str | None = None
    password: str | None = None
    database: str | None = None


@dataclass
class ServiceNeed:
    service: ServiceContainer
    image: str
    evidence: list[str] = field(default_factory=list)
    credentials: Credentials = field(default_factory=Credentials)

    @property
    def host(self) -> str:
        return self.service.repository


def safe_value(value: str | None) -> str | None:
    return value if value is not None and _SAFE.match(value) else None


def url_kind(value: str) -> str | None:
    scheme = value.split("://", 1)[0].lower() if "://" in value else ""
    return URL_SCHEMES.get(scheme.split("+", 1)[0])


def credentials_of_url(value: str) -> Credentials:
    try:
        parts = urlsplit(value)
        user, password = parts.username, parts.password
    except ValueError:
        return Credentials()
    database = parts.path.lstrip("/").split("/", 1)[0] or None
    return Credentials(
        safe_value(unquote(user)) if user else None,
        safe_value(unquote(password)) if password else None,
        safe_value(database),
    )


def merged(known: Credentials, more: Credentials) -> Credentials:
    """What the container already says, its gaps filled from a URL that uses it."""
    return Credentials(
        known.user or more.user,
        known.password or more.password if known.user in (None, more.user) else known.password,
        known.database or more.database,
    )


def service_url(value: str, need: ServiceNeed) -> str:
    """The example's URL pointed at the service: its scheme and query kept, host and port the
    service's, credentials and database the container's."""
    try:
        parts = urlsplit(value)
    except ValueError:
        parts = urlsplit(default_url(need)[1])
    creds = need.credentials
    auth = ""
    # The user the container creates when the example named none.
    user = creds.user or DEFAULT_USERS.get(need.service.repository)
    if user:
        auth = quote(user, safe="")
        if creds.password:
            auth += ":" + quote(creds.password, safe="")
        auth += "@"
    scheme = (
        parts.scheme if re.match(r"^[a-z0-9+]{1,30}$", parts.scheme) else need.service.repository
    )
    if need.service.repository == "redis":
        path = parts.path if re.fullmatch(r"/\d{1,2}", parts.path) else "/0"
    else:
        path = f"/{creds.database or DEFAULT_DATABASE}"
    query = f"?{parts.query}" if parts.query and _SAFE_QUERY.match(parts.query) else ""
    return f"{scheme}://{auth}{need.host}:{need.service.port}{path}{query}"


def container_env(need: ServiceNeed) -> dict[str, str]:
    creds = need.credentials
    repo = need.service.repository
    if repo == "postgres":
        env = {
            "POSTGRES_USER": creds.user or "postgres",
            "POSTGRES_DB": creds.database or DEFAULT_DATABASE,
        }
        if creds.password:
            env["POSTGRES_PASSWORD"] = creds.password
        else:
            env["POSTGRES_HOST_AUTH_METHOD"] = "trust"
        return env
    if repo in ("mysql", "mariadb"):
        prefix = "MARIADB" if repo == "mariadb" else "MYSQL"
        env = {f"{prefix}_DATABASE": creds.database or DEFAULT_DATABASE}
        if creds.user and creds.user != "root":
            env[f"{prefix}_USER"] = creds.user
            env[f"{prefix}_PASSWORD"] = creds.password or "password"
            env[f"{prefix}_ROOT_PASSWORD"] = creds.password or "password"
        elif creds.password:
            env[f"{prefix}_ROOT_PASSWORD"] = creds.password
        else:
            env[f"{prefix}_ALLOW_EMPTY_{'ROOT_' if repo == 'mariadb' else ''}PASSWORD"] = "yes"
        return env
    return {}


def default_url(need: ServiceNeed) -> tuple[str, str]:
    repo = need.service.repository
    if repo == "postgres":
        return "DATABASE_URL", f"postgresql://{need.host}:5432/x"
    if repo in ("mysql", "mariadb"):
        return "DATABASE_URL", f"mysql://{need.host}:3306/x"
    if repo == "redis":
        return "REDIS_URL", f"redis://{need.host}:6379/0"
    return "MONGODB_URI", f"mongodb://{need.host}:27017/x"
