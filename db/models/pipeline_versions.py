"""Versions of a pipeline definition: every change is a new immutable row with its author and
the whole document it produced (Forgeline's pipeline format, canonical form)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from db.base import Base, UUIDPrimaryKey
from db.models.columns import check_in, created_at_column

PIPELINE_CHANGES = ("create", "update", "rename", "regenerate", "archive", "repair")
PIPELINE_SOURCES = ("stored", "repository")


class PipelineVersion(UUIDPrimaryKey, Base):
    __tablename__ = "pipeline_versions"

    pipeline_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("pipelines.id", ondelete="CASCADE"))
    organization_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE")
    )
    version: Mapped[int] = mapped_column(Integer)
    change: Mapped[str] = mapped_column(String(20))
    author_user_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL")
    )
    author_api_key_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("api_keys.id", ondelete="SET NULL")
    )
    # The agent task that produced it (generate, regenerate).
    agent_task_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("agent_tasks.id", ondelete="SET NULL")
    )
    spec: Mapped[dict[str, Any]] = mapped_column(JSONB)
    # What running this version showed (a verification run): verified, run, failing stage.
    verification: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    created_at: Mapped[datetime] = created_at_column()

    __table_args__ = (
        UniqueConstraint("pipeline_id", "version"),
        check_in("change", PIPELINE_CHANGES),
        CheckConstraint("version >= 1", name="version_positive"),
    )
