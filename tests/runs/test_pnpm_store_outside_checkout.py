"""pnpm's store stays in the run's home, never in the checkout (infra/runners/node_stages.py):
with the home and the checkout on separate mounts, pnpm put its default store at the root of
the checkout's mount (/workspace/.pnpm-store) and a repository's `prettier --check .` failed on
118 of its files. A stage that names its own store keeps it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from infra.runners.node_stages import setup_script
from infra.runners.node_toolchain import NodeToolchain

PROBE = 'echo "${npm_config_store_dir-unset}|${pnpm_config_store_dir-unset}"'


def _run(tmp_path: Path, env: dict[str, str], name: str = "lint") -> str:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    toolchain = NodeToolchain("22.0.0", str(tmp_path / "bin"))
    full = {"PATH": os.environ["PATH"], "HOME": str(home), **env}
    script = setup_script(toolchain, name, PROBE)
    done = subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True, env=full)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_the_store_is_the_homes(tmp_path: Path) -> None:
    store = f"{tmp_path}/home/.local/share/pnpm/store"
    assert _run(tmp_path, {}) == f"{store}|{store}"


def test_a_stage_naming_its_store_keeps_it(tmp_path: Path) -> None:
    for key in ("npm_config_store_dir", "NPM_CONFIG_STORE_DIR", "pnpm_config_store_dir"):
        out = _run(tmp_path, {key: "/workspace/my-store"})
        assert f"{tmp_path}/home" not in out


def test_hostile_values_are_not_evaluated(tmp_path: Path) -> None:
    out = _run(tmp_path, {"npm_config_store_dir": "$(touch PWNED)"}, name="x; touch PWNED")
    assert "$(touch PWNED)" in out
    assert not list(tmp_path.rglob("PWNED")) and not Path("PWNED").exists()


def test_concurrent_stages_agree(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(4) as pool:
        outs = list(pool.map(lambda i: _run(tmp_path, {}, name=f"leg-{i}"), range(4)))
    assert len(set(outs)) == 1
