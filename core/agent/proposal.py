"""Pipeline proposals from a repository analysis: ordered stages per app (prefixed in a
monorepo), then one security scan and one deploy."""

from __future__ import annotations

import re
import shlex
from pathlib import PurePosixPath
from typing import Any

from core.agent.detectors import LOCKFILE_NAMES
from core.agent.images import COREPACK_ENABLE, cache_paths, install_steps, repository_of
from core.agent.python_requirements import requirement_files
from core.agent.yarn_classic import with_yarn
from forgeline.pipeline_spec import PipelineProposal, ProposedStage
from forgeline.slugs import slug
from workflows.agent_models import AppDetection, Preferences, RepoAnalysis

SECURITY_COMMANDS = {
    "npm": "npm audit --audit-level=high --omit=dev",
    "pnpm": f"{COREPACK_ENABLE} && pnpm audit --audit-level high --prod",
    "yarn": with_yarn("yarn audit --level high --groups dependencies") + " || test $? -lt 8",
    "bun": "bunx --bun audit-ci --high || true",
    "poetry": "pip install pip-audit && pip-audit",
    "uv": "pip install uv && uv export --frozen --no-hashes > /tmp/req.txt && "
    "uvx pip-audit -r /tmp/req.txt",
    "go modules": "go install golang.org/x/vuln/cmd/govulncheck@latest && govulncheck ./...",
    "cargo": "cargo install cargo-audit --locked && cargo audit",
    "bundler": "gem install bundler-audit && bundle-audit check --update",
    "composer": "composer audit",
}


NPM_LOCKFILES = ("package-lock.json", "npm-shrinkwrap.json")


def _security_command(app: AppDetection) -> str | None:
    if app.package_manager == "npm" and not any(
        PurePosixPath(f).name in NPM_LOCKFILES for f in app.lockfiles
    ):
        # npm audit reads the lockfile: resolve one first (nothing is installed or run).
        return "npm install --package-lock-only --ignore-scripts && " + SECURITY_COMMANDS["npm"]
    if app.package_manager == "pip":
        files = requirement_files(app.install_command or "")
        if files:
            audited = " ".join(f"-r {shlex.quote(f)}" for f in files)
            return f"pip install pip-audit && pip-audit {audited}"
        return "pip install pip-audit && pip-audit ."
    return SECURITY_COMMANDS.get(app.package_manager or "")


# Marks a deploy stage done by Forgeline itself: exports turn it into a call to the deployments API.
FORGELINE_DEPLOY = "forgeline"
NO_ENVIRONMENT_DEPLOY = (
    'echo "No deploy environment chosen: this stage deploys nothing. Generate the pipeline with'
    " input_data.preferences.deploy_environment_id, or set conditions.deploy_environment_id on"
    ' this stage, to deploy through Forgeline."'
)


def _shell_label(text: str) -> str:
    """An environment name made safe inside a double-quoted shell string."""
    return re.sub(r"[^A-Za-z0-9 ._:/-]+", "-", text).strip()[:100] or "environment"


def _deploy_commands(
    app: AppDetection, prefs: Preferences
) -> tuple[str | None, list[str], dict[str, Any]]:
    """Image, commands and extra conditions of the deploy stage for the chosen provider."""
    out = app.output_directory or "."
    where = "." if app.path in ("", ".") else app.path
    # The deploy CLIs run on the app's own Node when it has one.
    node = next(
        (i for i in (app.build_image, app.image) if i and repository_of(i) == "node"), "node:20"
    )
    match (prefs.deploy_provider or "forgeline").lower():
        case "vercel":
            return node, ['npx --yes vercel deploy --prod --yes --token "$VERCEL_TOKEN"'], {}
        case "netlify":
            return (
                node,
                [f'npx --yes netlify-cli deploy --prod --dir "{out}" --auth "$NETLIFY_AUTH_TOKEN"'],
                {},
            )
        case "docker":
            return (
                None,
                [
                    f'docker build -t "$IMAGE_NAME:$COMMIT_SHA" {where}',
                    'docker push "$IMAGE_NAME:$COMMIT_SHA"',
                ],
                {},
            )
        case _:
            # Inside Forgeline the run starts DeploymentWorkflow as a child when this stage
            # succeeds (conditions.deploy_environment_id): the command needs no credentials.
            # Exports replace it with a call to the deployments API (forgeline.pipeline_export).
            extra: dict[str, Any] = {"deploy_via": FORGELINE_DEPLOY}
            if prefs.deploy_environment_id is None:
                return "alpine:3.20", [NO_ENVIRONMENT_DEPLOY], extra
            label = _shell_label(prefs.deploy_environment_name or str(prefs.deploy_environment_id))
            extra["deploy_environment_id"] = str(prefs.deploy_environment_id)
            return (
                "alpine:3.20",
                [f'echo "Deploying $FORGELINE_COMMIT_SHA to {label} through Forgeline"'],
                extra,
            )


