"""Repository layouts rather than frameworks: a Dockerfile alone, a JavaScript monorepo, a
polyglot one."""

from __future__ import annotations

import json

from tests.agent.corpus.sample import SampleRepo, package_json

LAYOUTS: tuple[SampleRepo, ...] = (
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
            "apps/web/package.json": package_json({"next": "14.0.0"}, name="web"),
            "apps/admin/package.json": package_json(
                {"react": "18.0.0", "vite": "5.0.0"}, name="admin"
            ),
            "packages/ui/package.json": package_json(
                {"react": "18.0.0"}, {"test": "vitest"}, name="ui"
            ),
        },
        package_manager="npm",
        monorepo=True,
        app_frameworks=("nextjs", "react-vite"),
    ),
    SampleRepo(
        "monorepo-polyglot",
        "monorepo",
        {
            "frontend/package.json": package_json(
                {"vue": "3.0.0", "vite": "5.0.0"}, name="frontend"
            ),
            "frontend/package-lock.json": "{}",
            "backend/requirements.txt": "fastapi\npytest\n",
        },
        monorepo=True,
        app_frameworks=("vue", "fastapi"),
    ),
)
