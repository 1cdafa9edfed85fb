"""Service containers a stage may run beside it (databases, caches): their hostnames, ports,
health checks, and which of the stage's variables configure them.

A stage lists services by image (`postgres:16`); the service is reached at its repository's
name (`postgres`), as GitLab CI names it and as the GitHub Actions export keys it. The
container's own settings are the stage's variables with the service's prefix
(POSTGRES_PASSWORD, MYSQL_DATABASE, ...): GitLab hands job variables to services, the GitHub
Actions export passes them explicitly.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ServiceContainer:
    repository: str  # postgres | mysql | mariadb | redis | mongo
    default_image: str
    port: int
    env_prefixes: tuple[str, ...]
    health_command: str


SERVICE_CONTAINERS: tuple[ServiceContainer, ...] = (
    ServiceContainer("postgres", "postgres:16", 5432, ("POSTGRES_",), "pg_isready"),
    ServiceContainer(
        "mysql", "mysql:8.0", 3306, ("MYSQL_",), "mysqladmin ping -h 127.0.0.1 --silent"
    ),
    ServiceContainer(
        "mariadb", "mariadb:11", 3306, ("MARIADB_", "MYSQL_"), "healthcheck.sh --connect"
    ),
    ServiceContainer("redis", "redis:7", 6379, (), "redis-cli ping"),
    ServiceContainer(
        "mongo",
        "mongo:7",
        27017,
        ("MONGO_INITDB_",),
        "mongosh --quiet --eval 'db.runCommand({ping: 1})'",
    ),
)
_BY_REPOSITORY = {s.repository: s for s in SERVICE_CONTAINERS}


def service_of(image: str) -> ServiceContainer | None:
    """The catalogued service an image runs (`postgres:15-alpine` -> postgres), else None."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name = name[: len(name) - len(last)] + last.split(":", 1)[0]
    return _BY_REPOSITORY.get(name.removeprefix("docker.io/").removeprefix("library/"))


def service_env(service: ServiceContainer, env: dict[str, str]) -> dict[str, str]:
    """The stage variables that configure this service's container."""
    return {k: v for k, v in env.items() if k.startswith(service.env_prefixes)}
