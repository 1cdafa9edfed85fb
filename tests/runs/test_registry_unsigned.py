"""A registry that signs nothing (a mirror stripping npm's dist.signatures) is found out once
(infra/runners/registry_signatures.py), and the Node stages then start with corepack's
signature check off unless the stage sets it, saying so in their log: pnpm and yarn
repositories no longer fail their first run on "cannot verify"."""

from __future__ import annotations

import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from infra.runners import registry_signatures
from infra.runners.node_stages import prepare_node_stage, setup_script
from infra.runners.node_toolchain import NodeRequest, NodeToolchain, NodeToolchainError
from infra.runners.registry_signatures import registry_unsigned, signs

SIGNED = {"versions": {"0.1.0": {"dist": {"signatures": [{"keyid": "k", "sig": "s"}]}}}}
UNSIGNED = {"versions": {"0.1.0": {"dist": {"integrity": "sha512-x"}}}}


@pytest.mark.parametrize(
    ("packument", "answer"),
    [
        (SIGNED, True),
        (UNSIGNED, False),
        ({"versions": {}}, None),
        ({"versions": ["a"]}, None),
        ({"versions": {"1": "x", "2": {"dist": "y"}}}, None),
        ({"versions": {"1": {"dist": {"signatures": "forged"}}}}, False),
        ("not a packument", None),
    ],
)
def test_signs(packument: Any, answer: bool | None) -> None:
    assert signs(packument) is answer


class FakeToolchains:
    def __init__(self, registry: str, answer: dict[str, Any] | Exception) -> None:
        self.registry = registry
        self.answer = answer
        self.asked = 0

    def _packument(self, name: str, abbreviated: bool = False) -> dict[str, Any]:
        assert name == "corepack"
        self.asked += 1
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def test_the_registry_is_asked_once_and_concurrent_stages_agree() -> None:
    fake = FakeToolchains("https://mirror.test/unsigned-1", UNSIGNED)
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: registry_unsigned(fake), range(16)))  # type: ignore[arg-type]
    assert answers == [True] * 16
    asked = fake.asked
    assert registry_unsigned(fake) is True  # type: ignore[arg-type]
    assert fake.asked == asked
    signed = FakeToolchains("https://registry.test/signed-1", SIGNED)
    assert registry_unsigned(signed) is False  # type: ignore[arg-type]


def test_an_unreachable_registry_changes_nothing() -> None:
    down = FakeToolchains("https://down.test/1", NodeToolchainError("unreachable"))
    assert registry_unsigned(down) is False  # type: ignore[arg-type]
    assert registry_unsigned(down) is False  # type: ignore[arg-type]
    assert down.asked == 1  # a registry that is down is not asked by every stage
    assert registry_signatures._answers["https://down.test/1"] is None


def _run(tmp_path: Path, setup: str, env: dict[str, str]) -> str:
    (tmp_path / "home").mkdir(exist_ok=True)
    full = {"PATH": os.environ["PATH"], "HOME": str(tmp_path / "home"), **env}
    done = subprocess.run(["/bin/sh", "-c", setup], capture_output=True, text=True, env=full)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_stages_start_with_the_check_off_unless_they_set_it(tmp_path: Path) -> None:
    toolchain = NodeToolchain("22.0.0", str(tmp_path / "bin"))
    probe = 'echo "[${COREPACK_INTEGRITY_KEYS-unset}]"'
    assert _run(tmp_path, setup_script(toolchain, "t", probe, True), {}) == "[0]"
    own = {"COREPACK_INTEGRITY_KEYS": '{"npm":[]}'}
    assert _run(tmp_path, setup_script(toolchain, "t", probe, True), own) == '[{"npm":[]}]'
    assert _run(tmp_path, setup_script(toolchain, "t", probe, False), {}) == "[unset]"
    # A hostile stage name or script never reaches the shell unquoted.
    hostile = setup_script(toolchain, "t; touch PWNED", probe + "; echo $(id -u)", True)
    assert _run(tmp_path, hostile, {}).startswith("[0]")
    assert not list(tmp_path.rglob("PWNED"))


def test_the_log_says_so(tmp_path: Path) -> None:
    from infra.runners.base import StageProcess

    process = StageProcess(
        name="install", script="pnpm install", workspace=tmp_path, timeout_seconds=60
    )
    toolchain = NodeToolchain("22.0.0", "/opt/forgeline/node/22.0.0/bin", downloaded=True)
    stage = prepare_node_stage(
        process, NodeRequest("image node:22.0", "22.0"), toolchain, "https://m.test", True
    )
    assert b"serves no package signatures" in stage.opening
    assert b"COREPACK_INTEGRITY_KEYS=0" in stage.opening
    quiet = prepare_node_stage(
        process, NodeRequest("image node:22.0", "22.0"), toolchain, "https://m.test", False
    )
    assert b"signatures" not in quiet.opening
