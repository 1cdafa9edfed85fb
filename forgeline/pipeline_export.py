"""Pipeline export to GitHub Actions and GitLab CI YAML (validated by
forgeline.pipeline_validation)."""

from __future__ import annotations

import re
from typing import Any, Literal

import yaml

from forgeline.pipeline_spec import (
    ADVISORY_STAGE_TYPES,
    STAGE_ORDER,
    PipelineProposal,
    ProposedStage,
    step_name,
)
from forgeline.service_containers import service_env, service_of

ExportFormat = Literal["github-actions", "gitlab-ci"]
EXPORT_FORMATS: tuple[str, ...] = ("github-actions", "gitlab-ci")
SECRET_VARIABLES = {"FORGELINE_TOKEN", "VERCEL_TOKEN", "NETLIFY_AUTH_TOKEN", "REGISTRY_PASSWORD"}
# Images without glibc cannot host the JavaScript actions GitHub injects into job containers.
RUNNER_NATIVE_IMAGES = ("curlimages/curl",)
LOCKFILES = (
    "**/package-lock.json",
    "**/yarn.lock",
    "**/pnpm-lock.yaml",
    "**/bun.lock*",
    "**/poetry.lock",
    "**/uv.lock",
    "**/requirements*.txt",
    "**/go.sum",
    "**/Cargo.lock",
    "**/Gemfile.lock",
    "**/composer.lock",
    "**/pom.xml",
    "**/*.gradle*",
)


