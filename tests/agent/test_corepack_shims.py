"""pnpm and yarn through corepack where the build user cannot write beside node: the generated
step enables corepack as root would and, when the toolchain is read-only (Forgeline's sandbox, a
rootless runner), puts the shims in ~/.local/bin instead of failing the install."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from core.agent.analysis import analyze_repository
from core.agent.images import COREPACK_ENABLE
from core.agent.proposal import propose_pipeline
from core.agent.repairs import repair_stage
from forgeline.pipeline_validation import validate_proposal
from tests.agent.corpus.sample import SampleRepo, package_json, write_repo

PNPM = SampleRepo(
    "pnpm-app",
    "node",
    {
        "package.json": package_json(
            {"vite": "^5.0.0"},
            {"test": "vitest run", "build": "vite build"},
            packageManager="pnpm@9.12.0",
        ),
        "pnpm-lock.yaml": "lockfileVersion: '9.0'\n",
    },
)
YARN_DECLARED = SampleRepo(
    "yarn-declared",
    "node",
    {
        "package.json": package_json(
            {"express": "^4.0.0"}, {"test": "jest"}, packageManager="yarn@1.22.22"
        ),
        "yarn.lock": "# yarn lockfile v1\n",
    },
)
# A corepack that, like the real one on a read-only toolchain, cannot write its default shims.
STUB = """#!/bin/sh
[ "$1" = enable ] || exit 2
if [ "$2" = --install-directory ]; then
  [ -d "$3" ] || exit 3
  printf '#!/bin/sh\\necho pnpm-shim\\n' > "$3/pnpm" && chmod +x "$3/pnpm" && exit 0
fi
[ -n "$TOOLCHAIN_WRITABLE" ] && exit 0
echo "Internal Error: EACCES: permission denied, symlink -> /usr/bin/pnpm" >&2
exit 1
"""


def _enable(tmp_path: Path, home: Path, *, writable: bool) -> subprocess.CompletedProcess[str]:
    tools = tmp_path / "tools"
    tools.mkdir(exist_ok=True)
    stub = tools / "corepack"
    stub.write_text(STUB)
    stub.chmod(stub.stat().st_mode | stat.S_IEXEC)
    env = {
        "PATH": f"{home}/.local/bin:{tools}:/usr/bin:/bin",
        "HOME": str(home),
        **({"TOOLCHAIN_WRITABLE": "1"} if writable else {}),
    }
    script = f"set -e\n{COREPACK_ENABLE} && pnpm --version\n"
    return subprocess.run(["/bin/sh", "-c", script], env=env, capture_output=True, text=True)


@pytest.mark.parametrize("sample", [PNPM, YARN_DECLARED], ids=lambda s: s.name)
def test_every_corepack_step_falls_back_to_the_user_s_bin(sample: SampleRepo, tmp_path) -> None:
    proposal = propose_pipeline(analyze_repository(write_repo(sample, tmp_path)))
    assert validate_proposal(proposal).valid
    commands = [c for s in proposal.stages for c in s.commands if "corepack" in c]
    assert commands, "the declared package manager runs through corepack"
    for command in commands:
        assert COREPACK_ENABLE in command
        assert command.replace(COREPACK_ENABLE, "").count("corepack enable") == 0


def test_a_read_only_toolchain_gets_the_shims_in_the_home_bin(tmp_path: Path) -> None:
    home = tmp_path / "home dir with spaces"
    home.mkdir()
    done = _enable(tmp_path, home, writable=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "pnpm-shim"
    assert os.access(home / ".local" / "bin" / "pnpm", os.X_OK)
    assert "EACCES" not in done.stderr  # the first try's complaint is not the stage's error


def test_a_writable_toolchain_is_enabled_in_place(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    _enable(tmp_path, home, writable=True)
    assert not (home / ".local" / "bin" / "pnpm").exists()


def test_the_pnpm_repair_adds_the_same_step_once() -> None:
    stage = {"name": "install", "commands": ["pnpm install"]}
    repaired = repair_stage(stage, ["sh: 1: pnpm: not found"], "", Path("/nonexistent"))
    assert repaired is not None
    assert repaired.stage["commands"] == [COREPACK_ENABLE, "pnpm install"]
    again = repair_stage(repaired.stage, ["sh: 1: pnpm: not found"], "", Path("/nonexistent"))
    assert again is None
