"""Project statuses. The member order is the order the database check constraint lists them in."""

from __future__ import annotations

from enum import StrEnum


class ProjectStatus(StrEnum):
    ACTIVE = "active"
    PAUSED = "paused"
    ARCHIVED = "archived"
    FAILED_SETUP = "failed_setup"


# Statuses a caller may set directly; archive/unarchive and failed_setup have their own paths.
SETTABLE_PROJECT_STATUSES: tuple[ProjectStatus, ...] = (ProjectStatus.ACTIVE, ProjectStatus.PAUSED)
