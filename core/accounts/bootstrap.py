"""The bootstrap organization of a fresh install: created once, shown again on later runs.

The raw API key lives only in `<data_dir>/bootstrap.json` (mode 0600); the database holds its
hash. If that file is lost, a new key is issued for the same owner and the event is logged;
older keys are never revoked silently (an operator may have put them in CI).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.accounts import security
from core.accounts.context import utcnow
from core.accounts.keys import insert_api_key
from core.accounts.organizations import create_organization_with_owner
from core.accounts.scopes import ALL_SCOPES
from core.audit.service import write_audit
from core.billing.free_plan import ensure_free_subscription
from db.models.accounts import ApiKey, Organization, OrganizationMember, User
from forgeline.settings import Settings
from forgeline.statuses.accounts import OrgRole

logger = logging.getLogger("forgeline.bootstrap")

BOOTSTRAP_ORG_SLUG = "default"
BOOTSTRAP_ORG_NAME = "Default organization"
BOOTSTRAP_OWNER_EMAIL = "admin@forgeline.local"
BOOTSTRAP_FILE = "bootstrap.json"
# Serialises concurrent bootstraps (API, CLI and `make run` may race on a fresh install).
_ADVISORY_LOCK_KEY = 0x666C626F6F74  # "flboot"


@dataclass(frozen=True)
class BootstrapResult:
    org_slug: str
    org_id: uuid.UUID
    owner_email: str
    api_key: str
    created: bool
    owner_password: str | None = None


def bootstrap_path(settings: Settings) -> Path:
    return settings.data_dir / BOOTSTRAP_FILE


def _read_file(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        logger.warning("%s is unreadable; a new bootstrap API key will be issued", path)
        return {}
    return data if isinstance(data, dict) else {}


def _write_private(path: Path, data: dict[str, Any]) -> None:
    """Atomic write, created 0600 from the start (never world-readable for an instant)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle, indent=2)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


async def _key_still_valid(session: AsyncSession, raw: str, org_id: uuid.UUID) -> bool:
    if not security.api_key_well_formed(raw):
        return False
    key = (
        await session.execute(
            select(ApiKey).where(ApiKey.key_prefix == raw[: security.DISPLAY_PREFIX_LENGTH])
        )
    ).scalar_one_or_none()
    return (
        key is not None
        and key.organization_id == org_id
        and security.constant_time_equal(key.key_hash, security.sha256_hex(raw))
        and key.revoked_at is None
        and (key.expires_at is None or key.expires_at > utcnow())
    )


async def ensure_bootstrap(
    session_maker: async_sessionmaker[AsyncSession],
    settings: Settings,
    *,
    org_slug: str = BOOTSTRAP_ORG_SLUG,
    owner_email: str = BOOTSTRAP_OWNER_EMAIL,
) -> BootstrapResult:
    path = bootstrap_path(settings)
    saved = _read_file(path)
    password: str | None = None
    async with session_maker() as session, session.begin():
        await session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _ADVISORY_LOCK_KEY})
        org = (
            await session.execute(select(Organization).where(Organization.slug == org_slug))
        ).scalar_one_or_none()
        if org is not None:
            # Also on later runs: plans seeded after the first bootstrap, or a subscription that
            # ended without a Free successor, still leave the organization on Free.
            await ensure_free_subscription(session, org.id)
            raw = str(saved.get("api_key") or "")
            if saved.get("org_id") == str(org.id) and await _key_still_valid(session, raw, org.id):
                return BootstrapResult(
                    org_slug=org.slug,
                    org_id=org.id,
                    owner_email=str(saved.get("owner_email") or owner_email),
                    api_key=raw,
                    created=False,
                )
            owner = (
                await session.execute(
                    select(User)
                    .join(OrganizationMember, OrganizationMember.user_id == User.id)
                    .where(
                        OrganizationMember.organization_id == org.id,
                        OrganizationMember.role == OrgRole.OWNER,
                    )
                    .order_by(OrganizationMember.created_at)
                    .limit(1)
                )
            ).scalar_one()
            key, raw = await insert_api_key(
                session,
                organization_id=org.id,
                created_by_user_id=owner.id,
                name="bootstrap (reissued)",
                scopes=sorted(ALL_SCOPES),
            )
            logger.warning(
                "%s was missing or its key no longer works: issued a new bootstrap API key "
                "(%s...). Earlier keys stay active; revoke unused ones with "
                "DELETE /v1/api-keys/{id}.",
                path,
                key.key_prefix,
            )
            created, email = False, owner.email
        else:
            password = secrets.token_urlsafe(18)
            made = await create_organization_with_owner(
                session,
                organization_name=BOOTSTRAP_ORG_NAME,
                organization_slug=org_slug,
                email=owner_email,
                name="Administrator",
                password_hash=security.hash_password(password),
            )
            org, email = made.organization, made.user.email
            await ensure_free_subscription(session, org.id)
            key, raw = await insert_api_key(
                session,
                organization_id=org.id,
                created_by_user_id=made.user.id,
                name="bootstrap",
                scopes=sorted(ALL_SCOPES),
            )
            created = True
        await write_audit(
            session,
            None,
            None,
            "organization.bootstrapped" if created else "api_key.created",
            "api_key",
            key.id,
            new={"key_prefix": key.key_prefix, "scopes": key.scopes, "bootstrap": True},
            organization_id=org.id,
        )
    # Written after the commit: a key in the file always exists in the database.
    data = {
        "org_slug": org.slug,
        "org_id": str(org.id),
        "owner_email": email,
        "api_key": raw,
        # A password is only known on the run that created the owner; later runs keep it.
        **({"owner_password": saved["owner_password"]} if "owner_password" in saved else {}),
        **({"owner_password": password} if password else {}),
    }
    _write_private(path, data)
    return BootstrapResult(
        org_slug=org.slug,
        org_id=org.id,
        owner_email=email,
        api_key=raw,
        created=created,
        owner_password=password,
    )


async def ensure_bootstrap_with(settings: Settings) -> BootstrapResult:
    """Standalone form for the CLI: builds and disposes its own engine."""
    from db.session import create_engine, create_session_maker

    engine = create_engine(settings)
    try:
        return await ensure_bootstrap(create_session_maker(engine), settings)
    finally:
        await engine.dispose()
