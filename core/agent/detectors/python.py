"""Python apps: Django, FastAPI, Flask or plain Python; pip, Poetry or uv from the lockfile."""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import Any

from core.agent.repo_files import RepoFiles, join
from workflows.agent_models import AppDetection


def _python_deps(files: RepoFiles, base: str) -> tuple[set[str], dict[str, Any]]:
    names: set[str] = set()
    pyproject = files.toml(join(base, "pyproject.toml")) or {}
    project = pyproject.get("project") if isinstance(pyproject.get("project"), dict) else {}
    assert isinstance(project, dict)
    specs: list[str] = list(project.get("dependencies") or [])
    for group in (project.get("optional-dependencies") or {}).values():
        specs.extend(group)
    for group in (pyproject.get("dependency-groups") or {}).values():
        specs.extend(s for s in group if isinstance(s, str))
    poetry = (pyproject.get("tool") or {}).get("poetry") or {}
    names.update(str(k).lower() for k in (poetry.get("dependencies") or {}))
    names.update(str(k).lower() for k in (poetry.get("dev-dependencies") or {}))
    for group in (poetry.get("group") or {}).values():
        names.update(str(k).lower() for k in (group.get("dependencies") or {}))
    for req in ("requirements.txt", "requirements-dev.txt", "requirements/base.txt"):
        raw = files.text(join(base, req))
        if raw:
            specs.extend(line for line in raw.splitlines() if line and not line.startswith("#"))
    for spec in specs:
        match = re.match(r"\s*([A-Za-z0-9_.\-]+)", spec)
        if match:
            names.add(match.group(1).lower().replace("_", "-"))
    return names, pyproject


def _python_version(pinned: str | None, requires: str) -> str:
    """The CI image's Python: .python-version, else the newest one `requires-python` allows."""
    if pinned and re.match(r"^\s*3\.\d+", pinned):
        return ".".join(pinned.strip().split(".")[:2])
    upper = re.search(r"<\s*3\.(\d+)", requires)
    exact = re.search(r"(?:==|~=)\s*3\.(\d+)", requires)
    lower = re.search(r">=?\s*3\.(\d+)", requires)
    if exact:
        return f"3.{exact.group(1)}"
    if upper:
        return f"3.{int(upper.group(1)) - 1}"
    if lower and int(lower.group(1)) > 12:
        return f"3.{lower.group(1)}"
    return "3.12"


class PythonDetector:
    ecosystem = "python"

    def detect(self, files: RepoFiles, base: str) -> AppDetection | None:
        manifests = ("pyproject.toml", "requirements.txt", "setup.py", "Pipfile", "manage.py")
        if not any(files.exists(join(base, m)) for m in manifests):
            return None
        deps, pyproject = _python_deps(files, base)
        tool = pyproject.get("tool") or {}
        evidence = [m for m in manifests if files.exists(join(base, m))]
        if files.exists(join(base, "uv.lock")):
            manager, install = "uv", "pip install uv && uv sync --frozen"
            run = "uv run "
        elif files.exists(join(base, "poetry.lock")) or "poetry" in tool:
            manager, install = "poetry", "pip install poetry && poetry install --no-interaction"
            run = "poetry run "
        elif files.exists(join(base, "requirements.txt")):
            manager, install, run = "pip", "pip install -r requirements.txt", ""
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
            test: str | None = f"{run}pytest"
        elif framework == "django":
            test = f"{run}python manage.py test"
        elif files.is_dir(join(base, "tests")):
            test = f"{run}python -m unittest discover -s tests"
        else:
            test = None
        if "ruff" in deps or "ruff" in tool or files.exists(join(base, "ruff.toml")):
            lint: str | None = f"{run}ruff check ."
        elif "flake8" in deps or files.exists(join(base, ".flake8")):
            lint = f"{run}flake8"
        else:
            lint = None
        version = _python_version(
            files.text(join(base, ".python-version")),
            str((pyproject.get("project") or {}).get("requires-python") or ""),
        )
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
            image=f"python:{version}",
            cache_paths=["~/.cache/pip"] if manager == "pip" else [f"~/.cache/{manager}"],
            has_dockerfile=files.exists(join(base, "Dockerfile")),
            estimated_build_seconds=seconds + min(len(deps), 100),
            evidence=evidence,
        )
