"""Environment matching: images from declared versions, tools the images have, services,
matrices."""

from __future__ import annotations

from core.agent.images import COREPACK_ENABLE
from tests.agent.corpus.sample import SampleRepo, json_text, package_json

_GRADLE_74 = "distributionUrl=https\\://services.gradle.org/distributions/gradle-7.4.2-bin.zip\n"

ENVIRONMENTS: tuple[SampleRepo, ...] = (
    SampleRepo(
        "poetry-python-constraint",
        "fastapi",
        {
            "pyproject.toml": '[tool.poetry]\nname = "svc"\n[tool.poetry.dependencies]\n'
            'python = ">=3.9,!=3.12.*,<3.13"\nfastapi = "*"\n'
            '[tool.poetry.group.dev.dependencies]\npytest = "*"\n',
            "poetry.lock": "",
        },
        package_manager="poetry",
        expect={"image": "python:3.11", "cache_paths": ["~/.cache/pypoetry"]},
    ),
    SampleRepo(
        "node-nvmrc-engines",
        "express",
        {
            "package.json": package_json(
                {"express": "4"}, {"test": "node --test"}, engines={"node": ">=18 <21"}
            ),
            ".nvmrc": "v18.17.0\n",
        },
        package_manager="npm",
        expect={"image": "node:18.17.0", "install_command": "npm install"},
    ),
    SampleRepo(
        "yarn-berry-corepack",
        "react-vite",
        {
            "package.json": package_json(
                {"react": "18", "vite": "5"},
                {"build": "vite build", "test": "vitest run"},
                packageManager="yarn@4.1.0",
                engines={"node": "^20 || ^22"},
            ),
            "yarn.lock": "",
        },
        package_manager="yarn",
        expect={
            "image": "node:22",
            "install_command": f"{COREPACK_ENABLE} && yarn install --immutable",
        },
    ),
    SampleRepo(
        "rust-toolchain-pinned",
        "rust",
        {
            "Cargo.toml": '[package]\nname = "cli"\nversion = "0.1.0"\n',
            "Cargo.lock": "",
            "rust-toolchain.toml": '[toolchain]\nchannel = "1.75.0"\n',
        },
        package_manager="cargo",
        expect={"image": "rust:1.75.0"},
    ),
    SampleRepo(
        "gradle-wrapper-jdk17",
        "gradle",
        {
            "build.gradle": "plugins { id 'java' }\n",
            "gradlew": "#!/bin/sh\n",
            "gradle/wrapper/gradle-wrapper.properties": _GRADLE_74,
        },
        package_manager="gradle",
        expect={"image": "eclipse-temurin:17"},
    ),
    SampleRepo(
        "composer-php80",
        "php",
        {"composer.json": json_text({"require": {"php": ">=7.4 <8.1", "phpunit/phpunit": "^9"}})},
        package_manager="composer",
        expect={"image": "php:8.0-cli"},
    ),
    SampleRepo(
        "go-toolchain",
        "go",
        {"go.mod": "module example.com/svc\n\ngo 1.21\n\ntoolchain go1.22.5\n"},
        package_manager="go modules",
        expect={"image": "golang:1.22", "cache_paths": ["/go/pkg/mod", "~/.cache/go-build"]},
    ),
    SampleRepo(
        "ruby-bundler-cache",
        "ruby",
        {"Gemfile": "source 'https://rubygems.org'\nruby '3.2.2'\ngem 'rspec'\n"},
        package_manager="bundler",
        expect={"image": "ruby:3.2", "cache_paths": ["/usr/local/bundle"]},
    ),
    SampleRepo(
        "django-postgres-redis",
        "django",
        {
            "requirements.txt": "-r requirements/base.txt\n-e .\npytest-django\n",
            "requirements/base.txt": "Django>=4.2\npsycopg[binary]\nredis ; python_version>'3.8'\n",
            "manage.py": "",
            ".env.example": "DATABASE_URL=postgres://app:app@localhost:5432/app\n",
        },
        package_manager="pip",
        expect={
            "services": ["postgres:16", "redis:7"],
            "install_command": "pip install -r requirements.txt",
        },
    ),
    SampleRepo(
        "express-mongo-compose",
        "express",
        {
            "package.json": package_json({"express": "4", "mongoose": "8"}, {"test": "jest"}),
            "package-lock.json": "{}",
            "docker-compose.yml": "services:\n  mongo:\n    image: mongo:6\n",
        },
        package_manager="npm",
        expect={"services": ["mongo:6"]},
    ),
    SampleRepo(
        "tox-matrix-library",
        "python",
        {
            "pyproject.toml": '[project]\nname = "lib"\nrequires-python = ">=3.9"\n'
            '[project.optional-dependencies]\ntest = ["pytest"]\n',
            "tox.ini": "[tox]\nenvlist = py{39,310,311,312}, lint\n",
        },
        package_manager="pip",
        expect={"version_matrix": ["3.9", "3.10", "3.11", "3.12"], "image": "python:3.13"},
    ),
)
