"""Host paths a tenant names (a local repository, a deployment's `source_dir`) stay inside its own
organization's local root: another organization's root, the host's files, `..` and links out of
the root are refused with a 422, and production has no local root unless one is configured."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest

from forgeline.local_paths import LocalPathRefused, confine_local_path, organization_roots
from forgeline.settings import Settings
from tests.deployments.helpers import make_environment
from tests.factories import make_org


def git_repo(path: Path) -> Path:
    path.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    return path


def own_dir(settings: Settings, org_id: uuid.UUID) -> Path:
    return organization_roots(settings, org_id)[0] / uuid.uuid4().hex


async def test_local_repository_only_inside_the_organizations_root(
    api_client, session_maker, settings, tmp_path
):
    org, other = await make_org(session_maker), await make_org(session_maker)
    r = await api_client.post(
        "/v1/projects", json={"name": "Paths", "project_type": "spa"}, headers=org.headers
    )
    assert r.status_code == 201, r.text
    url = f"/v1/projects/{r.json()['id']}/repository"
    mine = git_repo(own_dir(settings, org.org_id))
    theirs = git_repo(own_dir(settings, other.org_id))
    outside = git_repo(tmp_path / "checkout")
    link = own_dir(settings, org.org_id)
    link.symlink_to(theirs)
    hostile = [
        str(theirs),  # another organization's root
        f"file://{theirs}",
        str(outside),  # anywhere else on the host
        str(link),  # a link in my root to theirs
        f"{mine}/../../{other.org_id}/{theirs.name}",  # `..` out of my root
    ]
    for path in hostile:
        r = await api_client.put(url, json={"provider": "local", "url": path}, headers=org.headers)
        assert r.status_code == 422, (path, r.text)
        assert "inside" in r.text or "not an existing" in r.text, (path, r.text)
    r = await api_client.put(url, json={"provider": "local", "url": str(mine)}, headers=org.headers)
    assert r.status_code == 201, r.text
    assert r.json()["url"] == str(mine.resolve())


async def test_source_dir_only_inside_the_organizations_root(
    api_client, session_maker, settings, tmp_path
):
    org, other = await make_org(session_maker), await make_org(session_maker)
    _, env_id = await make_environment(session_maker, org.org_id, provider="static")
    theirs = own_dir(settings, other.org_id)
    (theirs / "www").mkdir(parents=True)
    (theirs / "www" / "index.html").write_text("<h1>theirs</h1>")
    mine = own_dir(settings, org.org_id)
    mine.mkdir(parents=True)
    (mine / "up").symlink_to(theirs)
    for source_dir in [
        str(theirs),
        "/etc",
        str(settings.data_dir),  # the data dir (objects, workspaces, keys)
        str(settings.workspaces_dir),
        str(mine / "up"),
        f"{mine}/../{theirs.name}",
        "relative/path",
        "/tmp/\x00nul",
    ]:
        r = await api_client.post(
            f"/v1/environments/{env_id}/deployments",
            json={"version": "1", "source_dir": source_dir, "output_dir": "www"},
            headers=org.headers,
        )
        assert r.status_code == 422, (source_dir, r.text)
    r = await api_client.get(f"/v1/environments/{env_id}/deployments", headers=org.headers)
    assert r.status_code == 200 and r.json()["items"] == []  # nothing was written


def test_production_has_no_local_root_unless_configured(settings: Settings, tmp_path: Path):
    org = uuid.uuid4()
    production = settings.model_copy(update={"environment": "production"})
    with pytest.raises(LocalPathRefused, match="no local repository root"):
        confine_local_path(str(tmp_path), production, org)
    configured = production.model_copy(update={"local_repository_roots": [tmp_path / "roots"]})
    inside = tmp_path / "roots" / str(org) / "repo"
    inside.mkdir(parents=True)
    assert confine_local_path(str(inside), configured, org) == inside.resolve()
    with pytest.raises(LocalPathRefused, match="inside"):
        confine_local_path(str(inside), configured, uuid.uuid4())
    disabled = settings.model_copy(update={"allow_local_repositories": False})
    with pytest.raises(LocalPathRefused, match="disabled"):
        confine_local_path(str(inside), disabled, org)
