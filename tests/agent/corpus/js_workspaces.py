"""JavaScript workspaces: turbo, nx, yarn and bun monorepos whose apps are found through the
workspace tool."""

from __future__ import annotations

from tests.agent.corpus.sample import SampleRepo, json_text, package_json

JS_WORKSPACES: tuple[SampleRepo, ...] = (
    SampleRepo(
        "turbo-pnpm",
        "monorepo",
        {
            "package.json": json_text(
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
            "turbo.json": json_text(
                {
                    "tasks": {
                        "build": {"dependsOn": ["^build"]},
                        "lint": {},
                        "test": {"dependsOn": ["^build"]},
                    }
                }
            ),
            "apps/web/package.json": package_json(
                {"next": "14.2.0", "react": "18.3.0", "@acme/ui": "workspace:*"},
                {"build": "next build", "lint": "next lint", "test": "vitest run"},
                name="web",
            ),
            "apps/web/next.config.js": "module.exports = {}",
            "apps/docs/package.json": package_json(
                {"astro": "4.0.0"}, {"build": "astro build"}, name="docs"
            ),
            "packages/ui/package.json": package_json(
                {"react": "18.3.0"},
                {"build": "tsc", "test": "vitest run"},
                name="@acme/ui",
                main="dist/index.js",
            ),
            "packages/eslint-config/package.json": package_json(
                {"eslint": "9.0.0"}, {}, name="@acme/eslint-config"
            ),
            "packages/tsconfig/package.json": json_text({"name": "@acme/tsconfig"}),
        },
        package_manager="pnpm",
        monorepo=True,
        app_frameworks=("turbo", "nextjs", "astro"),
    ),
    SampleRepo(
        "nx-npm",
        "monorepo",
        {
            "package.json": json_text(
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
            "nx.json": json_text({"targetDefaults": {"build": {"dependsOn": ["^build"]}}}),
            "apps/api/package.json": package_json(
                {"express": "4.19.0"},
                {"build": "tsc -p .", "start": "node dist/main.js", "test": "jest"},
                name="api",
            ),
            "apps/api/project.json": json_text({"name": "shop-api", "targets": {"serve": {}}}),
            "apps/admin/package.json": json_text({"name": "@shop/admin", "private": True}),
            "apps/admin/project.json": json_text(
                {"name": "admin", "projectType": "application", "targets": {"build": {}}}
            ),
            "apps/admin-e2e/package.json": package_json({"cypress": "13"}, {"e2e": "cypress run"}),
            "libs/util/package.json": package_json(
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
            "package.json": json_text(
                {
                    "name": "org",
                    "private": True,
                    "dependencies": {"next": "14.2.0", "react": "18.3.0"},
                    "devDependencies": {"nx": "19.0.0", "@nx/next": "19.0.0"},
                }
            ),
            "package-lock.json": "{}",
            "nx.json": json_text(
                {"plugins": [{"plugin": "@nx/next/plugin"}, {"plugin": "@nx/eslint/plugin"}]}
            ),
            "apps/store/project.json": json_text(
                {
                    "name": "store",
                    "targets": {"build": {"options": {"outputPath": "dist/apps/store-web"}}},
                }
            ),
            "apps/store/next.config.js": "module.exports = {}",
            "libs/cart/project.json": json_text({"name": "cart", "targets": {"test": {}}}),
        },
        package_manager="npm",
        monorepo=True,
        app_frameworks=("nx",),
    ),
    SampleRepo(
        "bun-frontend-python-backend",
        "monorepo",
        {
            "package.json": json_text(
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
            "frontend/package.json": package_json(
                {"react": "18.3.0", "vite": "5.0.0", "@playwright/test": "1.45.0"},
                {
                    "build": "vite build",
                    "test": "bunx playwright test",
                    "lint": "biome check --write .",
                },
                name="frontend",
            ),
            "frontend/index.html": "<!doctype html>",
            "packages/emails/package.json": package_json(
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
            "package.json": json_text(
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
            "api/package.json": package_json({"@redwoodjs/api": "7.0.0"}, {}, name="api"),
            "web/package.json": package_json(
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
            "package.json": package_json(
                {"react": "18.3.0", "vite": "5.0.0"},
                {"build": "vite build", "test": "vitest run"},
                name="studio",
                workspaces=["packages/*"],
            ),
            "yarn.lock": "",
            "index.html": "<!doctype html>",
            "vite.config.ts": "export default {}",
            "packages/legacy-app/package.json": package_json(
                {"express": "4.19.0"},
                {"start": "node .", "build": "tsc"},
                name="legacy-app",
                engines={"node": "18.x"},
            ),
            "packages/utils/package.json": package_json(
                {}, {"test": "jest"}, name="@studio/utils", main="index.js"
            ),
        },
        package_manager="yarn",
        monorepo=True,
        app_frameworks=("react-vite", "express"),
    ),
)