# The manifests that key a dependency cache when the repository commits no lockfile, by package
# manager (else by language). The runner hashes those that exist.
MANIFESTS = {
    "npm": ("package.json",),
    "pnpm": ("package.json", "pnpm-workspace.yaml"),
    "yarn": ("package.json",),
    "bun": ("package.json",),
    "pip": ("requirements.txt", "pyproject.toml", "setup.py", "setup.cfg"),
    "poetry": ("pyproject.toml",),
    "uv": ("pyproject.toml",),
    "pipenv": ("Pipfile",),
}
LANGUAGE_MANIFESTS = {
    "javascript": MANIFESTS["npm"],
    "typescript": MANIFESTS["npm"],
    "python": MANIFESTS["pip"],
    "go": ("go.mod",),
    "rust": ("Cargo.toml",),
    "ruby": ("Gemfile",),
    "php": ("composer.json",),
}


def cache_key_files(app: AppDetection, root_lockfiles: list[str]) -> list[str]:
    """What keys the stages' shared dependency cache: the lockfiles, else the manifests. Every
    stage of the app then has the same key, so the first to finish saves it and the others
    restore it (one stage's name per key made each stage, each matrix leg, save its own copy)."""
    if app.lockfiles or root_lockfiles:
        return app.lockfiles or root_lockfiles
    names = MANIFESTS.get(app.package_manager or "") or LANGUAGE_MANIFESTS.get(app.language, ())
    base = PurePosixPath(app.path or ".")
    return [str(base / name) for name in names]


# Toolchains whose image follows a matrix variable: image repository -> variable.
MATRIX_VARIABLES = {"python": "PYTHON_VERSION", "node": "NODE_VERSION"}


def _test_matrix(app: AppDetection) -> tuple[dict[str, list[str]], str | None]:
    """The test stage's matrix and image template when the repository declares versions."""
    repository = (app.image or "").split(":", 1)[0]
    variable = MATRIX_VARIABLES.get(repository)
    if variable is None or len(app.version_matrix) < 2:
        return {}, app.image
    return {variable: list(app.version_matrix)}, f"{repository}:${{{variable}}}"


