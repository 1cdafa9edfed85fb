"""`packageManager` in package.json: a manager Forgeline knows is used, locked only by its own
lockfile; a value naming no known manager (garbage, a number, an object) is ignored and the
lockfile present decides, so a yarn.lock never gets `npm ci`."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.agent.analysis import analyze_repository
from core.agent.proposal import propose_pipeline
from tests.agent.corpus.sample import SampleRepo, package_json, write_repo

SCRIPTS = {"build": "vite build", "test": "vitest run"}
LOCKFILES = {
    "yarn": ("yarn.lock", "# yarn lockfile v1\n"),
    "pnpm": ("pnpm-lock.yaml", "lockfileVersion: '9.0'\n"),
    "npm": ("package-lock.json", '{"lockfileVersion": 3}\n'),
}


def _install(root: Path, lockfile: str | None, declared: object) -> str:
    files = {"package.json": package_json({"vite": "5.0.0"}, SCRIPTS, packageManager=declared)}
    if lockfile is not None:
        name, text = LOCKFILES[lockfile]
        files[name] = text
    sample = SampleRepo("app", "react-vite", files, package_manager=lockfile or "npm")
    proposal = propose_pipeline(analyze_repository(write_repo(sample, root)))
    install = next(s for s in proposal.stages if s.name == "install")
    return " && ".join(str(c) for c in install.commands)


@pytest.mark.parametrize(
    "declared", ["", "npx", "yarn", "@1.22.0", "evil@1.0.0; rm -rf /", 42, {"name": "pnpm"}, None]
)
def test_unknown_package_manager_field_leaves_the_lockfile_to_decide(
    tmp_path: Path, declared: object
) -> None:
    install = _install(tmp_path, "yarn", declared)
    assert "yarn install --frozen-lockfile" in install
    assert "npm ci" not in install
    assert "evil" not in install and "rm -rf" not in install


def test_declared_manager_without_its_lockfile_installs_unlocked(tmp_path: Path) -> None:
    install = _install(tmp_path, "yarn", "pnpm@9.1.0")
    assert "pnpm install" in install
    assert "--frozen-lockfile" not in install


def test_declared_manager_with_its_lockfile_installs_locked(tmp_path: Path) -> None:
    assert "pnpm install --frozen-lockfile" in _install(tmp_path, "pnpm", "pnpm@9.1.0")


def test_npm_lockfile_with_a_garbage_field_is_npm_ci(tmp_path: Path) -> None:
    assert _install(tmp_path, "npm", "garbage") == "npm ci"


def test_no_lockfile_no_field_is_npm_install(tmp_path: Path) -> None:
    assert _install(tmp_path, None, None) == "npm install"
