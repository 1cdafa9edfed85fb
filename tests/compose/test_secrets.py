"""The production stack's secrets: .env.example holds placeholders only, a missing secret stops
the stack with its name, no secret has a default, the build host holds no key, and the
operator UI needs its login settings."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from forgeline.settings import (
    BUILDS_TASK_QUEUE,
)
from tests.compose.support import (
    COMPOSE_TEXT,
    SECRET_NAME,
    env_of,
    example_variables,
    project,
    raw_services,
    render,
    required_variables,
)


def test_env_example_lists_every_required_variable_with_placeholders_only() -> None:
    example = example_variables()
    missing = required_variables() - set(example)
    assert not missing, f"required by docker-compose.yml but not in .env.example: {missing}"
    real = {k: v for k, v in example.items() if not re.fullmatch(r"<[^<>]+>|https://<[^<>]+>", v)}
    assert not real, f".env.example must hold placeholders only: {real}"


def test_every_missing_secret_stops_the_stack_with_its_name(
    compose_bin: str, env_values: dict[str, str], tmp_path: Path
) -> None:
    required = required_variables()
    assert {"FORGELINE_ENCRYPTION_KEYS", "FORGELINE_PAYLOAD_KEYS", "POSTGRES_PASSWORD"} <= required
    for name in sorted(required):
        absent = {k: v for k, v in env_values.items() if k != name}
        for case, broken in (("absent", absent), ("empty", {**env_values, name: ""})):
            directory = tmp_path / f"{name}-{case}"
            directory.mkdir()
            done = render(compose_bin, project(directory, broken))
            assert done.returncode != 0, f"stack renders without {name}"
            assert name in done.stderr


def test_no_secret_has_a_default() -> None:
    defaults = re.findall(r"\$\{([A-Z0-9_]+):?-", COMPOSE_TEXT)
    secret_defaults = [name for name in defaults if SECRET_NAME.search(name)]
    assert not secret_defaults, f"secrets with a default: {secret_defaults}"
    # A literal secret value in the file (not an interpolation) is a default too.
    for service_name, service in raw_services().items():
        for name, value in env_of(service).items():
            if SECRET_NAME.search(name):
                assert str(value).startswith("${"), f"{service_name}.{name} is written in the file"


def test_the_build_host_holds_no_key_and_writes_through_least_privilege(
    stack: dict[str, Any], env_values: dict[str, str]
) -> None:
    build_host = stack["services"]["build-host"]
    env = env_of(build_host)
    assert build_host["command"] == ["python", "worker.py", "--task-queue", BUILDS_TASK_QUEUE]
    for name in env:
        assert not re.search(r"ENCRYPTION|STRIPE|ANTHROPIC|POSTGRES_PASSWORD|MINIO_ROOT", name)
    assert not build_host.get("env_file"), "no env file reaches the build host"
    assert env["DATABASE_URL"].startswith("postgresql://forgeline_build:")
    assert env["AWS_ACCESS_KEY_ID"] == "forgeline-build"
    assert env["FORGELINE_BUILD_HOST"] == "true"
    # No value of a control-plane secret appears anywhere in the build host's definition, and
    # neither do the provider keys of providers.env.
    rendered = json.dumps(build_host)
    control_secrets = (
        "FORGELINE_ENCRYPTION_KEYS",
        "POSTGRES_PASSWORD",
        "FORGELINE_DB_PASSWORD",
        "TEMPORAL_DB_PASSWORD",
        "MINIO_ROOT_PASSWORD",
        "MINIO_APP_SECRET_KEY",
    )
    for name in control_secrets:
        assert env_values[name] not in rendered, f"the build host can read {name}"
    assert "anthropic-test-key" not in rendered and "sk_test_x" not in rendered
    # ... while the control plane gets what it needs.
    for name in ("api", "worker"):
        control_env = env_of(stack["services"][name])
        assert control_env["FORGELINE_ENCRYPTION_KEYS"] == env_values["FORGELINE_ENCRYPTION_KEYS"]
        assert control_env["ANTHROPIC_API_KEY"] == "anthropic-test-key"


def test_compose_refuses_the_operator_ui_without_its_login_settings(
    compose_bin: str, env_values: dict[str, str], tmp_path: Path
) -> None:
    directory = project(tmp_path, env_values)
    assert render(compose_bin, directory).returncode == 0
    done = render(compose_bin, directory, "--profile", "operator-ui")
    assert done.returncode != 0 and "temporal-ui.env" in done.stderr