class _Dumper(yaml.SafeDumper):
    """Block style, no anchors: exported YAML must itself pass the alias check."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str_presenter(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _str_presenter)


def dump_yaml(data: dict[str, Any]) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, width=120, allow_unicode=True)


# --- shared helpers ------------------------------------------------------------------------------


def job_id(stage_name: str) -> str:
    ident = re.sub(r"[^A-Za-z0-9_-]", "-", stage_name)
    return ident if re.match(r"^[A-Za-z_]", ident) else f"job-{ident}"


def cache_name(stage: ProposedStage) -> str:
    """One dependency cache per app, shared by its install/lint/test/build jobs."""
    name = job_id(stage.name)
    for kind in ("install", "lint", "test", "build"):
        if name == kind:
            return "deps"
        if name.endswith(f"-{kind}"):
            return f"{name[: -len(kind) - 1]}-deps"
    return f"{name}-deps"


def _variables(stage: ProposedStage) -> list[str]:
    found = re.findall(r"\$\{?([A-Z][A-Z0-9_]+)", " ".join(stage.commands))
    return sorted(set(found))


def _branches(proposal: PipelineProposal, key: str) -> list[str]:
    trig = proposal.triggers.get(key)
    if isinstance(trig, dict):
        return [str(b) for b in trig.get("branches") or []]
    return []


def _cd(stage: ProposedStage) -> list[str]:
    return [] if stage.working_directory in ("", ".") else [f"cd {stage.working_directory}"]


# --- Forgeline deploy stages ---------------------------------------------------------------------

# Exported pipelines run outside Forgeline: their deploy job asks the deployments API for the
# deployment that, inside Forgeline, the run starts itself (conditions.deploy_environment_id).
FORGELINE_DEPLOY_IMAGE = "curlimages/curl:8.10.1"
FORGELINE_DEPLOY_COMMAND = (
    'curl -fsS -X POST "$FORGELINE_API_URL/v1/environments/$FORGELINE_ENVIRONMENT_ID/deployments"'
    ' -H "Authorization: Bearer $FORGELINE_TOKEN" -H "Content-Type: application/json"'
    ' -d "{\\"commit_sha\\": \\"$COMMIT_SHA\\", \\"branch\\": \\"$COMMIT_BRANCH\\"}"'
)


def is_forgeline_deploy(stage: ProposedStage) -> bool:
    return stage.stage_type == "deploy" and stage.conditions.get("deploy_via") == "forgeline"


def _exported_stage(stage: ProposedStage) -> ProposedStage:
    if not is_forgeline_deploy(stage):
        return stage
    env = dict(stage.env)
    if environment_id := stage.conditions.get("deploy_environment_id"):
        env.setdefault("FORGELINE_ENVIRONMENT_ID", str(environment_id))
    return stage.model_copy(
        update={
            "commands": [FORGELINE_DEPLOY_COMMAND],
            "image": FORGELINE_DEPLOY_IMAGE,
            "services": [],
            "env": env,
        }
    )


def for_export(proposal: PipelineProposal) -> PipelineProposal:
    """The proposal as CI outside Forgeline runs it (Forgeline deploy stages call the API)."""
    return proposal.model_copy(update={"stages": [_exported_stage(s) for s in proposal.stages]})


# --- GitHub Actions -------------------------------------------------------------------------------


def _gha_if(stage: ProposedStage) -> str | None:
    parts: list[str] = []
    status = stage.conditions.get("previous_stage_status")
    if status == "always":
        parts.append("always()")
    elif status == "failure":
        parts.append("failure()")
    branches = stage.conditions.get("branch") or []
    if isinstance(branches, str):
        branches = [branches]
    if branches:
        # Branch-gated stages (deploys) never run for pull requests, whatever the head branch.
        refs = " || ".join(f"github.ref == 'refs/heads/{b}'" for b in branches)
        parts.append("github.event_name != 'pull_request'")
        parts.append(f"({refs})" if len(branches) > 1 else refs)
    return " && ".join(parts) or None


def _gha_matrix_image(image: str, stage: ProposedStage) -> str:
    """`python:${PYTHON_VERSION}` -> `python:${{ matrix.PYTHON_VERSION }}`."""
    for name in stage.matrix:
        image = image.replace("${" + name + "}", "${{ matrix." + name + " }}")
    return image


def _gha_env(stage: ProposedStage) -> dict[str, str]:
    env = {**{name: "${{ matrix." + name + " }}" for name in stage.matrix}, **stage.env}
    for var in _variables(stage):
        if var in env:
            continue
        if var == "COMMIT_SHA":
            env[var] = "${{ github.sha }}"
        elif var == "COMMIT_BRANCH":
            env[var] = "${{ github.ref_name }}"
        elif var in SECRET_VARIABLES:
            env[var] = "${{ secrets." + var + " }}"
        elif var == "IMAGE_NAME":
            env[var] = "ghcr.io/${{ github.repository }}"
        elif var not in ("HOME", "PATH", "CI"):
            env[var] = "${{ vars." + var + " }}"
    return env


def _gha_services(stage: ProposedStage) -> dict[str, Any]:
    """Service containers keyed by the hostname the stage's variables use, health-waited."""
    services: dict[str, Any] = {}
    for image in stage.services:
        service = service_of(image)
        if service is None:
            continue
        spec: dict[str, Any] = {
            "image": image,
            "options": f'--health-cmd "{service.health_command}" --health-interval 5s '
            "--health-timeout 5s --health-retries 20",
        }
        if env := service_env(service, stage.env):
            spec["env"] = env
        services[service.repository] = spec
    return services


