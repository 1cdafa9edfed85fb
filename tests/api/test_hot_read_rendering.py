"""The hot reads' rendering without a validation pass (api/projects/render.py `project_read`,
`environment_read`, api/pagination.py `json_page(to_model=...)`) answers byte for byte what the
validated models answer: secrets masked, config defaults filled in, nulls and timestamps alike,
and a hostile stored config (unknown keys, odd types) rendered as the validated path renders it
or refused as it refuses it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from api.pagination import Page, json_page
from api.projects import render
from api.projects.schemas import EnvironmentOut, ProjectOut
from forgeline.environment_variables import MASK

WHEN = datetime(2026, 12, 4, 12, 30, 5, 123456, tzinfo=UTC)


def project_row(config: Any, **over: Any) -> dict[str, Any]:
    row = {
        "id": uuid.uuid4(),
        "organization_id": uuid.uuid4(),
        "owner_user_id": None,
        "created_by_user_id": None,
        "name": "Site",
        "slug": "site",
        "description": None,
        "project_type": "static_site",
        "framework": "astro",
        "config": config,
        "status": "active",
        "archived_at": None,
        "created_at": WHEN,
        "updated_at": WHEN,
    }
    return {**row, **over}


def environment_row(config: Any) -> dict[str, Any]:
    return {
        "id": uuid.uuid4(),
        "project_id": uuid.uuid4(),
        "name": "production",
        "env_type": "production",
        "provider": "static",
        "config": config,
        "url": None,
        "is_protected": True,
        "required_approvals": 2,
        "auto_deploy": False,
        "preview_branch": None,
        "preview_pr_number": None,
        "expires_at": None,
        "status": "active",
        "created_at": WHEN,
        "updated_at": WHEN,
    }


SECRET_VARS = [
    {"name": "TOKEN", "secret": True, "value": "sealed:abc"},
    {"name": "MODE", "secret": False, "value": "prod"},
]
CONFIGS: list[Any] = [
    None,
    {},
    {"build_command": "npm run build", "environment_variables": SECRET_VARS},
    {"unknown_key": {"nested": [1, 2]}, "headers": [{"source": "/x", "headers": []}]},
]


@pytest.mark.parametrize("config", CONFIGS)
def test_a_project_renders_as_its_validated_model(config: Any) -> None:
    row = project_row(config)
    fast = render.project_read(row).model_dump_json()
    assert fast == render.project_out(row).model_dump_json()
    assert "sealed:abc" not in fast
    if config and config.get("environment_variables"):
        assert MASK in fast
    assert '"archived_at":null' in fast and '"root_directory":null' in fast


@pytest.mark.parametrize("config", [*CONFIGS, {"environment_variables": SECRET_VARS}])
def test_an_environment_renders_as_its_validated_model(config: Any) -> None:
    row = environment_row(config)
    fast = render.environment_read(row).model_dump_json()
    assert fast == render.environment_out(row).model_dump_json()
    assert "sealed:abc" not in fast


def test_a_page_renders_as_the_validated_page() -> None:
    rows = [project_row(c, created_at=WHEN.replace(second=i)) for i, c in enumerate(CONFIGS)]
    for limit in (2, 10):
        fast = json_page(
            rows, limit=limit, to_model=render.project_read, page_model=Page[ProjectOut]
        )
        slow = json_page(
            rows, limit=limit, to_data=render.project_data, page_model=Page[ProjectOut]
        )
        assert fast.body == slow.body
    env_rows = [environment_row(c) for c in CONFIGS]
    fast = json_page(
        env_rows, limit=3, to_model=render.environment_read, page_model=Page[EnvironmentOut]
    )
    slow = json_page(
        env_rows, limit=3, to_data=render.environment_data, page_model=Page[EnvironmentOut]
    )
    assert fast.body == slow.body


def test_a_stored_config_the_model_refuses_is_refused_on_the_fast_path_too() -> None:
    hostile = {"build_command": ["not", "a", "string"], "headers": "nope"}
    with pytest.raises(ValidationError):
        render.project_out(project_row(hostile))
    with pytest.raises(ValidationError):
        render.project_read(project_row(hostile))
