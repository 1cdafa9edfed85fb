"""A host the build's egress path refuses (a git hook repository, a download outside the package
registries) is the pipeline's failure (config: the same on every retry), and troubleshoot_failure
names the network, instead of blaming the repository's code."""

from __future__ import annotations

from core.agent.outcomes import diagnose
from core.runs.failure_classes import FailureSignals, classify
from forgeline.statuses.runs import FailureClass

# What pre-commit prints when its hook repositories cannot be cloned through the proxy.
PRE_COMMIT = """[INFO] Initializing environment for https://github.com/astral-sh/ruff-pre-commit.
An unexpected error has occurred: CalledProcessError: command: ('/usr/bin/git', 'fetch')
return code: 128
stderr:
    fatal: unable to access 'https://github.com/a/b/': CONNECT tunnel failed, response 502
Check the log at /workspace/.cache/pre-commit/pre-commit.log
"""
CURL = "curl: (56) Received HTTP code 403 from proxy after CONNECT\n"


def test_a_refused_tunnel_is_a_network_failure() -> None:
    for log in (PRE_COMMIT, CURL):
        found = classify(FailureSignals(exit_code=3, log_tail=log))
        assert found.failure_class == FailureClass.CONFIG, log
        assert "network" in found.cause
        assert any("CONNECT" in line for line in found.evidence)


def test_troubleshoot_names_the_network() -> None:
    report = diagnose(
        {
            "pipeline_run_id": "r",
            "status": "failed",
            "failed_stages": [
                {"stage_name": "lint", "status": "failed", "exit_code": 3, "log_tail": PRE_COMMIT}
            ],
        },
        None,
    )
    [lint] = report["diagnosis"]
    assert lint["failure_class"] == "config"
    assert "network" in lint["cause"]


def test_the_words_deep_in_a_hostile_line_are_not_read() -> None:
    # A minified bundle or binary noise on one line: only its first characters are matched.
    log = "\x1b[31m" + "x" * 5000 + " CONNECT tunnel failed, response 502\n1 failing\n"
    found = classify(FailureSignals(exit_code=1, log_tail=log))
    assert found.failure_class == FailureClass.CODE
