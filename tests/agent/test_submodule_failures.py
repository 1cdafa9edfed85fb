"""A failure on a file of a git submodule the repository declares (`.gitmodules`) and the checkout
lacks is the pipeline's (config: the submodule is not checked out), not the repository's code.
.gitmodules is read as text only: its URLs (file://, ext::, private hosts) are never fetched."""

from __future__ import annotations

import asyncio
from pathlib import Path

from core.agent.outcomes import diagnose
from core.agent.repo_files import RepoFiles
from core.agent.submodules import declared_submodules, missing_submodule

GITMODULES = """[submodule "tests/toml-test"]
\tpath = tests/toml-test
\turl = https://github.com/toml-lang/toml-test.git
"""
HOSTILE = """[submodule "evil"]
\tpath = ../../etc
\turl = ext::sh -c touch% /tmp/pwned
[submodule "local"]
\tpath = vendor/local
\turl = file:///etc
[submodule "private"]
\tpath = /abs/path
\turl = https://10.0.0.5/x.git
garbage line = = =
[submodule "broken
"""
MISSING = "FileNotFoundError: [Errno 2] No such file or directory: '/workspace/tests/toml-test/x'"
LOG = f"""E   {MISSING}
ERROR tests/test_toml_tests.py - {MISSING}
!!!!!!!!!!!!!!!!!!!! Interrupted: 1 error during collection !!!!!!!!!!!!!!!!!!!!
"""
REAL = """FAILED tests/test_api.py::test_parse - assert 1 == 2
==== 1 failed, 9 passed in 0.2s ====
"""


def _repo(root: Path, gitmodules: str) -> RepoFiles:
    (root / "tests" / "toml-test").mkdir(parents=True)  # an empty gitlink directory
    (root / "tests" / "test_toml_tests.py").write_text("def test_x():\n    pass\n")
    (root / ".gitmodules").write_text(gitmodules)
    return RepoFiles(root)


def _logs(log: str) -> dict[str, object]:
    stage = {"stage_name": "test (3.13)", "status": "failed", "exit_code": 2, "log_tail": log}
    return {"pipeline_run_id": "r", "status": "failed", "failed_stages": [stage]}


def test_a_missing_submodule_file_is_config(tmp_path: Path) -> None:
    report = diagnose(_logs(LOG), None, _repo(tmp_path, GITMODULES))
    [test] = report["diagnosis"]
    assert test["failure_class"] == "config"
    assert "submodule tests/toml-test is not checked out" in test["cause"]
    assert "submodules" in test["fix"]
    assert any("toml-test" in line for line in test["evidence"])


def test_without_a_declared_submodule_the_same_log_stays_the_code(tmp_path: Path) -> None:
    report = diagnose(_logs(LOG), None, _repo(tmp_path, ""))
    assert report["diagnosis"][0]["failure_class"] == "code"
    assert diagnose(_logs(LOG), None)["diagnosis"][0]["failure_class"] == "code"


def test_a_real_failure_beside_a_submodule_stays_the_code(tmp_path: Path) -> None:
    report = diagnose(_logs(REAL), None, _repo(tmp_path, GITMODULES))
    assert report["diagnosis"][0]["failure_class"] == "code"


def test_hostile_gitmodules_paths_are_dropped_and_urls_never_used(tmp_path: Path) -> None:
    found = declared_submodules(HOSTILE)
    assert [s.path for s in found] == ["vendor/local"]
    # Reading the file fetched nothing and ran nothing.
    assert not Path("/tmp/pwned").exists()
    # A prefix of a declared path is not that path.
    subs = declared_submodules('[submodule "t"]\n path = tests/toml\n url = x\n')
    assert missing_submodule(subs, [LOG.splitlines()[0]]) is None


def test_huge_or_garbled_gitmodules_costs_a_bounded_read() -> None:
    many = "".join(f'[submodule "m{i}"]\n path = m{i}\n url = u\n' for i in range(10_000))
    assert len(declared_submodules(many)) <= 50
    assert declared_submodules("\x00\xff" * 1_000_000) == []
    assert declared_submodules(None) == []


async def test_concurrent_diagnoses_of_one_checkout_agree(tmp_path: Path) -> None:
    files = _repo(tmp_path, GITMODULES)
    reports = await asyncio.gather(
        *(asyncio.to_thread(diagnose, _logs(LOG), None, files) for _ in range(8))
    )
    assert {r["diagnosis"][0]["failure_class"] for r in reports} == {"config"}