def to_github_actions(proposal: PipelineProposal) -> dict[str, Any]:
    proposal = for_export(proposal)
    by_name = {s.name: s for s in proposal.stages}
    on: dict[str, Any] = {}
    if push := _branches(proposal, "on_push"):
        on["push"] = {"branches": push}
    if pr := _branches(proposal, "on_pull_request"):
        on["pull_request"] = {"branches": pr}
    if schedule := proposal.triggers.get("schedule"):
        # Stored triggers hold [{cron, timezone}] entries; older proposals a single cron string.
        entries = schedule if isinstance(schedule, list) else [{"cron": schedule}]
        on["schedule"] = [
            {"cron": str(e["cron"] if isinstance(e, dict) else e)} for e in entries if e
        ]
    if proposal.triggers.get("manual", True):
        on["workflow_dispatch"] = {}
    jobs: dict[str, Any] = {}
    for stage in proposal.stages:
        job: dict[str, Any] = {"name": stage.name, "runs-on": "ubuntu-latest"}
        if stage.depends_on:
            job["needs"] = [job_id(d) for d in stage.depends_on]
        if cond := _gha_if(stage):
            job["if"] = cond
        if stage.matrix:
            job["strategy"] = {"fail-fast": False, "matrix": dict(stage.matrix)}
        if stage.image and not stage.image.startswith(RUNNER_NATIVE_IMAGES):
            job["container"] = _gha_matrix_image(stage.image, stage)
        job["timeout-minutes"] = max(1, -(-stage.timeout_seconds // 60))
        if stage.stage_type in ADVISORY_STAGE_TYPES:
            job["continue-on-error"] = True
        if env := _gha_env(stage):
            job["env"] = env
        if services := _gha_services(stage):
            job["services"] = services
        if stage.working_directory not in ("", "."):
            job["defaults"] = {"run": {"working-directory": stage.working_directory}}
        steps: list[dict[str, Any]] = [{"uses": "actions/checkout@v4"}]
        if stage.cache_paths:
            key_files = ", ".join(f"'{g}'" for g in (stage.cache_key_files or LOCKFILES))
            steps.append(
                {
                    "name": "Cache dependencies",
                    "uses": "actions/cache@v4",
                    "with": {
                        "path": "\n".join(
                            p
                            if p.startswith("~") or stage.working_directory in ("", ".")
                            else f"{stage.working_directory}/{p}"
                            for p in stage.cache_paths
                        ),
                        "key": "${{ runner.os }}-"
                        + cache_name(stage)
                        + "-${{ hashFiles("
                        + key_files
                        + ") }}",
                    },
                }
            )
        if stage.stage_type == "deploy":
            for dep in _ancestors(proposal, stage):
                for path in by_name[dep].artifact_paths:
                    steps.append(
                        {
                            "name": f"Download {dep} output",
                            "uses": "actions/download-artifact@v4",
                            "with": {"name": job_id(dep), "path": path},
                        }
                    )
        for command in stage.commands:
            steps.append({"name": step_name(command, 60), "run": command})
        for path in stage.artifact_paths[:1]:
            steps.append(
                {
                    "name": "Upload build output",
                    "uses": "actions/upload-artifact@v4",
                    "with": {"name": job_id(stage.name), "path": path, "retention-days": 7},
                }
            )
        job["steps"] = steps
        jobs[job_id(stage.name)] = job
    return {
        "name": proposal.name,
        "on": on,
        "permissions": {"contents": "read"},
        "concurrency": {
            "group": "${{ github.workflow }}-${{ github.ref }}",
            "cancel-in-progress": True,
        },
        "jobs": jobs,
    }


def _ancestors(proposal: PipelineProposal, stage: ProposedStage) -> list[str]:
    by_name = {s.name: s for s in proposal.stages}
    seen: list[str] = []
    todo = list(stage.depends_on)
    while todo:
        name = todo.pop(0)
        if name in seen or name not in by_name:
            continue
        seen.append(name)
        todo.extend(by_name[name].depends_on)
    return [n for n in seen if by_name[n].artifact_paths]


# --- GitLab CI ------------------------------------------------------------------------------------


def _gitlab_rules(stage: ProposedStage) -> list[dict[str, Any]] | None:
    status = stage.conditions.get("previous_stage_status")
    when = {"always": "always", "failure": "on_failure"}.get(str(status), "on_success")
    branches = stage.conditions.get("branch") or []
    if isinstance(branches, str):
        branches = [branches]
    changes = stage.conditions.get("files_changed") or []
    if not branches and not changes and when == "on_success":
        return None
    rule: dict[str, Any] = {"when": when}
    if branches:
        rule["if"] = " || ".join(f'$CI_COMMIT_BRANCH == "{b}"' for b in branches)
    if changes:
        rule["changes"] = [str(c) for c in changes]
    return [rule]


def to_gitlab_ci(proposal: PipelineProposal) -> dict[str, Any]:
    proposal = for_export(proposal)
    used = [t for t in STAGE_ORDER if any(s.stage_type == t for s in proposal.stages)]
    branches = sorted(
        set(_branches(proposal, "on_push")) | set(_branches(proposal, "on_pull_request"))
    )
    rules: list[dict[str, Any]] = [{"if": '$CI_PIPELINE_SOURCE == "merge_request_event"'}]
    rules += [{"if": f'$CI_COMMIT_BRANCH == "{b}"'} for b in branches]
    if proposal.triggers.get("manual", True):
        rules.append({"if": '$CI_PIPELINE_SOURCE == "web"'})
    if proposal.triggers.get("schedule"):
        rules.append({"if": '$CI_PIPELINE_SOURCE == "schedule"'})
    doc: dict[str, Any] = {
        "stages": used,
        "workflow": {"rules": rules},
        "default": {"interruptible": True},
        "variables": {"COMMIT_SHA": "$CI_COMMIT_SHA"},
    }
    for stage in proposal.stages:
        job: dict[str, Any] = {"stage": stage.stage_type}
        if stage.image and stage.image.startswith(RUNNER_NATIVE_IMAGES):
            # curl images have `curl` as entrypoint: the runner needs a shell instead.
            job["image"] = {"name": stage.image, "entrypoint": [""]}
        elif stage.image:
            job["image"] = stage.image
        elif stage.services or any("docker " in c for c in stage.commands):
            job["image"] = "docker:27"
            job["services"] = ["docker:27-dind"]
            job["variables"] = {"DOCKER_TLS_CERTDIR": "/certs"}
        if stage.services and "services" not in job:
            job["services"] = list(stage.services)
        if stage.matrix:
            # GitLab expands the matrix variables in `image`.
            job["parallel"] = {"matrix": [dict(stage.matrix)]}
        job["needs"] = [job_id(d) for d in stage.depends_on]
        job["timeout"] = f"{max(1, -(-stage.timeout_seconds // 60))} minutes"
        if stage.stage_type in ADVISORY_STAGE_TYPES:
            job["allow_failure"] = True
        if stage.env:
            job.setdefault("variables", {}).update(stage.env)
        if "IMAGE_NAME" in _variables(stage):
            job.setdefault("variables", {})["IMAGE_NAME"] = "$CI_REGISTRY_IMAGE"
        if "COMMIT_BRANCH" in _variables(stage):
            job.setdefault("variables", {})["COMMIT_BRANCH"] = "$CI_COMMIT_REF_NAME"
        job["script"] = [*_cd(stage), *stage.commands]
        local_cache = [p for p in stage.cache_paths if not p.startswith("~")]
        if local_cache:
            prefix = "" if stage.working_directory in ("", ".") else f"{stage.working_directory}/"
            key: Any = (
                {"files": stage.cache_key_files[:2], "prefix": cache_name(stage)}
                if stage.cache_key_files
                else cache_name(stage)
            )
            job["cache"] = {"key": key, "paths": [f"{prefix}{p}/" for p in local_cache]}
        if stage.artifact_paths:
            job["artifacts"] = {"paths": list(stage.artifact_paths), "expire_in": "1 week"}
        if rules_ := _gitlab_rules(stage):
            job["rules"] = rules_
        doc[job_id(stage.name)] = job
    return doc


def export_yaml(proposal: PipelineProposal, fmt: ExportFormat) -> str:
    header = f"# Generated by Forgeline for {proposal.framework}. Edit freely.\n"
    if any(is_forgeline_deploy(s) for s in proposal.stages):
        where = (
            "repository secret FORGELINE_TOKEN, variables FORGELINE_API_URL"
            if fmt == "github-actions"
            else "masked CI/CD variable FORGELINE_TOKEN, variables FORGELINE_API_URL"
        )
        header += (
            f"# The deploy job asks Forgeline to deploy this commit: set the {where}"
            " and FORGELINE_ENVIRONMENT_ID (unless set below).\n"
        )
    data = to_github_actions(proposal) if fmt == "github-actions" else to_gitlab_ci(proposal)
    return header + dump_yaml(data)
