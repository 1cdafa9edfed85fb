"""Repositories whose own CI or task files declare the commands (GitHub Actions, Makefiles, task
runners): the generator keeps what they run."""

from __future__ import annotations

import json

from tests.agent.corpus.sample import SampleRepo, package_json

GHA_CI = """name: ci
on: [push]
jobs:
  checks:
    runs-on: ubuntu-latest
    strategy:
      matrix:
        python: ["3.11", "3.12"]
    steps:
      - uses: actions/checkout@v4
      - uses: actions/setup-python@v5
        with:
          python-version: ${{ matrix.python }}
      - run: pip install poetry
      - run: poetry install
      - name: lint
        run: |
          poetry run ruff check .
          poetry run mypy src
      - run: poetry run pytest tests/unit -q
      - run: poetry run pytest tests/e2e --browser chromium
      - run: poetry run pytest --cov=${{ matrix.python }}
      - run: docker build -t app .
  publish:
    runs-on: ubuntu-latest
    steps:
      - run: poetry publish --build
"""

DECLARED_COMMANDS: tuple[SampleRepo, ...] = (
    SampleRepo(
        "flask-github-actions",
        "flask",
        {
            "pyproject.toml": '[tool.poetry]\nname = "svc"\n[tool.poetry.dependencies]\n'
            'python = "^3.12"\nflask = "^3.0"\n[tool.poetry.group.dev.dependencies]\n'
            'pytest = "*"\nruff = "*"\nmypy = "*"\n'
            '[build-system]\nrequires = ["poetry-core"]\n'
            'build-backend = "poetry.core.masonry.api"\n',
            "poetry.lock": "",
            ".github/workflows/ci.yml": GHA_CI,
        },
        package_manager="poetry",
        expect={
            "test_command": "poetry run pytest tests/unit -q",
            "lint_command": "poetry run ruff check . && poetry run mypy src",
            "build_command": None,
            "command_sources": {
                "test": ".github/workflows/ci.yml",
                "lint": ".github/workflows/ci.yml",
            },
        },
    ),
    SampleRepo(
        "go-makefile",
        "go",
        {
            "go.mod": "module example.com/acme/svc\n\ngo 1.22\n",
            "go.sum": "",
            "main.go": "package main\n",
            "Makefile": ".PHONY: test lint build\n"
            "test: vet\n\tgo test -race ./...\n"
            "vet:\n\tgo vet ./...\n"
            "lint:\n\tgolangci-lint run\n"
            "build:\n\tgo build -o bin/svc .\n"
            "image:\n\tdocker build -t svc .\n",
        },
        package_manager="go modules",
        expect={"test_command": "make test", "build_command": "make build"},
    ),
    SampleRepo(
        "django-runtests",
        "django",
        {
            "requirements.txt": "Django==5.0\n",
            "manage.py": "",
            "runtests.py": "import django\n",
            ".env.example": "SECRET_KEY=dev\n",
        },
        package_manager="pip",
        expect={
            "test_command": "python runtests.py",
            "command_sources": {"test": "runtests.py"},
            "setup_commands": ["cp -n .env.example .env"],
        },
    ),
    SampleRepo(
        "vite-netlify",
        "react-vite",
        {
            "package.json": package_json(
                {"react": "18.3.0", "vite": "5.0.0"},
                {"build": "vite build", "build:netlify": "vite build && node sitemap.js"},
            ),
            "package-lock.json": "{}",
            "vite.config.ts": "export default {}",
            "netlify.toml": '[build]\ncommand = "npm run build:netlify"\npublish = "dist-site"\n',
        },
        package_manager="npm",
        output_directory="dist-site",
        expect={"build_command": "npm run build:netlify"},
    ),
    SampleRepo(
        "vite-dockerfile-nginx",
        "react-vite",
        {
            "package.json": package_json(
                {"react": "18.3.0", "vite": "5.0.0"}, {"web:bundle": "vite build"}
            ),
            "package-lock.json": "{}",
            "vite.config.ts": "export default {}",
            "Dockerfile": "FROM node:20 AS build\nWORKDIR /app\nCOPY . .\n"
            "RUN npm ci && npm run web:bundle\n"
            "FROM nginx:1.27\nCOPY --from=build /app/public-dist /usr/share/nginx/html\n",
        },
        package_manager="npm",
        output_directory="public-dist",
        expect={"build_command": "npm run web:bundle"},
    ),
    SampleRepo(
        "rust-justfile",
        "rust",
        {
            "Cargo.toml": '[package]\nname = "tool"\nversion = "0.1.0"\n',
            "Cargo.lock": "",
            "src/main.rs": "",
            "justfile": "test:\n    cargo test --all-features\n"
            "lint:\n    cargo clippy -- -D warnings\n"
            "build:\n    cargo build --release --locked\n",
        },
        package_manager="cargo",
        expect={
            "test_command": "cargo test --all-features",
            "lint_command": "rustup component add clippy && cargo clippy -- -D warnings",
            "build_command": "cargo build --release --locked",
        },
    ),
    SampleRepo(
        "express-gitlab",
        "express",
        {
            "package.json": package_json(
                {"express": "4.19.0", "jest": "29.0.0"},
                {"test": "jest", "test:ci": "jest --ci --runInBand", "start": "node ."},
            ),
            "package-lock.json": "{}",
            ".gitlab-ci.yml": "stages: [test]\n"
            "unit:\n  stage: test\n  script:\n    - npm ci\n    - npm run test:ci\n"
            "pages:\n  script:\n    - npm run docs\n",
        },
        package_manager="npm",
        expect={"test_command": "npm run test:ci"},
    ),
    SampleRepo(
        "python-circleci",
        "python",
        {
            "requirements.txt": "requests\npytest\n",
            ".circleci/config.yml": "version: 2.1\njobs:\n  test:\n"
            "    working_directory: ~/project\n    steps:\n      - checkout\n"
            "      - run: pip install -r requirements.txt\n"
            "      - run:\n          command: pytest -x tests\n",
        },
        package_manager="pip",
        expect={"test_command": "pytest -x tests"},
    ),
    SampleRepo(
        "ruby-travis",
        "ruby",
        {
            "Gemfile": "source 'https://rubygems.org'\ngem 'rspec'\n",
            "Gemfile.lock": "",
            ".travis.yml": "language: ruby\nscript:\n  - bundle exec rake spec\n",
        },
        package_manager="bundler",
        expect={"test_command": "bundle exec rake spec"},
    ),
    SampleRepo(
        "laravel-sqlite",
        "laravel",
        {
            "composer.json": json.dumps(
                {"name": "acme/app", "require": {"laravel/framework": "^11"}}
            ),
            "composer.lock": "{}",
            "artisan": "",
            ".env.example": "APP_KEY=\nDB_CONNECTION=sqlite\n",
        },
        package_manager="composer",
        expect={
            "setup_commands": [
                "cp -n .env.example .env",
                "php artisan key:generate --force",
                "touch database/database.sqlite && php artisan migrate --force",
            ]
        },
    ),
)
