"""Service containers an app's tests need (Postgres, MySQL/MariaDB, Redis, MongoDB), inferred
from its dependencies, its compose files and its .env example, with the variables its tests read
pointed at the service's hostname."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from core.agent.python_requirements import python_dependencies
from core.agent.repo_files import RepoFiles, join
from core.agent.service_urls import (
    Credentials,
    ServiceNeed,
    container_env,
    credentials_of_url,
    default_url,
    merged,
    safe_value,
    service_url,
    url_kind,
)
from forgeline.service_containers import service_of

# Client libraries that talk to a server of that kind (all ecosystems; names lower case).
CLIENT_LIBRARIES: dict[str, frozenset[str]] = {
    "postgres": frozenset({
        "psycopg", "psycopg2", "psycopg2-binary", "psycopg-binary", "psycopg-c", "asyncpg",
        "pg8000", "pg", "pg-promise", "postgres", "tokio-postgres", "github.com/lib/pq",
        "github.com/jackc/pgx", "github.com/jackc/pgx/v4", "github.com/jackc/pgx/v5",
        "org.postgresql:postgresql",
    }),
    "mysql": frozenset({
        "mysqlclient", "pymysql", "mysql-connector-python", "aiomysql", "asyncmy", "mysql",
        "mysql2", "mysql_async", "github.com/go-sql-driver/mysql", "com.mysql:mysql-connector-j",
        "mysql:mysql-connector-java",
    }),
    "redis": frozenset({
        "redis", "aioredis", "django-redis", "rq", "ioredis", "bull", "bullmq", "sidekiq",
        "resque", "predis/predis", "github.com/redis/go-redis/v9", "github.com/go-redis/redis/v8",
    }),
    "mongo": frozenset({
        "pymongo", "motor", "mongoengine", "beanie", "mongodb", "mongoose", "mongoid", "mongo",
        "go.mongodb.org/mongo-driver", "go.mongodb.org/mongo-driver/v2",
    }),
}  # fmt: skip
# Libraries that bring their own server for tests: no service container then.
SELF_HOSTED = {
    "mongo": frozenset({"mongodb-memory-server", "mongomock", "mongomock-motor"}),
    "redis": frozenset({"fakeredis", "ioredis-mock", "redis-mock"}),
    "postgres": frozenset({"pg-mem", "pglite", "@electric-sql/pglite"}),
    "mysql": frozenset(),
}
COMPOSE_FILES = (
    "docker-compose.yml", "docker-compose.yaml", "compose.yml", "compose.yaml",
    "docker-compose.test.yml", "docker-compose.ci.yml", "docker-compose.dev.yml",
)  # fmt: skip
ENV_EXAMPLES = (
    ".env.test", ".env.testing", ".env.ci", ".env.example", ".env.sample", ".env.dist",
    ".env.template", ".env.local.example",
)  # fmt: skip
MAX_CI_FILES = 20
MAX_ENV_LINES = 500
HOST_KEYS = re.compile(r"^(?P<prefix>[A-Z][A-Z0-9_]*?)_?HOST$")


@dataclass
class ServicePlan:
    """The service images a test stage runs beside it and the variables it sets."""

    images: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    evidence: list[str] = field(default_factory=list)


def _kind(repository: str) -> str:
    """MariaDB serves what a MySQL client expects."""
    return "mysql" if repository == "mariadb" else repository


# --- what the app depends on ---------------------------------------------------------------------


def dependency_names(files: RepoFiles, base: str) -> set[str]:
    """Package names of every manifest in the app directory, lower case."""
    names: set[str] = set()
    pkg = files.json(join(base, "package.json"))
    if pkg:
        for key in ("dependencies", "devDependencies", "optionalDependencies"):
            section = pkg.get(key)
            if isinstance(section, dict):
                names.update(str(k).lower() for k in section)
    if any(
        files.exists(join(base, m))
        for m in ("pyproject.toml", "requirements.txt", "setup.py", "Pipfile", "manage.py")
    ):
        names |= python_dependencies(files, base)[0]
    gemfile = files.text(join(base, "Gemfile")) or ""
    names.update(g.lower() for g in re.findall(r"^\s*gem\s+['\"]([^'\"]+)['\"]", gemfile, re.M))
    composer = files.json(join(base, "composer.json")) or {}
    for key in ("require", "require-dev"):
        section = composer.get(key)
        if isinstance(section, dict):
            names.update(str(k).lower() for k in section)
    go_mod = files.text(join(base, "go.mod")) or ""
    names.update(
        m.lower()
        for m in re.findall(r"^\s*(?:require\s+)?([a-z0-9.\-]+\.[a-z]+/\S+)\s+v", go_mod, re.M)
    )
    cargo = files.toml(join(base, "Cargo.toml")) or {}
    for key in ("dependencies", "dev-dependencies"):
        section = cargo.get(key)
        if isinstance(section, dict):
            names.update(str(k).lower() for k in section)
    for build_file in ("pom.xml", "build.gradle", "build.gradle.kts"):
        text = files.text(join(base, build_file)) or ""
        names.update(
            f"{g}:{a}".lower()
            for g, a in re.findall(
                r"<groupId>\s*([\w.\-]+)\s*</groupId>\s*<artifactId>\s*([\w.\-]+)\s*<", text
            )
        )
        names.update(
            m.lower() for m in re.findall(r"['\"]([\w.\-]+:[\w.\-]+)(?::[^'\"]*)?['\"]", text)
        )
    return names


# --- compose files and .env examples -------------------------------------------------------------


def _compose_services(files: RepoFiles, places: list[str]) -> list[tuple[str, str, dict[str, str]]]:
    """(image, file, environment) of each catalogued service a compose file runs."""
    found: list[tuple[str, str, dict[str, str]]] = []
    for place in places:
        for name in COMPOSE_FILES:
            rel = join(place, name)
            services = (files.yaml(rel) or {}).get("services")
            if not isinstance(services, dict):
                continue
            for spec in list(services.values())[:50]:
                if not isinstance(spec, dict) or not isinstance(spec.get("image"), str):
                    continue
                image = spec["image"].strip()
                if service_of(image) is None:
                    continue
                found.append((image, rel, _env_mapping(spec.get("environment"))))
    return found


def _env_mapping(env: Any) -> dict[str, str]:
    """A compose/CI environment (mapping or KEY=value list); keys without a value dropped."""
    if isinstance(env, list):
        env = dict(str(e).split("=", 1) for e in env[:200] if "=" in str(e))
    if not isinstance(env, dict):
        return {}
    return {str(k): str(v) for k, v in list(env.items())[:200] if isinstance(v, str | int)}


def _ci_services(
    files: RepoFiles,
) -> tuple[list[tuple[str, str, dict[str, str]]], dict[str, str], str | None]:
    """Services the repository's own CI runs beside its tests (GitHub Actions job services,
    GitLab CI services) and the variables it gives those jobs."""
    found: list[tuple[str, str, dict[str, str]]] = []
    env: dict[str, str] = {}
    source: str | None = None
    workflows = [
        f
        for f in files.walk()
        if f.startswith(".github/workflows/") and f.endswith((".yml", ".yaml"))
    ][:MAX_CI_FILES]
    for rel in workflows:
        jobs = (files.yaml(rel) or {}).get("jobs")
        for job in list(jobs.values())[:50] if isinstance(jobs, dict) else []:
            services = job.get("services") if isinstance(job, dict) else None
            if not isinstance(services, dict) or not services:
                continue
            for spec in list(services.values())[:10]:
                image = spec.get("image") if isinstance(spec, dict) else None
                if isinstance(image, str) and service_of(image.strip()) is not None:
                    found.append((image.strip(), rel, _env_mapping(spec.get("env"))))
            env.update(_env_mapping(job.get("env")))
            source = source or rel
    gitlab = files.yaml(".gitlab-ci.yml") or {}
    shared = _env_mapping(gitlab.get("variables"))
    for key, job in list(gitlab.items())[:100]:
        services = gitlab.get("services") if key == "services" else None
        if isinstance(job, dict):
            services = job.get("services")
        for spec in services[:10] if isinstance(services, list) else []:
            image = spec.get("name") if isinstance(spec, dict) else spec
            if isinstance(image, str) and service_of(image.strip()) is not None:
                variables = {
                    **shared,
                    **_env_mapping(job.get("variables") if isinstance(job, dict) else None),
                }
                found.append((image.strip(), ".gitlab-ci.yml", variables))
                env.update(variables)
                source = source or ".gitlab-ci.yml"
    return found, env, source


def _env_example(files: RepoFiles, places: list[str]) -> tuple[dict[str, str], str | None]:
    for place in places:
        for name in ENV_EXAMPLES:
            rel = join(place, name)
            text = files.text(rel)
            if text is None:
                continue
            values: dict[str, str] = {}
            for line in text.splitlines()[:MAX_ENV_LINES]:
                match = re.match(
                    r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]{0,80})\s*=\s*(.*)$", line
                )
                if match:
                    values[match.group(1)] = match.group(2).strip().strip("'\"")
            return values, rel
    return {}, None


# --- the plan ------------------------------------------------------------------------------------


HOST_PREFIXES = (
    ("redis", ("REDIS",)),
    ("mongo", ("MONGO",)),
    ("mysql", ("MYSQL", "MARIADB")),
    ("postgres", ("PG", "POSTGRES")),
)


def _host_kind(prefix: str, needs: dict[str, ServiceNeed]) -> str | None:
    """The service a `<PREFIX>_HOST` variable names: REDIS_HOST -> redis, DB_HOST -> the SQL one."""
    for kind, names in HOST_PREFIXES:
        if prefix.startswith(names) and kind in needs:
            return kind
    if prefix in ("DB", "DATABASE"):
        return next((k for k in ("postgres", "mysql") if k in needs), None)
    return None


def service_plan(files: RepoFiles, base: str) -> ServicePlan:
    """The services the app's tests need and the variables pointing them at the services."""
    places = list(dict.fromkeys([base or ".", "."]))
    deps = dependency_names(files, base)
    needs: dict[str, ServiceNeed] = {}
    catalogue = {s.repository: s for s in (service_of(img) for img in
                 ("postgres:16", "mysql:8.0", "redis:7", "mongo:7")) if s}  # fmt: skip

    def need(kind: str, image: str | None, why: str) -> ServiceNeed:
        if kind not in needs:
            chosen = image or catalogue[kind].default_image
            service = service_of(chosen) or catalogue[kind]
            needs[kind] = ServiceNeed(service, chosen)
        needs[kind].evidence.append(why)
        return needs[kind]

    ci_found, ci_env, ci_file = _ci_services(files)
    for image, rel, env in ci_found + _compose_services(files, places):
        service = service_of(image)
        assert service is not None
        kind = _kind(service.repository)
        tag_ok = re.match(r"^[a-z0-9./-]{1,100}:[A-Za-z0-9._-]{1,60}$", image)
        found = need(kind, image if tag_ok else None, f"{rel} runs {image[:80]}")
        prefix = {"postgres": "POSTGRES", "mysql": "MYSQL", "mariadb": "MARIADB"}.get(
            service.repository
        )
        if prefix and found.credentials.user is None:
            found.credentials = Credentials(
                safe_value(env.get(f"{prefix}_USER")),
                safe_value(env.get(f"{prefix}_PASSWORD") or env.get(f"{prefix}_ROOT_PASSWORD")),
                safe_value(env.get(f"{prefix}_DB") or env.get(f"{prefix}_DATABASE")),
            )
    example, example_file = _env_example(files, places)
    if ci_env:
        # What the repository's CI gives its tests beats an example for developers.
        example, example_file = {**example, **ci_env}, ci_file
    urls: dict[str, tuple[str, str]] = {}
    for key, value in example.items():
        found_kind = url_kind(value)
        if found_kind is None:
            continue
        found = need(found_kind, None, f"{example_file} {key}")
        urls[key] = (found_kind, value)
        found.credentials = merged(found.credentials, credentials_of_url(value))
    laravel = example.get("DB_CONNECTION", "").lower()
    if laravel in ("pgsql", "mysql", "mariadb"):
        kind = "postgres" if laravel == "pgsql" else "mysql"
        found = need(
            kind, "mariadb:11" if laravel == "mariadb" else None, f"{example_file} DB_CONNECTION"
        )
        if found.credentials.user is None:
            found.credentials = Credentials(
                safe_value(example.get("DB_USERNAME")), safe_value(example.get("DB_PASSWORD")),
                safe_value(example.get("DB_DATABASE")),
            )  # fmt: skip
    for kind, libraries in CLIENT_LIBRARIES.items():
        hits = sorted(deps & libraries)
        if hits and not deps & SELF_HOSTED[kind]:
            need(kind, None, f"dependency {hits[0]}")

    plan = ServicePlan()
    for kind in ("postgres", "mysql", "redis", "mongo"):
        if kind not in needs:
            continue
        found = needs[kind]
        plan.images.append(found.image)
        plan.env.update(container_env(found))
        plan.evidence.append(f"{found.host} service: " + ", ".join(found.evidence[:3]))
    by_kind = needs
    pointed: set[str] = set()  # services some variable already points the tests at
    for key, (kind, value) in urls.items():
        plan.env[key] = service_url(value, by_kind[kind])
        pointed.add(kind)
    for key, value in example.items():
        host = HOST_KEYS.match(key)
        if host and value in ("localhost", "127.0.0.1", "db", "database") and by_kind:
            prefix = host.group("prefix")
            host_kind = _host_kind(prefix, by_kind)
            if host_kind:
                plan.env[key] = by_kind[host_kind].host
                pointed.add(host_kind)
    for kind, found in by_kind.items():
        # No variable in an example: the conventional one, so the tests find the service.
        if kind not in pointed:
            key, url = default_url(found)
            plan.env.setdefault(key, service_url(url, found))
    return plan
