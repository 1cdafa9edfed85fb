"""API scopes, what each role may hold, and the implications between scopes."""

from __future__ import annotations

from collections.abc import Iterable

from forgeline.statuses.accounts import OrgRole, Scope

# Plain strings (the values of the Scope vocabulary): they are compared with, and shown as,
# the strings stored on API keys.
PROJECTS_READ: str = Scope.PROJECTS_READ.value
PROJECTS_WRITE: str = Scope.PROJECTS_WRITE.value
PIPELINES_READ: str = Scope.PIPELINES_READ.value
PIPELINES_WRITE: str = Scope.PIPELINES_WRITE.value
DEPLOYMENTS_TRIGGER: str = Scope.DEPLOYMENTS_TRIGGER.value
ENVIRONMENTS_READ: str = Scope.ENVIRONMENTS_READ.value
BILLING_READ: str = Scope.BILLING_READ.value
ADMIN: str = Scope.ADMIN.value

ALL_SCOPES: frozenset[str] = frozenset(scope.value for scope in Scope)
READ_SCOPES: frozenset[str] = frozenset(
    {PROJECTS_READ, PIPELINES_READ, ENVIRONMENTS_READ, BILLING_READ}
)
WRITE_SCOPES: frozenset[str] = ALL_SCOPES - READ_SCOPES

# A scope on the left grants the scopes on the right as well.
IMPLIES: dict[str, frozenset[str]] = {
    PROJECTS_WRITE: frozenset({PROJECTS_READ, ENVIRONMENTS_READ}),
    PIPELINES_WRITE: frozenset({PIPELINES_READ}),
    DEPLOYMENTS_TRIGGER: frozenset({PIPELINES_READ, ENVIRONMENTS_READ}),
    ADMIN: ALL_SCOPES,
}

ROLES: tuple[OrgRole, ...] = tuple(OrgRole)
ROLE_RANK: dict[str, int] = {
    OrgRole.VIEWER: 0,
    OrgRole.MEMBER: 1,
    OrgRole.ADMIN: 2,
    OrgRole.OWNER: 3,
}

# The most a principal of each role can ever hold, whatever its key says.
ROLE_SCOPES: dict[str, frozenset[str]] = {
    OrgRole.OWNER: ALL_SCOPES,
    OrgRole.ADMIN: ALL_SCOPES,
    OrgRole.MEMBER: ALL_SCOPES - {ADMIN, BILLING_READ},
    OrgRole.VIEWER: frozenset({PROJECTS_READ, PIPELINES_READ, ENVIRONMENTS_READ}),
}


def expand(scopes: Iterable[str]) -> frozenset[str]:
    granted = set()
    for scope in scopes:
        if scope in ALL_SCOPES:
            granted.add(scope)
            granted |= IMPLIES.get(scope, frozenset())
    return frozenset(granted)


def effective_scopes(role: str, requested: Iterable[str] | None) -> frozenset[str]:
    """Scopes a principal really has: its requested scopes (all, for a session) expanded, then
    capped by its role, so a viewer's key never writes."""
    cap = ROLE_SCOPES.get(role, frozenset())
    granted = ALL_SCOPES if requested is None else expand(requested)
    return granted & cap
