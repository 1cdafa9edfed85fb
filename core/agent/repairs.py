"""Rule-based repairs of a generated pipeline whose verification run failed: each rule reads the
failed stage's evidence (the failure class's lines and the log's tail) beside the checkout and,
when the failure is the pipeline's fault (a missing setup step, a wrong command, a module path,
a package manager the image does not enable), returns the stage as it should be.

A failure of the repository itself (its tests or build fail) matches no rule: it is reported,
never repaired away. Pure apart from reading the checkout's file names.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.agent.images import COREPACK_ENABLE
from core.agent.precommit_tools import calls_pre_commit, configured_linters, hooks_unreachable
from core.agent.python_repairs import nox_release
from core.agent.repo_files import RepoFiles

_MODULE = re.compile(r"ModuleNotFoundError: No module named '([A-Za-z_][\w.]{0,200})'")
_MISSING_ENV = re.compile(r"(?:No such file or directory|ENOENT)[^\n]{0,200}?['\"]?(\.env)\b")
_NOT_FOUND = re.compile(
    r"(?:\bsh: (?:line )?\d*:? ?|\b)(pnpm|yarn)(?::| ):? ?(?:command )?not found"
)
_NPM_CI_LOCK = re.compile(r"npm ci\b[^\n]{0,200}(?:package-lock\.json|npm-shrinkwrap)", re.I)
_MISSING_SCRIPT = re.compile(r"npm (?:ERR!|error) Missing script: \"?([\w:.-]{1,100})\"?")
_REQUIREMENTS = re.compile(r"Could not open requirements file[^\n]{0,200}?'([^']{1,200})'")
ENV_EXAMPLES = (".env.example", ".env.sample", ".env.dist", ".env.template", ".env.defaults")


@dataclass(frozen=True)
class Repair:
    """A stage rewritten, and what was wrong with it (a config failure's diagnosis).
    `shared_env`: variables every stage that calls `shared_by` needs as well (the same tool
    fails the same way in each of them)."""

    stage: dict[str, Any]
    diagnosis: str
    shared_env: tuple[tuple[str, str], ...] = ()
    shared_by: str = ""


Rule = Callable[[dict[str, Any], str, Path], Repair | None]


def _workdir(stage: dict[str, Any], root: Path) -> Path:
    where = str(stage.get("working_directory") or ".")
    resolved = (root / where).resolve()
    return resolved if resolved.is_relative_to(root.resolve()) else root


def _with(stage: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**stage, **changes}


def _module_path(stage: dict[str, Any], text: str, root: Path) -> Repair | None:
    """Tests import the repository's own package, which sits under src/ or the root but is not
    on the import path: the pipeline's fault (no editable install, no PYTHONPATH)."""
    match = _MODULE.search(text)
    if match is None:
        return None
    top = match.group(1).split(".")[0]
    base = _workdir(stage, root)
    env = dict(stage.get("environment") or {})
    current = [p for p in env.get("PYTHONPATH", "").split(":") if p]
    for folder in ("src", "."):
        where = base / folder
        if (where / top).is_dir() or (where / f"{top}.py").is_file():
            if folder in current:
                return None
            env["PYTHONPATH"] = ":".join([*current, folder])
            return Repair(
                _with(stage, environment=env),
                f"the tests import the repository's own module {top!r} from {folder}/, "
                f"which is not on the import path: PYTHONPATH={env['PYTHONPATH']}",
            )
    return None


def _env_file(stage: dict[str, Any], text: str, root: Path) -> Repair | None:
    """The code reads a .env the repository only ships as an example: a missing setup step."""
    if _MISSING_ENV.search(text) is None:
        return None
    base = _workdir(stage, root)
    example = next((name for name in ENV_EXAMPLES if (base / name).is_file()), None)
    commands = list(stage.get("commands") or [])
    step = f"cp -n {example} .env"
    if example is None or step in commands:
        return None
    return Repair(
        _with(stage, commands=[step, *commands]),
        f"the stage needs a .env and the repository ships {example}: copy it first",
    )


def _package_manager(stage: dict[str, Any], text: str, root: Path) -> Repair | None:
    """pnpm/yarn called in an image that only has npm: corepack provides them."""
    match = _NOT_FOUND.search(text)
    commands = list(stage.get("commands") or [])
    if match is None or any("corepack enable" in c for c in commands):
        return None
    return Repair(
        _with(stage, commands=[COREPACK_ENABLE, *commands]),
        f"{match.group(1)} is not installed in the stage's image: enable it with corepack",
    )


def _npm_ci_without_lock(stage: dict[str, Any], text: str, root: Path) -> Repair | None:
    commands = list(stage.get("commands") or [])
    if _NPM_CI_LOCK.search(text) is None or not any(c.startswith("npm ci") for c in commands):
        return None
    fixed = ["npm install" + c[len("npm ci") :] if c.startswith("npm ci") else c for c in commands]
    return Repair(
        _with(stage, commands=fixed),
        "npm ci needs a lockfile the repository does not commit: install with npm install",
    )


def _missing_script(stage: dict[str, Any], text: str, root: Path) -> Repair | None:
    match = _MISSING_SCRIPT.search(text)
    if match is None:
        return None
    script = match.group(1)
    calls = {f"npm run {script}", f"npm run-script {script}"}
    if script == "test":
        calls |= {"npm test", "npm t"}
    commands = list(stage.get("commands") or [])
    kept = [c for c in commands if c.strip() not in calls]
    if len(kept) == len(commands):
        return None
    return Repair(
        _with(stage, commands=kept or ["true"]),
        f"package.json declares no {script!r} script: the stage no longer calls it",
    )


def _requirements_file(stage: dict[str, Any], text: str, root: Path) -> Repair | None:
    match = _REQUIREMENTS.search(text)
    if match is None:
        return None
    name = match.group(1)
    commands = list(stage.get("commands") or [])
    kept = [c for c in commands if not (c.startswith("pip install") and name in c)]
    if len(kept) == len(commands):
        return None
    return Repair(
        _with(stage, commands=kept or ["true"]),
        f"the repository has no {name}: the stage no longer installs from it",
    )


_NO_SIGNATURES = re.compile(r"No compatible signature found in package metadata")


def _registry_signatures(stage: dict[str, Any], text: str, root: Path) -> Repair | None:
    """corepack checks the npm registry's signatures of the pnpm/yarn it downloads; a registry
    mirror that serves none fails every download: corepack is told to check none there."""
    env = dict(stage.get("environment") or {})
    if _NO_SIGNATURES.search(text) is None or env.get("COREPACK_INTEGRITY_KEYS") == "0":
        return None
    env["COREPACK_INTEGRITY_KEYS"] = "0"
    return Repair(
        _with(stage, environment=env),
        "the package registry serves no signatures for the package managers corepack "
        "downloads (a mirror): COREPACK_INTEGRITY_KEYS=0",
        shared_env=(("COREPACK_INTEGRITY_KEYS", "0"),),
        shared_by="corepack",
    )


def _pre_commit_hosts(stage: dict[str, Any], text: str, root: Path) -> Repair | None:
    """pre-commit clones its hook repositories from their git hosts; when the build network does
    not reach them, the stage runs the linters the config pins from the package registries."""
    commands = [str(c) for c in stage.get("commands") or []]
    if not hooks_unreachable(text) or not any(calls_pre_commit(c) for c in commands):
        return None
    config = RepoFiles(_workdir(stage, root)).text(".pre-commit-config.yaml")
    linters = configured_linters(config)
    if not linters:
        return None
    kept = [c for c in commands if not calls_pre_commit(c)]
    return Repair(
        _with(stage, commands=[*kept, *linters]),
        "pre-commit's hook repositories are on a host the build network does not reach: the "
        f"stage runs the linters its config pins from the package registries ({linters[0]})",
    )


def _nox_release(stage: dict[str, Any], text: str, root: Path) -> Repair | None:
    commands = [str(c) for c in stage.get("commands") or []]
    found = nox_release(commands, text, _workdir(stage, root))
    return Repair(_with(stage, commands=found[0]), found[1]) if found else None


def apply_repair(stages: list[dict[str, Any]], index: int, repair: Repair) -> None:
    """The repaired stage in place, and its shared variables in every other stage that calls
    the same tool (they would each fail the same way on the rerun)."""
    stages[index] = repair.stage
    if not repair.shared_env:
        return
    for at, stage in enumerate(stages):
        commands = [str(c.get("run") if isinstance(c, dict) else c) for c in stage["commands"]]
        if at == index or not any(repair.shared_by in c for c in commands):
            continue
        env = dict(stage.get("environment") or {})
        env.update(repair.shared_env)
        stages[at] = _with(stage, environment=env)


RULES: tuple[Rule, ...] = (
    _registry_signatures,
    _pre_commit_hosts,
    _nox_release,
    _package_manager,
    _npm_ci_without_lock,
    _missing_script,
    _requirements_file,
    _env_file,
    _module_path,
)


def repair_stage(
    stage: dict[str, Any], evidence: list[str], log_tail: str, root: Path
) -> Repair | None:
    """The first rule that knows what is wrong with `stage`, or None (not the pipeline's fault,
    or no rule knows it)."""
    text = "\n".join([*evidence, log_tail])
    for rule in RULES:
        repaired = rule(stage, text, root)
        if repaired is not None and repaired.stage != stage:
            return repaired
    return None
