"""Response models of projects, repositories and environments, from ORM objects or Core rows
(secrets masked)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from api.projects.schemas import EnvironmentOut, ProjectOut, RepositoryOut
from core.projects.configs import environment_config_data, project_config_data
from core.projects.models import ProjectConfigOut
from db.models.projects import Environment, Project, Repository

_PROJECT_FIELDS = tuple(name for name in ProjectOut.model_fields if name != "config")
_ENVIRONMENT_FIELDS = tuple(name for name in EnvironmentOut.model_fields if name != "config")


def _row_data(
    row: Project | Environment | Mapping[str, Any],
    fields: tuple[str, ...],
    masked_config: Callable[[Any], dict[str, Any]],
) -> dict[str, Any]:
    """The response fields of an ORM object or a Core row, its config with secrets masked."""
    if isinstance(row, Mapping):
        data = {name: row[name] for name in fields}
        data["config"] = masked_config(row["config"])
    else:
        data = {name: getattr(row, name) for name in fields}
        data["config"] = masked_config(row.config)
    return data


def project_data(row: Project | Mapping[str, Any]) -> dict[str, Any]:
    """Response data of a project (secrets masked), from an ORM object or a Core row."""
    return _row_data(row, _PROJECT_FIELDS, project_config_data)


def project_out(row: Project | Mapping[str, Any]) -> ProjectOut:
    return ProjectOut.model_validate(project_data(row))


def project_read(row: Mapping[str, Any]) -> ProjectOut:
    """A hot read's project from its Core row: only the stored config is validated (defaults
    filled in, as project_out does); the columns, typed by the database, are taken as they
    are. Serialises exactly as project_out's model."""
    data = project_data(row)
    data["config"] = ProjectConfigOut.model_validate(data["config"])
    return ProjectOut.model_construct(**data)


def environment_read(row: Mapping[str, Any]) -> EnvironmentOut:
    """A hot read's environment from its Core row, without validating what the database typed
    (its config is a free-form mapping)."""
    return EnvironmentOut.model_construct(**environment_data(row))


def environment_data(row: Environment | Mapping[str, Any]) -> dict[str, Any]:
    return _row_data(row, _ENVIRONMENT_FIELDS, environment_config_data)


def environment_out(row: Environment | Mapping[str, Any]) -> EnvironmentOut:
    return EnvironmentOut.model_validate(environment_data(row))


def repository_out(repo: Repository) -> RepositoryOut:
    return RepositoryOut(
        id=repo.id,
        project_id=repo.project_id,
        provider=repo.provider,
        url=repo.url,
        default_branch=repo.default_branch,
        has_access_token=repo.access_token_encrypted is not None,
        last_commit_sha=repo.last_commit_sha,
        last_synced_at=repo.last_synced_at,
        created_at=repo.created_at,
        updated_at=repo.updated_at,
    )
