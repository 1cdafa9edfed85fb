"""Who is calling: the authenticated identity (organization, user or API key, role, scopes)
every use case of every domain is authorized against."""

from __future__ import annotations

from dataclasses import dataclass, field
from uuid import UUID

from forgeline.statuses.accounts import ActorType


@dataclass(frozen=True)
class Principal:
    """Who is calling, on behalf of which organization, with which effective scopes."""

    organization_id: UUID
    user_id: UUID | None
    api_key_id: UUID | None
    role: str
    scopes: frozenset[str] = field(default_factory=frozenset)
    session_id: UUID | None = None

    @property
    def actor_type(self) -> ActorType:
        return ActorType.API_KEY if self.api_key_id is not None else ActorType.USER

    def has(self, scope: str) -> bool:
        return scope in self.scopes
