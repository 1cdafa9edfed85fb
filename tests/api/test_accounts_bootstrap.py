"""Bootstrap: created once, shown again without duplicates, a lost file means a new key."""

from __future__ import annotations

import stat
import uuid

import pytest
from sqlalchemy import func, select

from core.accounts.bootstrap import bootstrap_path, ensure_bootstrap
from db.models.accounts import ApiKey, Organization
from forgeline.settings import Settings


@pytest.fixture
def boot_settings(settings: Settings, tmp_path) -> Settings:
    return settings.model_copy(update={"data_dir": tmp_path})


async def test_bootstrap_is_idempotent_and_reissues_when_file_lost(
    api_client, session_maker, boot_settings
):
    slug = f"boot-{uuid.uuid4().hex[:8]}"
    email = f"{slug}@example.com"
    first = await ensure_bootstrap(session_maker, boot_settings, org_slug=slug, owner_email=email)
    assert first.created and first.owner_password
    path = bootstrap_path(boot_settings)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert (
        await api_client.get("/v1/me", headers={"Authorization": f"Bearer {first.api_key}"})
    ).status_code == 200

    again = await ensure_bootstrap(session_maker, boot_settings, org_slug=slug, owner_email=email)
    assert not again.created and again.api_key == first.api_key and again.org_id == first.org_id
    async with session_maker() as session:
        orgs = await session.scalar(
            select(func.count()).select_from(Organization).where(Organization.slug == slug)
        )
        keys = await session.scalar(
            select(func.count()).select_from(ApiKey).where(ApiKey.organization_id == first.org_id)
        )
    assert orgs == 1 and keys == 1

    path.unlink()
    reissued = await ensure_bootstrap(
        session_maker, boot_settings, org_slug=slug, owner_email=email
    )
    assert not reissued.created and reissued.api_key != first.api_key
    assert reissued.org_id == first.org_id
    # The old key was not silently revoked; both work.
    for key in (first.api_key, reissued.api_key):
        response = await api_client.get("/v1/me", headers={"Authorization": f"Bearer {key}"})
        assert response.status_code == 200
