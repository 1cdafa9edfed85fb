"""Python apps: Django, FastAPI, Flask or plain Python; pip, Poetry or uv from the lockfile."""

from __future__ import annotations

import shlex
from pathlib import PurePosixPath

from core.agent.images import cache_paths, python_image
from core.agent.python_requirements import python_dependencies
from core.agent.repo_files import RepoFiles, join
from core.agent.versions import python_version
from workflows.agent_models import AppDetection

# Console scripts named otherwise than their package.
CONSOLE_SCRIPTS = {
    "django": ("django-admin",),
    "pytest": ("pytest", "py.test"),
    "black": ("black",),
}


def _console_scripts(deps: set[str]) -> set[str]:
    """What pip puts on PATH for these packages (most name their command after themselves)."""
    return {script for dep in deps for script in CONSOLE_SCRIPTS.get(dep, (dep,))}


def _tool(run: str, module: str, args: str = "") -> str:
    """A dependency's command: through the manager's `run`, or as a module of the image's
    Python when pip installed it (the image has no such executable; cwd lands on sys.path)."""
    return f"{run}{module}{args}" if run else f"python -m {module}{args}"


class PythonDetector:
    ecosystem = "python"

    def detect(self, files: RepoFiles, base: str) -> AppDetection | None:
        manifests = ("pyproject.toml", "requirements.txt", "setup.py", "Pipfile", "manage.py")
        if not any(files.exists(join(base, m)) for m in manifests):
            return None
        deps, pyproject, req_files = python_dependencies(files, base)
        tool = pyproject.get("tool") or {}
        evidence = [m for m in manifests if files.exists(join(base, m))]
        if files.exists(join(base, "uv.lock")):
            manager, install = "uv", "pip install uv && uv sync --frozen"
            run = "uv run "
        elif files.exists(join(base, "poetry.lock")) or "poetry" in tool:
            manager, install = "poetry", "pip install poetry && poetry install --no-interaction"
            run = "poetry run "
        elif files.exists(join(base, "Pipfile")) and not req_files:
            locked = files.exists(join(base, "Pipfile.lock"))
            manager, run = "pipenv", "pipenv run "
            install = "pip install pipenv && pipenv install --dev" + (" --deploy" if locked else "")
        elif req_files:
            manager, run = "pip", ""
            install = "pip install " + " ".join(f"-r {shlex.quote(r)}" for r in req_files)
        else:
            manager, install, run = "pip", "pip install .", ""
        if manager != "pip":
            evidence.append(f"{manager} lockfile")

        if "django" in deps or files.exists(join(base, "manage.py")):
            framework, confidence, seconds = "django", 0.95 if "django" in deps else 0.8, 90
        elif "fastapi" in deps:
            framework, confidence, seconds = "fastapi", 0.9, 60
        elif "flask" in deps:
            framework, confidence, seconds = "flask", 0.9, 50
        else:
            framework, confidence, seconds = "python", 0.6, 45
        if framework != "python":
            evidence.append(f"dependency {framework}")

        uses_pytest = "pytest" in deps or any(d.startswith("pytest-") for d in deps)
        if uses_pytest or files.exists(join(base, "pytest.ini")) or "pytest" in tool:
            test: str | None = _tool(run, "pytest")
        elif framework == "django":
            test = f"{run}python manage.py test"
        elif files.is_dir(join(base, "tests")):
            test = f"{run}python -m unittest discover -s tests"
        else:
            test = None
        if "ruff" in deps or "ruff" in tool or files.exists(join(base, "ruff.toml")):
            lint: str | None = _tool(run, "ruff", " check .")
        elif "flake8" in deps or files.exists(join(base, ".flake8")):
            lint = _tool(run, "flake8")
        else:
            lint = None
        version = python_version(files, base)
        image = python_image(version.version)
        if version.source:
            evidence.append(f"Python {version.version} from {version.source}")
        evidence.extend(version.notes)
        build: str | None = None
        if framework == "django":
            build = f"{run}python manage.py collectstatic --noinput"
        elif "build-system" in pyproject:
            build = {"uv": "uv build", "poetry": "poetry build"}.get(
                manager, "pip install build && python -m build"
            )
        return AppDetection(
            path=base or ".",
            name=str(
                (pyproject.get("project") or {}).get("name") or PurePosixPath(base).name or "app"
            ),
            language="python",
            framework=framework,
            confidence=confidence,
            package_manager=manager,
            install_command=install,
            lint_command=lint,
            test_command=test,
            build_command=build,
            output_directory="dist" if build and framework != "django" else None,
            image=image,
            cache_paths=cache_paths(image, manager),
            has_dockerfile=files.exists(join(base, "Dockerfile")),
            provided_tools=sorted(_console_scripts(deps)) if manager == "pip" else [],
            estimated_build_seconds=seconds + min(len(deps), 100),
            evidence=evidence,
        )
