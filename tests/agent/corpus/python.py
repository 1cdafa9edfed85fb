"""Python frameworks, each with its own package manager (pip, poetry, uv)."""

from __future__ import annotations

from tests.agent.corpus.sample import SampleRepo

PYTHON: tuple[SampleRepo, ...] = (
    SampleRepo(
        "django-pip",
        "django",
        {
            "requirements.txt": "Django==5.0\npytest-django\n",
            "manage.py": "",
            "app/__init__.py": "",
        },
        package_manager="pip",
    ),
    SampleRepo(
        "flask-poetry",
        "flask",
        {
            "pyproject.toml": '[tool.poetry]\nname = "svc"\n[tool.poetry.dependencies]\n'
            'python = "^3.12"\nflask = "^3.0"\n'
            '[tool.poetry.group.dev.dependencies]\npytest = "*"\n',
            "poetry.lock": "",
        },
        package_manager="poetry",
    ),
    SampleRepo(
        "fastapi-uv",
        "fastapi",
        {
            "pyproject.toml": '[project]\nname = "api"\nrequires-python = ">=3.12"\n'
            'dependencies = ["fastapi>=0.110", "uvicorn"]\n[dependency-groups]\n'
            'dev = ["pytest", "ruff"]\n',
            "uv.lock": "",
        },
        package_manager="uv",
    ),
)
