"""Fixture corpus: one tiny repository per framework family, written to disk by tests and bench."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path


def _pkg(deps: dict[str, str], scripts: dict[str, str] | None = None, **extra: object) -> str:
    body: dict[str, object] = {"name": extra.pop("name", "app"), "version": "1.0.0"}
    body["scripts"] = scripts or {"build": "build", "test": "test", "lint": "lint"}
    body["dependencies"] = deps
    body.update(extra)
    return json.dumps(body, indent=2)


@dataclass(frozen=True)
class SampleRepo:
    name: str
    framework: str
    files: dict[str, str]
    package_manager: str | None = None
    monorepo: bool = False
    app_frameworks: tuple[str, ...] = field(default_factory=tuple)
    output_directory: str | None = None
    # Attributes the primary app must have (test_command, setup_commands, ...).
    expect: dict[str, object] = field(default_factory=dict)


CORPUS: tuple[SampleRepo, ...] = (
    SampleRepo(
        "static-html",
        "static",
        {"index.html": "<!doctype html><html><head><title>x</title></head><body></body></html>"},
        output_directory=".",
    ),
    SampleRepo(
        "nextjs-npm",
        "nextjs",
        {
            "package.json": _pkg({"next": "14.2.0", "react": "18.3.0"}),
            "package-lock.json": "{}",
            "next.config.js": "module.exports = {}",
        },
        package_manager="npm",
        output_directory=".next",
    ),
    SampleRepo(
        "nextjs-export-pnpm",
        "nextjs",
        {
            "package.json": _pkg({"next": "14.2.0", "react": "18.3.0"}),
            "pnpm-lock.yaml": "lockfileVersion: '9.0'\n",
            "next.config.mjs": "export default { output: 'export' }",
        },
        package_manager="pnpm",
        output_directory="out",
    ),
    SampleRepo(
        "react-vite-yarn",
        "react-vite",
        {
            "package.json": _pkg({"react": "18.3.0", "vite": "5.0.0"}),
            "yarn.lock": "# yarn lockfile v1\n",
            "vite.config.ts": "export default {}",
        },
        package_manager="yarn",
        output_directory="dist",
    ),
    SampleRepo(
        "react-cra",
        "react-cra",
        {
            "package.json": _pkg({"react": "18.2.0", "react-scripts": "5.0.1"}),
            "package-lock.json": "{}",
        },
        package_manager="npm",
        output_directory="build",
    ),
    SampleRepo(
        "vue-vite-bun",
        "vue",
        {
            "package.json": _pkg({"vue": "3.4.0", "vite": "5.0.0"}),
            "bun.lockb": "",
            "vite.config.ts": "",
        },
        package_manager="bun",
        output_directory="dist",
    ),
    SampleRepo(
        "nuxt",
        "nuxt",
        {"package.json": _pkg({"nuxt": "3.11.0"}), "nuxt.config.ts": "", "package-lock.json": "{}"},
        package_manager="npm",
        output_directory=".output",
    ),
    SampleRepo(
        "angular",
        "angular",
        {
            "package.json": _pkg({"@angular/core": "17.0.0"}),
            "angular.json": json.dumps({"projects": {"shop": {}}}),
            "package-lock.json": "{}",
        },
        package_manager="npm",
        output_directory="dist/shop",
    ),
    SampleRepo(
        "svelte",
        "svelte",
        {"package.json": _pkg({"svelte": "4.2.0", "vite": "5.0.0"}), "package-lock.json": "{}"},
        package_manager="npm",
    ),
    SampleRepo(
        "sveltekit",
        "sveltekit",
        {
            "package.json": _pkg({"@sveltejs/kit": "2.0.0", "svelte": "4.2.0"}),
            "svelte.config.js": "",
            "pnpm-lock.yaml": "lockfileVersion: '9.0'\n",
        },
        package_manager="pnpm",
    ),
    SampleRepo(
        "astro",
        "astro",
        {
            "package.json": _pkg({"astro": "4.0.0"}),
            "astro.config.mjs": "",
            "package-lock.json": "{}",
        },
        package_manager="npm",
        output_directory="dist",
    ),
    SampleRepo(
        "gatsby",
        "gatsby",
        {"package.json": _pkg({"gatsby": "5.0.0", "react": "18.0.0"}), "yarn.lock": ""},
        package_manager="yarn",
        output_directory="public",
    ),
    SampleRepo(
        "remix",
        "remix",
        {
            "package.json": _pkg({"@remix-run/react": "2.0.0", "react": "18.0.0"}),
            "package-lock.json": "{}",
        },
        package_manager="npm",
        output_directory="build",
    ),
    SampleRepo(
        "express",
        "express",
        {
            "package.json": _pkg({"express": "4.19.0"}, {"test": "node --test", "start": "node ."}),
            "package-lock.json": "{}",
        },
        package_manager="npm",
    ),
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
    SampleRepo(
        "go-service",
        "go",
        {
            "go.mod": "module example.com/acme/svc\n\ngo 1.22\n",
            "go.sum": "",
            "main.go": "package main\n",
        },
        package_manager="go modules",
        output_directory="bin",
    ),
    SampleRepo(
        "rust-cli",
        "rust",
        {
            "Cargo.toml": '[package]\nname = "tool"\nversion = "0.1.0"\n',
            "Cargo.lock": "",
            "src/main.rs": "",
        },
        package_manager="cargo",
        output_directory="target/release",
    ),
    SampleRepo(
        "java-maven",
        "spring-boot",
        {
            "pom.xml": "<project><parent><artifactId>spring-boot-starter-parent</artifactId>"
            "</parent></project>"
        },
        package_manager="maven",
        output_directory="target",
    ),
    SampleRepo(
        "java-gradle",
        "gradle",
        {
            "build.gradle": "plugins { id 'java' }\n",
            "gradlew": "#!/bin/sh\n",
            "settings.gradle": "",
        },
        package_manager="gradle",
        output_directory="build/libs",
    ),
    SampleRepo(
        "rails",
        "rails",
        {
            "Gemfile": "source 'https://rubygems.org'\ngem 'rails', '~> 7.1'\ngem 'rubocop'\n",
            "Gemfile.lock": "",
            "config/application.rb": "",
            ".ruby-version": "3.3.0\n",
        },
        package_manager="bundler",
    ),
    SampleRepo(
        "laravel",
        "laravel",
        {
            "composer.json": json.dumps(
                {
                    "name": "acme/shop",
                    "require": {"laravel/framework": "^11.0"},
                    "require-dev": {"laravel/pint": "^1.0"},
                }
            ),
            "artisan": "",
            "composer.lock": "{}",
        },
        package_manager="composer",
    ),
    SampleRepo(
        "dockerfile-only",
        "dockerfile",
        {"Dockerfile": 'FROM alpine:3.20\nCMD ["echo", "hi"]\n', "entrypoint.sh": ""},
    ),
    SampleRepo(
        "monorepo-workspaces",
        "monorepo",
        {
            "package.json": json.dumps(
                {"name": "root", "private": True, "workspaces": ["apps/*", "packages/*"]}
            ),
            "package-lock.json": "{}",
            "apps/web/package.json": _pkg({"next": "14.0.0"}, name="web"),
            "apps/admin/package.json": _pkg({"react": "18.0.0", "vite": "5.0.0"}, name="admin"),
            "packages/ui/package.json": _pkg({"react": "18.0.0"}, {"test": "vitest"}, name="ui"),
        },
        package_manager="npm",
        monorepo=True,
        app_frameworks=("nextjs", "react-vite"),
    ),
    SampleRepo(
        "monorepo-polyglot",
        "monorepo",
        {
            "frontend/package.json": _pkg({"vue": "3.0.0", "vite": "5.0.0"}, name="frontend"),
            "frontend/package-lock.json": "{}",
            "backend/requirements.txt": "fastapi\npytest\n",
        },
        monorepo=True,
        app_frameworks=("vue", "fastapi"),
    ),
)


# One layout per generator capability; each is also part of CORPUS (detected and validated).
SCRIPT_SEMANTICS: tuple[SampleRepo, ...] = (
    SampleRepo(
        "node-e2e-test-script",
        "react-vite",
        {
            "package.json": _pkg(
                {"react": "18.3.0", "vite": "5.0.0", "@playwright/test": "1.45.0"},
                {
                    "test": "playwright test",
                    "test:unit": "vitest run",
                    "build:prod": "vite build --outDir site",
                    "lint": "eslint . --fix",
                    "lint:check": "eslint .",
                },
            ),
            "package-lock.json": "{}",
            "vite.config.ts": "export default {}",
            ".env.example": "API_URL=http://localhost\n",
        },
        package_manager="npm",
        output_directory="site",
        expect={
            "test_command": "npm run test:unit",
            "e2e_test_command": "npm test",
            "e2e_setup_commands": ["npx playwright install --with-deps"],
            "build_command": "npm run build:prod",
            "lint_command": "npm run lint:check",
            "setup_commands": ["cp -n .env.example .env"],
        },
    ),
    SampleRepo(
        "remix-prisma-sqlite",
        "remix",
        {
            "package.json": _pkg(
                {"@remix-run/react": "2.0.0", "@prisma/client": "5.0.0", "prisma": "5.0.0"},
                {
                    "build": "remix build",
                    "test": "vitest",
                    "test:e2e:dev": "start-server-and-test dev 3000 'npx cypress open'",
                    "test:e2e:run": "start-server-and-test start 8811 'npx cypress run'",
                },
            ),
            ".env.example": 'DATABASE_URL="file:./data.db?connection_limit=1"\n',
            "prisma/schema.prisma": 'datasource db {\n  provider = "sqlite"\n'
            '  url      = env("DATABASE_URL")\n}\n',
            "prisma/migrations/20240101_init/migration.sql": "CREATE TABLE x (id int);\n",
        },
        package_manager="npm",
        output_directory="build",
        expect={
            "test_command": "npm test",
            "e2e_test_command": "npm run test:e2e:run",
            "e2e_setup_commands": ["npx cypress install"],
            "setup_commands": [
                "cp -n .env.example .env",
                "npx prisma generate",
                "npx prisma migrate deploy",
            ],
        },
    ),
    SampleRepo(
        "node-placeholder-test",
        "node",
        {
            "package.json": _pkg(
                {"typescript": "5.4.0"},
                {
                    "test": 'echo "Error: no test specified" && exit 1',
                    "compile": "tsc -p .",
                    "watch": "tsc -w",
                },
            ),
            "yarn.lock": "",
        },
        package_manager="yarn",
        expect={"test_command": None, "build_command": "yarn compile", "lint_command": None},
    ),
    SampleRepo(
        "node-composite-test",
        "express",
        {
            "package.json": _pkg(
                {"express": "4.19.0", "cypress": "13.0.0", "jest": "29.0.0"},
                {
                    "test": "npm run test:unit && npm run test:e2e",
                    "test:unit": "jest --ci",
                    "test:e2e": "start-server-and-test start 3000 'cypress run'",
                    "start": "node server.js",
                    "test:watch": "jest --watch",
                },
            ),
            "pnpm-lock.yaml": "lockfileVersion: '9.0'\n",
        },
        package_manager="pnpm",
        expect={
            "test_command": "pnpm run test:unit",
            "e2e_test_command": "pnpm run test:e2e",
            "e2e_setup_commands": ["pnpm exec cypress install"],
        },
    ),
    SampleRepo(
        "angular-application-builder",
        "angular",
        {
            "package.json": _pkg({"@angular/core": "18.0.0"}),
            "angular.json": json.dumps(
                {
                    "projects": {
                        "admin": {
                            "architect": {
                                "build": {
                                    "builder": "@angular-devkit/build-angular:application",
                                    "options": {"outputPath": "dist/admin-ui"},
                                }
                            }
                        }
                    }
                }
            ),
            "package-lock.json": "{}",
        },
        package_manager="npm",
        output_directory="dist/admin-ui/browser",
    ),
    SampleRepo(
        "sveltekit-static-pages",
        "sveltekit",
        {
            "package.json": _pkg({"@sveltejs/kit": "2.0.0", "@sveltejs/adapter-static": "3.0"}),
            "svelte.config.js": "import adapter from '@sveltejs/adapter-static';\n"
            "export default { kit: { adapter: adapter({ pages: 'public' }) } };\n",
            "package-lock.json": "{}",
        },
        package_manager="npm",
        output_directory="public",
    ),
    SampleRepo(
        "astro-outdir",
        "astro",
        {
            "package.json": _pkg({"astro": "4.0.0"}),
            "astro.config.mjs": "export default defineConfig({ outDir: './www' })\n",
            "package-lock.json": "{}",
        },
        package_manager="npm",
        output_directory="www",
    ),
)
CORPUS = CORPUS + SCRIPT_SEMANTICS


def _json(body: object) -> str:
    return json.dumps(body, indent=2)


JS_WORKSPACES: tuple[SampleRepo, ...] = (
    SampleRepo(
        "turbo-pnpm",
        "monorepo",
        {
            "package.json": _json(
                {
                    "name": "acme",
                    "private": True,
                    "packageManager": "pnpm@9.1.0",
                    "engines": {"node": "22.x"},
                    "scripts": {"build": "turbo run build", "lint": "turbo run lint"},
                    "devDependencies": {"turbo": "2.0.0"},
                }
            ),
            "pnpm-workspace.yaml": "packages:\n  - apps/*\n  - packages/*\n",
            "pnpm-lock.yaml": "lockfileVersion: '9.0'\n",
            ".env.example": "DATABASE_URL=postgres://localhost/acme\n",
            "turbo.json": _json(
                {
                    "tasks": {
                        "build": {"dependsOn": ["^build"]},
                        "lint": {},
                        "test": {"dependsOn": ["^build"]},
                    }
                }
            ),
            "apps/web/package.json": _pkg(
                {"next": "14.2.0", "react": "18.3.0", "@acme/ui": "workspace:*"},
                {"build": "next build", "lint": "next lint", "test": "vitest run"},
                name="web",
            ),
            "apps/web/next.config.js": "module.exports = {}",
            "apps/docs/package.json": _pkg(
                {"astro": "4.0.0"}, {"build": "astro build"}, name="docs"
            ),
            "packages/ui/package.json": _pkg(
                {"react": "18.3.0"},
                {"build": "tsc", "test": "vitest run"},
                name="@acme/ui",
                main="dist/index.js",
            ),
            "packages/eslint-config/package.json": _pkg(
                {"eslint": "9.0.0"}, {}, name="@acme/eslint-config"
            ),
            "packages/tsconfig/package.json": _json({"name": "@acme/tsconfig"}),
        },
        package_manager="pnpm",
        monorepo=True,
        app_frameworks=("turbo", "nextjs", "astro"),
    ),
    SampleRepo(
        "nx-npm",
        "monorepo",
        {
            "package.json": _json(
                {
                    "name": "shop",
                    "private": True,
                    "workspaces": ["apps/*", "libs/*"],
                    # Hoisted for the members: no Angular app at the root.
                    "dependencies": {"@angular/core": "18.0.0"},
                    "devDependencies": {"nx": "19.0.0"},
                    "scripts": {"test": "nx test", "build": "nx build"},
                }
            ),
            "package-lock.json": "{}",
            "nx.json": _json({"targetDefaults": {"build": {"dependsOn": ["^build"]}}}),
            "apps/api/package.json": _pkg(
                {"express": "4.19.0"},
                {"build": "tsc -p .", "start": "node dist/main.js", "test": "jest"},
                name="api",
            ),
            "apps/api/project.json": _json({"name": "shop-api", "targets": {"serve": {}}}),
            "apps/admin/package.json": _json({"name": "@shop/admin", "private": True}),
            "apps/admin/project.json": _json(
                {"name": "admin", "projectType": "application", "targets": {"build": {}}}
            ),
            "apps/admin-e2e/package.json": _pkg({"cypress": "13"}, {"e2e": "cypress run"}),
            "libs/util/package.json": _pkg(
                {}, {"test": "jest", "build": "tsc"}, name="@shop/util", main="index.js"
            ),
        },
        package_manager="npm",
        monorepo=True,
        app_frameworks=("nx", "express", "node"),
    ),
    SampleRepo(
        "nx-integrated",
        "monorepo",
        {
            "package.json": _json(
                {
                    "name": "org",
                    "private": True,
                    "dependencies": {"next": "14.2.0", "react": "18.3.0"},
                    "devDependencies": {"nx": "19.0.0", "@nx/next": "19.0.0"},
                }
            ),
            "package-lock.json": "{}",
            "nx.json": _json(
                {"plugins": [{"plugin": "@nx/next/plugin"}, {"plugin": "@nx/eslint/plugin"}]}
            ),
            "apps/store/project.json": _json(
                {
                    "name": "store",
                    "targets": {"build": {"options": {"outputPath": "dist/apps/store-web"}}},
                }
            ),
            "apps/store/next.config.js": "module.exports = {}",
            "libs/cart/project.json": _json({"name": "cart", "targets": {"test": {}}}),
        },
        package_manager="npm",
        monorepo=True,
        app_frameworks=("nx",),
    ),
    SampleRepo(
        "bun-frontend-python-backend",
        "monorepo",
        {
            "package.json": _json(
                {
                    "name": "fullstack",
                    "private": True,
                    "workspaces": ["frontend", "packages/*"],
                    "scripts": {
                        "test": "bun run --filter frontend test",
                        "lint": "bun run --filter frontend lint",
                    },
                }
            ),
            "bun.lock": "{}",
            "pyproject.toml": '[tool.uv.workspace]\nmembers = ["backend"]\n',
            "uv.lock": "",
            "frontend/package.json": _pkg(
                {"react": "18.3.0", "vite": "5.0.0", "@playwright/test": "1.45.0"},
                {
                    "build": "vite build",
                    "test": "bunx playwright test",
                    "lint": "biome check --write .",
                },
                name="frontend",
            ),
            "frontend/index.html": "<!doctype html>",
            "packages/emails/package.json": _pkg(
                {}, {"build": "email export"}, name="emails", main="x.js"
            ),
            "backend/pyproject.toml": '[project]\nname = "api"\nrequires-python = ">=3.12"\n'
            'dependencies = ["fastapi"]\n[dependency-groups]\ndev = ["pytest"]\n',
        },
        package_manager="bun",
        monorepo=True,
        app_frameworks=("react-vite", "fastapi"),
    ),
    SampleRepo(
        "redwood-yarn",
        "monorepo",
        {
            "package.json": _json(
                {
                    "private": True,
                    "workspaces": {"packages": ["api", "web"]},
                    "packageManager": "yarn@4.1.0",
                    "devDependencies": {"@redwoodjs/core": "7.0.0"},
                }
            ),
            "redwood.toml": "[web]\n  port = 8910\n",
            "yarn.lock": "",
            ".yarnrc.yml": "nodeLinker: node-modules\n",
            "api/package.json": _pkg({"@redwoodjs/api": "7.0.0"}, {}, name="api"),
            "web/package.json": _pkg(
                {"@redwoodjs/web": "7.0.0", "react": "18.3.0"}, {}, name="web"
            ),
        },
        package_manager="yarn",
        monorepo=True,
        app_frameworks=("redwood",),
    ),
    SampleRepo(
        "yarn-workspaces-root-app",
        "monorepo",
        {
            "package.json": _pkg(
                {"react": "18.3.0", "vite": "5.0.0"},
                {"build": "vite build", "test": "vitest run"},
                name="studio",
                workspaces=["packages/*"],
            ),
            "yarn.lock": "",
            "index.html": "<!doctype html>",
            "vite.config.ts": "export default {}",
            "packages/legacy-app/package.json": _pkg(
                {"express": "4.19.0"},
                {"start": "node .", "build": "tsc"},
                name="legacy-app",
                engines={"node": "18.x"},
            ),
            "packages/utils/package.json": _pkg(
                {}, {"test": "jest"}, name="@studio/utils", main="index.js"
            ),
        },
        package_manager="yarn",
        monorepo=True,
        app_frameworks=("react-vite", "express"),
    ),
)
CORPUS = CORPUS + JS_WORKSPACES

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
            "package.json": _pkg(
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
            "package.json": _pkg(
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
            "package.json": _pkg(
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
CORPUS = CORPUS + DECLARED_COMMANDS

# Environment matching: images from declared versions, tools the images have, services, matrices.
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
            "package.json": _pkg(
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
            "package.json": _pkg(
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
            "install_command": "corepack enable && yarn install --immutable",
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
        {"composer.json": _json({"require": {"php": ">=7.4 <8.1", "phpunit/phpunit": "^9"}})},
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
            "package.json": _pkg({"express": "4", "mongoose": "8"}, {"test": "jest"}),
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
CORPUS = CORPUS + ENVIRONMENTS


def write_repo(sample: SampleRepo, root: Path, *, git: bool = False) -> Path:
    """Write the sample under root/<name>; with git=True also commit it (for clone tests)."""
    repo = root / sample.name
    for rel, content in sample.files.items():
        path = repo / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    if git:
        env_args = ["-c", "user.email=t@example.com", "-c", "user.name=t"]
        subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
        subprocess.run(["git", "-C", str(repo), "add", "-A"], check=True)
        subprocess.run(
            ["git", *env_args, "-C", str(repo), "commit", "-q", "-m", "sample"], check=True
        )
    return repo


def write_corpus(root: Path, *, git: bool = False) -> dict[str, Path]:
    return {s.name: write_repo(s, root, git=git) for s in CORPUS}