def propose_pipeline(
    analysis: RepoAnalysis,
    preferences: Preferences | None = None,
    *,
    name: str | None = None,
    default_branch: str = "main",
) -> PipelineProposal:
    """Ordered stages per app (prefixed in a monorepo), then one security scan and one deploy."""
    prefs = preferences or Preferences()
    branch = prefs.default_branch or default_branch
    stages: list[ProposedStage] = []
    multi = len(analysis.apps) > 1

    def add(stage: ProposedStage) -> str:
        stages.append(stage)
        return stage.name

    root_install: str | None = None
    root_lockfiles = [
        n
        for n in LOCKFILE_NAMES
        if analysis.workspace_install_command
        and n in ("package-lock.json", "yarn.lock", "pnpm-lock.yaml", "bun.lockb", "bun.lock")
    ]
    if analysis.workspace_install_command:
        root_install = add(
            ProposedStage(
                name="install",
                stage_type="install",
                commands=[analysis.workspace_install_command],
                image=analysis.workspace_image,
                cache_paths=analysis.apps[0].cache_paths,
                cache_key_files=root_lockfiles,
                timeout_seconds=900,
            )
        )

    build_names: list[str] = []
    for app in analysis.apps:
        prefix = f"{slug(app.name, max_length=40, fallback='app')}-" if multi else ""
        workdir = app.path or "."
        services = ["docker:27-dind"] if app.framework == "dockerfile" else []
        previous: list[str] = [root_install] if root_install else []
        # Each CI job starts from a clean checkout: re-run the install (cached) where needed.
        setup = [app.install_command] if app.install_command else []
        if root_install and analysis.workspace_install_command and not app.install_command:
            up = "/".join([".."] * len(PurePosixPath(workdir).parts)) or "."
            setup = [f"(cd {up} && {analysis.workspace_install_command})"]
        key_files = cache_key_files(app, root_lockfiles)
        if app.install_command:
            previous = [
                add(
                    ProposedStage(
                        name=f"{prefix}install",
                        stage_type="install",
                        commands=[app.install_command],
                        image=app.image,
                        working_directory=workdir,
                        cache_paths=app.cache_paths,
                        cache_key_files=key_files,
                        timeout_seconds=900,
                    )
                )
            ]
        checks: list[str] = []
        if prefs.include_lint and app.lint_command:
            image = app.image
            if app.framework == "dockerfile":
                image = "hadolint/hadolint:latest-debian"
            checks.append(
                add(
                    ProposedStage(
                        name=f"{prefix}lint",
                        stage_type="lint",
                        commands=[*setup, *app.setup_commands, app.lint_command],
                        image=image,
                        working_directory=workdir,
                        depends_on=previous,
                        cache_paths=app.cache_paths,
                        cache_key_files=key_files,
                        timeout_seconds=600,
                    )
                )
            )
        if prefs.include_tests and app.test_command:
            matrix, test_image = _test_matrix(app)
            checks.append(
                add(
                    ProposedStage(
                        name=f"{prefix}test",
                        stage_type="test",
                        commands=[*setup, *app.setup_commands, app.test_command],
                        image=test_image,
                        matrix=matrix,
                        # Databases and caches the tests reach at the services' hostnames.
                        services=list(app.services),
                        working_directory=workdir,
                        depends_on=previous,
                        cache_paths=app.cache_paths,
                        cache_key_files=key_files,
                        env={"CI": "true", **app.service_env},
                        timeout_seconds=1200,
                    )
                )
            )
        if app.build_command:
            build_image, build_setup = app.image, [*setup, *app.setup_commands]
            build_caches = app.cache_paths
            if app.build_image and app.build_image != app.image:
                # Built in its own image: the app's install and setup belong to the other one.
                build_image, build_setup = app.build_image, []
                build_caches = [*cache_paths(app.build_image, "npm"), "node_modules"]
            artifact = (
                [app.output_directory if workdir == "." else f"{workdir}/{app.output_directory}"]
                if app.output_directory
                else []
            )
            build_names.append(
                add(
                    ProposedStage(
                        name=f"{prefix}build",
                        stage_type="build",
                        commands=[*build_setup, app.build_command],
                        image=build_image,
                        services=services,
                        working_directory=workdir,
                        depends_on=checks or previous,
                        cache_paths=build_caches,
                        cache_key_files=key_files,
                        artifact_paths=artifact,
                        timeout_seconds=max(600, app.estimated_build_seconds * 4),
                    )
                )
            )
        else:
            build_names.extend(checks or previous)

    primary = analysis.apps[0]
    scans = [(app, cmd) for app in analysis.apps if (cmd := _security_command(app))]
    scan_names: list[str] = []
    if prefs.include_security_scan and scans:
        # One scan per image: a polyglot repository's npm audit cannot run in a Python image.
        by_image: dict[str | None, list[tuple[AppDetection, str]]] = {}
        for app, cmd in scans:
            by_image.setdefault(app.image, []).append((app, cmd))
        for image, group in by_image.items():
            first = group[0][0]
            if len(group) == 1:
                commands, workdir = [group[0][1]], first.path
            else:
                commands = [f"(cd {app.path} && {cmd})" for app, cmd in group]
                workdir = "."
            suffix = "" if len(by_image) == 1 else f"-{slug(first.name, max_length=30)}"
            scan_names.append(
                add(
                    ProposedStage(
                        name=f"security-scan{suffix}",
                        stage_type="security_scan",
                        commands=commands,
                        image=image,
                        working_directory=workdir,
                        depends_on=list(dict.fromkeys(s for s in build_names if s)),
                        timeout_seconds=600,
                    )
                )
            )
    # A job listed twice in `needs` is rejected by actionlint.
    deploy_after = scan_names or list(dict.fromkeys(s for s in build_names if s))
    if primary.framework != "unknown" and (prefs.deploy_provider or "").lower() != "none":
        image, commands, extra = _deploy_commands(primary, prefs)
        conditions: dict[str, Any] = {
            "branch": [branch],
            "previous_stage_status": "success",
            **extra,
        }
        add(
            ProposedStage(
                name="deploy",
                stage_type="deploy",
                commands=commands,
                image=image,
                services=["docker:27-dind"] if image is None else [],
                depends_on=deploy_after,
                conditions=conditions,
                timeout_seconds=900,
            )
        )
    provided: dict[str, list[str]] = {}
    for app in analysis.apps:
        provided.setdefault(app.path or ".", []).extend(app.provided_tools)
    for stage in stages:
        # A tool the image lacks is installed by the stage's first step (clippy, Composer, ...).
        own = provided.get(stage.working_directory, [])
        if first_steps := install_steps(stage.image, stage.commands, own):
            stage.commands = [*first_steps, *stage.commands]
    if not stages:
        add(
            ProposedStage(
                name="build",
                stage_type="build",
                commands=['echo "No build system detected; edit this pipeline." && exit 1'],
                image="alpine:3.20",
            )
        )
    triggers: dict[str, Any] = {
        "on_push": {"branches": [branch]},
        "on_pull_request": {"branches": [branch]},
        "manual": True,
    }
    types = {s.stage_type for s in stages}
    pipeline_type = (
        "full_cicd"
        if "deploy" in types and len(types) > 1
        else (
            "deploy_only"
            if types == {"deploy"}
            else ("build_only" if "build" in types else "test_only")
        )
    )
    label = "monorepo" if analysis.is_monorepo else primary.framework
    return PipelineProposal(
        name=name or f"{label} CI/CD",
        pipeline_type=pipeline_type,
        framework=label if analysis.is_monorepo else primary.framework,
        triggers=triggers,
        stages=stages,
        estimated_build_seconds=sum(a.estimated_build_seconds for a in analysis.apps),
    )
