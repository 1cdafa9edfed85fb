"""PHP apps (composer.json; Laravel recognised)."""

from __future__ import annotations

from core.agent.repo_files import RepoFiles, join
from workflows.agent_models import AppDetection


class PhpDetector:
    ecosystem = "php"

    def detect(self, files: RepoFiles, base: str) -> AppDetection | None:
        composer = files.json(join(base, "composer.json"))
        if composer is None:
            return None
        deps = {**(composer.get("require") or {}), **(composer.get("require-dev") or {})}
        laravel = "laravel/framework" in deps or files.exists(join(base, "artisan"))
        lint = None
        if "laravel/pint" in deps:
            lint = "vendor/bin/pint --test"
        elif "squizlabs/php_codesniffer" in deps:
            lint = "vendor/bin/phpcs"
        if laravel:
            test: str | None = "php artisan test"
        elif "phpunit/phpunit" in deps:
            test = "vendor/bin/phpunit"
        else:
            test = None
        node_assets = laravel and files.exists(join(base, "package.json"))
        return AppDetection(
            path=base or ".",
            name=str(composer.get("name") or "app").rsplit("/", 1)[-1],
            language="php",
            framework="laravel" if laravel else "php",
            confidence=0.95 if "laravel/framework" in deps else (0.75 if laravel else 0.6),
            package_manager="composer",
            install_command="composer install --no-interaction --prefer-dist",
            lint_command=lint,
            test_command=test,
            build_command="npm ci && npm run build" if node_assets else None,
            output_directory="public/build" if node_assets else None,
            image="composer:2",
            cache_paths=["vendor"],
            has_dockerfile=files.exists(join(base, "Dockerfile")),
            estimated_build_seconds=100 if laravel else 50,
            evidence=["composer.json"] + (["laravel/framework"] if laravel else []),
        )
