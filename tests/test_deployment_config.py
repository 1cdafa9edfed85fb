"""docker-compose.yml and the Dockerfile stay consistent with the settings names."""

from __future__ import annotations

from pathlib import Path

import yaml

from forgeline.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def _accepted_env_names() -> set[str]:
    names: set[str] = set()
    for field_name, field in Settings.model_fields.items():
        names.add(f"FORGELINE_{field_name.upper()}")
        alias = field.validation_alias
        for choice in getattr(alias, "choices", []):
            names.add(str(choice).upper())
    return names


# Read by the Docker SDK (docker.from_env) rather than Settings: the engines' TLS client settings.
DOCKER_CLIENT_ENV = {"DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH"}
# The reverse proxy provider's settings, read where deployments publish through Caddy.
PROXY_ENV = {"FORGELINE_PROXY_ADMIN_URL", "FORGELINE_APPS_DOMAIN"}


def test_compose_app_environment_names_are_settings() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    accepted = _accepted_env_names() | DOCKER_CLIENT_ENV | PROXY_ENV
    for service in ("api", "worker", "migrate", "build-host"):
        env = compose["services"][service]["environment"]
        unknown = sorted(set(env) - accepted)
        assert not unknown, f"{service}: not Settings names: {unknown}"


def test_compose_has_the_production_like_services() -> None:
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    for name in ("postgres", "temporal", "temporal-ui", "minio", "api", "worker", "build-host"):
        assert name in services
    assert services["worker"]["deploy"]["replicas"] >= 1
    assert "postgres" in str(services["temporal"]["environment"]["DB"])


def test_dockerfile_runs_as_non_root() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "\nUSER forgeline" in dockerfile
    assert "uv sync --frozen" in dockerfile
