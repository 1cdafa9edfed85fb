"""Node.js apps: framework from the dependencies and config files, package manager from the
lockfile or the packageManager field."""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import Any

from core.agent.framework_outputs import declared_output
from core.agent.images import COREPACK_ENABLE, cache_paths, node_image
from core.agent.js_workspaces import root_of, runner_exec
from core.agent.repo_files import RepoFiles, join
from core.agent.scripts import e2e_setup, plan_scripts
from core.agent.versions import node_version
from core.agent.yarn_classic import with_yarn
from workflows.agent_models import AppDetection

NODE_FRAMEWORKS: tuple[tuple[str, tuple[str, ...], str | None, int], ...] = (
    # framework, any-of dependencies, output directory, base build seconds
    ("nextjs", ("next",), ".next", 150),
    ("nuxt", ("nuxt", "nuxt3"), ".output", 140),
    ("remix", ("@remix-run/react", "@remix-run/node", "@remix-run/dev"), "build", 110),
    ("gatsby", ("gatsby",), "public", 180),
    ("sveltekit", ("@sveltejs/kit",), "build", 90),
    ("astro", ("astro",), "dist", 80),
    ("angular", ("@angular/core",), "dist", 160),
    ("vue", ("vue",), "dist", 80),
    ("svelte", ("svelte",), "dist", 70),
    ("react-cra", ("react-scripts",), "build", 120),
    ("react-vite", ("react",), "dist", 80),
    ("express", ("express",), None, 45),
)
NODE_CONFIG_FILES = {
    "nextjs": ("next.config.js", "next.config.mjs", "next.config.ts"),
    "nuxt": ("nuxt.config.ts", "nuxt.config.js"),
    "remix": ("remix.config.js", "remix.config.mjs"),
    "gatsby": ("gatsby-config.js", "gatsby-config.ts"),
    "sveltekit": ("svelte.config.js",),
    "astro": ("astro.config.mjs", "astro.config.ts", "astro.config.js"),
    "angular": ("angular.json",),
    "vue": ("vite.config.ts", "vite.config.js", "vue.config.js"),
    "svelte": ("vite.config.ts", "vite.config.js", "svelte.config.js"),
    "react-vite": ("vite.config.ts", "vite.config.js"),
}


NODE_MANAGERS = ("npm", "pnpm", "yarn", "bun")


def _declared_manager(pkg: dict[str, Any]) -> str:
    """The manager `packageManager` names (`pnpm@9.1.0`), or "" when the field is absent or
    names none Forgeline knows (corepack would refuse it too)."""
    declared = pkg.get("packageManager")
    if not isinstance(declared, str):
        return ""
    name = declared.split("@", 1)[0].strip()
    return name if name in NODE_MANAGERS else ""


def _node_package_manager(files: RepoFiles, base: str, pkg: dict[str, Any]) -> tuple[str, bool]:
    """(manager, has lockfile): the packageManager field's manager, locked when its own lockfile
    is there; else the first lockfile present; else npm without one."""
    declared = _declared_manager(pkg)
    lockfiles = (
        ("bun", ("bun.lockb", "bun.lock")),
        ("pnpm", ("pnpm-lock.yaml",)),
        ("yarn", ("yarn.lock",)),
        ("npm", ("package-lock.json", "npm-shrinkwrap.json")),
    )
    present = [m for m, names in lockfiles if any(files.exists(join(base, n)) for n in names)]
    if declared:
        return declared, declared in present
    if present:
        return present[0], True
    return "npm", False


def _yarn_berry(files: RepoFiles, base: str) -> bool:
    """Yarn 2+: a .yarnrc.yml, or packageManager naming a release from 2 on."""
    declared = str((files.json(join(base, "package.json")) or {}).get("packageManager") or "")
    return files.exists(join(base, ".yarnrc.yml")) or bool(re.match(r"yarn@[2-9]", declared))


def _node_install(manager: str, locked: bool, files: RepoFiles, base: str) -> str:
    if manager == "pnpm":
        return (
            f"{COREPACK_ENABLE} && pnpm install --frozen-lockfile"
            if locked
            else f"{COREPACK_ENABLE} && pnpm install"
        )
    if manager == "yarn":
        declared = _declared_manager(files.json(join(base, "package.json")) or {})
        if _yarn_berry(files, base):
            return f"{COREPACK_ENABLE} && yarn install" + (" --immutable" if locked else "")
        # A declared Yarn 1 release runs through corepack too (the image's own may differ).
        install = "yarn install --frozen-lockfile" if locked else "yarn install"
        return f"{COREPACK_ENABLE} && {install}" if declared else with_yarn(install)
    if manager == "bun":
        return "bun install --frozen-lockfile" if locked else "bun install"
    return "npm ci" if locked else "npm install"


def _node_run(manager: str, script: str) -> str:
    if manager == "npm":
        return "npm test" if script == "test" else f"npm run {script}"
    if manager == "yarn":
        return f"yarn {script}"
    return f"{manager} run {script}"


