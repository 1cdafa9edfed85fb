"""Only a Node.js stage that calls a package manager corepack provides (or corepack) makes the
runner ask its registry whether it signs packages: a plain `npm test` or `echo` asks nothing."""

from __future__ import annotations

import pytest

from infra.runners.node_stages import COREPACK_COMMANDS


@pytest.mark.parametrize(
    "script",
    [
        "pnpm install --frozen-lockfile",
        "corepack enable\nnpm test",
        "yarn --immutable && yarn test",
        "cd web; pnpx vitest run",
        "yarnpkg build",
        'sh -c "pnpm -r test"',
    ],
)
def test_scripts_that_reach_corepack(script: str) -> None:
    assert COREPACK_COMMANDS.search(script)


@pytest.mark.parametrize(
    "script",
    [
        "npm ci && npm test",
        'echo "venv=${VIRTUAL_ENV:-none}"',
        "node scripts/pnpm-lock-check.js",
        "cat yarn.lock",
        "ls pnpm-workspace.yaml",
        "npx mypnpm",
        "./yarn-cache/clean",
    ],
)
def test_scripts_that_do_not(script: str) -> None:
    assert COREPACK_COMMANDS.search(script) is None
