"""Generated dependency audits are advisory: the stored stage may fail without failing the run,
the exports say `continue-on-error` / `allow_failure`, and a registry without an audit endpoint
is classed as infrastructure, never as the repository's code."""

from __future__ import annotations

import uuid
from pathlib import Path

import yaml

from core.agent.analysis import analyze_repository
from core.agent.generated_pipelines import proposal_document, stage_columns
from core.agent.proposal import propose_pipeline
from core.runs.failure_classes import FailureSignals, classify
from db.models.agent import AgentTask
from forgeline.pipeline_export import export_yaml, job_id
from forgeline.pipeline_spec import PipelineProposal
from forgeline.pipeline_validation import validate_proposal
from forgeline.statuses.runs import FailureClass
from tests.agent.corpus.sample import SampleRepo, json_text, package_json, write_repo

NPM_APP = SampleRepo(
    "npm-app",
    "node",
    {
        "package.json": package_json({"express": "^4.19.0"}, {"test": "mocha", "build": "tsc"}),
        "package-lock.json": json_text({"name": "app", "lockfileVersion": 3, "packages": {}}),
        "index.js": "module.exports = {};\n",
    },
)
# What npm 11 prints when the registry (a mirror) answers the audit endpoint with 405.
AUDIT_405 = """
found 0 vulnerabilities in the lockfile
npm warn audit 405 Method Not Allowed - POST https://registry.example/-/npm/v1/security/advisories/bulk
npm error audit endpoint returned an error
npm error A complete log of this run can be found in: /workspace/.npm/_logs/debug-0.log
"""


def _proposal(tmp_path: Path) -> PipelineProposal:
    return propose_pipeline(analyze_repository(write_repo(NPM_APP, tmp_path)))


def test_the_scan_is_stored_allowed_to_fail_and_the_rest_is_not(tmp_path: Path) -> None:
    proposal = _proposal(tmp_path)
    scans = [s for s in proposal.stages if s.stage_type == "security_scan"]
    assert scans, "an npm application gets a dependency audit"
    for stage in proposal.stages:
        assert stage_columns(stage)["allow_failure"] is (stage.stage_type == "security_scan")
    task = AgentTask(id=uuid.uuid4(), project_id=uuid.uuid4(), organization_id=uuid.uuid4())
    document = proposal_document(task, proposal, {})
    allowed = {s.name for s in document.stages if s.allow_failure}
    assert allowed == {s.name for s in scans}


def test_the_exports_say_the_scan_is_advisory_and_still_validate(tmp_path: Path) -> None:
    proposal = _proposal(tmp_path)
    assert validate_proposal(proposal).valid  # actionlint and the GitLab schema
    actions = yaml.safe_load(export_yaml(proposal, "github-actions"))
    gitlab = yaml.safe_load(export_yaml(proposal, "gitlab-ci"))
    for stage in proposal.stages:
        advisory = stage.stage_type == "security_scan"
        assert actions["jobs"][job_id(stage.name)].get("continue-on-error", False) is advisory
        assert gitlab[job_id(stage.name)].get("allow_failure", False) is advisory


def test_a_registry_without_an_audit_endpoint_is_infrastructure() -> None:
    found = classify(FailureSignals(exit_code=1, log_tail=AUDIT_405))
    assert found.failure_class == FailureClass.INFRASTRUCTURE
    assert any("audit endpoint" in line for line in found.evidence)


def test_real_advisories_stay_the_code_s_and_hostile_logs_do_not_pass_for_the_registry() -> None:
    advisories = "lodash  <4.17.21\nSeverity: high\n1 high severity vulnerability\n"
    assert classify(FailureSignals(exit_code=1, log_tail=advisories)).failure_class != (
        FailureClass.INFRASTRUCTURE
    )
    # The phrase inside a long line of a test's output, with escapes around it, is not npm's.
    hostile = "\x1b[31m" + "x" * 5000 + " audit endpoint returned an error\n"
    assert classify(FailureSignals(exit_code=1, log_tail=hostile)).failure_class != (
        FailureClass.INFRASTRUCTURE
    )