def _node_image(files: RepoFiles, base: str, pkg: dict[str, Any], manager: str, root: str) -> str:
    """volta, .nvmrc, .node-version or engines.node resolved by core.agent.versions."""
    if manager == "bun":
        return "oven/bun:1"
    return node_image(node_version(files, base, pkg, root).version)


def _node_cache(manager: str) -> list[str]:
    """The download cache where the image keeps it (core.agent.images), and node_modules."""
    image = "oven/bun:1" if manager == "bun" else "node:lts"
    return [*cache_paths(image, manager), "node_modules"]


def _manager_of(files: RepoFiles, base: str, pkg: dict[str, Any]) -> tuple[str, bool, str]:
    """(manager, locked, where the lockfile lives): a workspace member inherits its root's."""
    root = root_of(files, base)
    if root is not None:
        root_pkg = files.json(join(root, "package.json")) or {}
        manager, locked = _node_package_manager(files, root, root_pkg)
        return manager, locked, root
    manager, locked = _node_package_manager(files, base, pkg)
    return manager, locked, base


def _node_setup(files: RepoFiles, base: str, deps: dict[str, Any], manager: str) -> list[str]:
    """Steps the tests need after the install: an .env from its example, a generated client."""
    steps: list[str] = []
    for example in (".env.example", ".env.sample", ".env.dist", ".env.template"):
        if files.exists(join(base, example)) and not files.exists(join(base, ".env")):
            steps.append(f"cp -n {example} .env")
            break
    if "prisma" in deps or "@prisma/client" in deps:
        steps.append(f"{runner_exec(manager)} prisma generate")
    return steps


class NodeDetector:
    ecosystem = "node"

    def detect(self, files: RepoFiles, base: str) -> AppDetection | None:
        pkg = files.json(join(base, "package.json"))
        if pkg is None:
            return None
        deps: dict[str, Any] = {}
        for key in ("dependencies", "devDependencies", "peerDependencies"):
            section = pkg.get(key)
            if isinstance(section, dict):
                deps.update(section)
        raw_scripts = pkg.get("scripts")
        scripts: dict[str, str] = (
            {str(k): v for k, v in raw_scripts.items() if isinstance(v, str)}
            if isinstance(raw_scripts, dict)
            else {}
        )
        manager, locked, lock_dir = _manager_of(files, base, pkg)
        evidence = [f"{join(base, 'package.json')}"]
        if locked:
            evidence.append(
                f"{manager} lockfile" + (" of the workspace" if lock_dir != base else "")
            )

        framework, output, seconds, confidence = "node", None, 40, 0.6
        for name, markers, out, secs in NODE_FRAMEWORKS:
            hit = next((m for m in markers if m in deps), None)
            if hit is None:
                continue
            framework, output, seconds = name, out, secs
            configs = [c for c in NODE_CONFIG_FILES.get(name, ()) if files.exists(join(base, c))]
            confidence = 0.95 if configs else 0.85
            evidence.append(f"dependency {hit}")
            evidence.extend(f"config {c}" for c in configs)
            break
        if framework == "react-vite" and "vite" not in deps:
            framework, confidence = "react", 0.7
        if framework == "sveltekit" and "@sveltejs/adapter-static" not in deps:
            output = ".svelte-kit"
        declared = declared_output(files, base, framework)
        if declared:
            output = declared
            evidence.append(f"output {declared} from the {framework} config")

        plan = plan_scripts(scripts)
        evidence.extend(plan.notes)
        if plan.build and plan.output_directory:
            output = plan.output_directory
        run_exec = runner_exec(manager)
        e2e_setup_steps = e2e_setup(plan.e2e_tools, run_exec)
        seconds += min(len(deps), 200) // 2
        return AppDetection(
            path=base or ".",
            name=str(pkg.get("name") or PurePosixPath(base).name or "app"),
            language="javascript" if "typescript" not in deps else "typescript",
            framework=framework,
            confidence=confidence,
            package_manager=manager,
            install_command=_node_install(manager, locked, files, lock_dir),
            lint_command=_node_run(manager, plan.lint) if plan.lint else None,
            test_command=_node_run(manager, plan.unit) if plan.unit else None,
            build_command=_node_run(manager, plan.build) if plan.build else None,
            output_directory=output if plan.build else None,
            image=_node_image(files, base, pkg, manager, lock_dir),
            cache_paths=_node_cache(
                "yarn-berry" if manager == "yarn" and _yarn_berry(files, lock_dir) else manager
            ),
            has_dockerfile=files.exists(join(base, "Dockerfile")),
            estimated_build_seconds=seconds,
            evidence=evidence,
            setup_commands=_node_setup(files, base, deps, manager),
            e2e_test_command=_node_run(manager, plan.e2e) if plan.e2e else None,
            e2e_setup_commands=e2e_setup_steps,
        )
