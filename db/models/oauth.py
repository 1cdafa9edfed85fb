"""Forge sign-in: the pending authorization requests (state, PKCE verifier), each used once."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from db.base import Base
from db.models.columns import TZ_DATETIME, check_in, created_at_column

OAUTH_SIGN_IN_PROVIDERS = ("github", "gitlab")


class OAuthState(Base):
    """One authorization request: found by the SHA-256 of its state, deleted when its callback
    arrives (a second callback with the same state finds nothing)."""

    __tablename__ = "oauth_states"

    state_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    provider: Mapped[str] = mapped_column(String(20))
    code_verifier_encrypted: Mapped[str] = mapped_column(Text)
    # SHA-256 of the secret in the starting browser's cookie: the callback must present it.
    binding_hash: Mapped[str] = mapped_column(String(64))
    # Set when a signed-in user links the forge identity to their account.
    link_user_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE")
    )
    organization_slug: Mapped[str | None] = mapped_column(String(100))
    expires_at: Mapped[datetime] = mapped_column(TZ_DATETIME)
    created_at: Mapped[datetime] = created_at_column()

    __table_args__ = (check_in("provider", OAUTH_SIGN_IN_PROVIDERS),)
