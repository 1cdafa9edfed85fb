"""One layout per generator capability around a project's scripts: an end-to-end test script, a
database set-up, placeholder and composite test scripts, builders' output directories."""

from __future__ import annotations

import json

from tests.agent.corpus.sample import SampleRepo, package_json

SCRIPT_SEMANTICS: tuple[SampleRepo, ...] = (
    SampleRepo(
        "node-e2e-test-script",
        "react-vite",
        {
            "package.json": package_json(
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
            "package.json": package_json(
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
            "package.json": package_json(
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
            "package.json": package_json(
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
            "package.json": package_json({"@angular/core": "18.0.0"}),
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
            "package.json": package_json(
                {"@sveltejs/kit": "2.0.0", "@sveltejs/adapter-static": "3.0"}
            ),
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
            "package.json": package_json({"astro": "4.0.0"}),
            "astro.config.mjs": "export default defineConfig({ outDir: './www' })\n",
            "package-lock.json": "{}",
        },
        package_manager="npm",
        output_directory="www",
    ),
)
