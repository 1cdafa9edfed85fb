"""PHP apps (composer.json; Laravel recognised)."""

from __future__ import annotations

from core.agent.images import cache_paths, node_image, php_image
from core.agent.repo_files import RepoFiles, join
from core.agent.versions import node_version, php_version
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
        php = php_version(composer)
        image = php_image(php.version)
        # Front-end assets build in a Node image: composer:2 and php:*-cli carry no npm.
        pkg = files.json(join(base, "package.json"))
        node_assets = laravel and pkg is not None
        build_image = node_image(node_version(files, base, pkg).version) if pkg else None
        npm_install = "npm ci" if files.exists(join(base, "package-lock.json")) else "npm install"
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
            build_command=f"{npm_install} && npm run build" if node_assets else None,
            build_image=build_image if node_assets else None,
            output_directory="public/build" if node_assets else None,
            image=image,
            cache_paths=[*cache_paths(image, "composer"), "vendor"],
            has_dockerfile=files.exists(join(base, "Dockerfile")),
            estimated_build_seconds=100 if laravel else 50,
            evidence=["composer.json"]
            + (["laravel/framework"] if laravel else [])
            + ([f"PHP {php.version} from {php.source}"] if php.source else [])
            + list(php.notes),
        )
