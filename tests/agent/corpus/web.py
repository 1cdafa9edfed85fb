"""Static sites and JavaScript frameworks: one tiny repository per framework family."""

from __future__ import annotations

import json

from tests.agent.corpus.sample import SampleRepo, package_json

WEB: tuple[SampleRepo, ...] = (
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
            "package.json": package_json({"next": "14.2.0", "react": "18.3.0"}),
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
            "package.json": package_json({"next": "14.2.0", "react": "18.3.0"}),
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
            "package.json": package_json({"react": "18.3.0", "vite": "5.0.0"}),
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
            "package.json": package_json({"react": "18.2.0", "react-scripts": "5.0.1"}),
            "package-lock.json": "{}",
        },
        package_manager="npm",
        output_directory="build",
    ),
    SampleRepo(
        "vue-vite-bun",
        "vue",
        {
            "package.json": package_json({"vue": "3.4.0", "vite": "5.0.0"}),
            "bun.lockb": "",
            "vite.config.ts": "",
        },
        package_manager="bun",
        output_directory="dist",
    ),
    SampleRepo(
        "nuxt",
        "nuxt",
        {
            "package.json": package_json({"nuxt": "3.11.0"}),
            "nuxt.config.ts": "",
            "package-lock.json": "{}",
        },
        package_manager="npm",
        output_directory=".output",
    ),
    SampleRepo(
        "angular",
        "angular",
        {
            "package.json": package_json({"@angular/core": "17.0.0"}),
            "angular.json": json.dumps({"projects": {"shop": {}}}),
            "package-lock.json": "{}",
        },
        package_manager="npm",
        output_directory="dist/shop",
    ),
    SampleRepo(
        "svelte",
        "svelte",
        {
            "package.json": package_json({"svelte": "4.2.0", "vite": "5.0.0"}),
            "package-lock.json": "{}",
        },
        package_manager="npm",
    ),
    SampleRepo(
        "sveltekit",
        "sveltekit",
        {
            "package.json": package_json({"@sveltejs/kit": "2.0.0", "svelte": "4.2.0"}),
            "svelte.config.js": "",
            "pnpm-lock.yaml": "lockfileVersion: '9.0'\n",
        },
        package_manager="pnpm",
    ),
    SampleRepo(
        "astro",
        "astro",
        {
            "package.json": package_json({"astro": "4.0.0"}),
            "astro.config.mjs": "",
            "package-lock.json": "{}",
        },
        package_manager="npm",
        output_directory="dist",
    ),
    SampleRepo(
        "gatsby",
        "gatsby",
        {"package.json": package_json({"gatsby": "5.0.0", "react": "18.0.0"}), "yarn.lock": ""},
        package_manager="yarn",
        output_directory="public",
    ),
    SampleRepo(
        "remix",
        "remix",
        {
            "package.json": package_json({"@remix-run/react": "2.0.0", "react": "18.0.0"}),
            "package-lock.json": "{}",
        },
        package_manager="npm",
        output_directory="build",
    ),
    SampleRepo(
        "express",
        "express",
        {
            "package.json": package_json(
                {"express": "4.19.0"}, {"test": "node --test", "start": "node ."}
            ),
            "package-lock.json": "{}",
        },
        package_manager="npm",
    ),
)
