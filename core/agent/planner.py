"""The built-in planner: a deterministic manifest and lockfile analyser that proposes pipelines.

It is the offline default (no Anthropic key) and the implementation behind the agent's
detect_framework / propose_pipeline tools, so both paths share one source of truth.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from pathlib import Path, PurePosixPath
from typing import Any

from forgeline.safe_parsing import UnsafeDocument, load_json, load_toml, load_yaml
from workflows.agent_models import (
    AppDetection,
    PipelineProposal,
    Preferences,
    ProposedStage,
    RepoAnalysis,
)

NODE_DEFAULT_TEST = 'echo "Error: no test specified" && exit 1'
SKIP_DIRS = {".git", "node_modules", "vendor", ".venv", "venv", "target", "dist", "build"}
APP_CONTAINER_DIRS = ("apps", "packages", "services")
MAX_MANIFEST_BYTES = 512 * 1024


class RepoFiles:
    """Read-only view of a checked-out repository, refusing paths that escape the root."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        # Manifests that were present but not read (too large, unsafe or broken), with why.
        self.unread: dict[str, str] = {}

    def path(self, rel: str) -> Path:
        target = (self.root / rel).resolve()
        if target != self.root and self.root not in target.parents:
            raise ValueError(f"path escapes the repository: {rel}")
        return target

    def exists(self, rel: str) -> bool:
        try:
            return self.path(rel).exists()
        except ValueError:
            return False

    def is_dir(self, rel: str) -> bool:
        return self.exists(rel) and self.path(rel).is_dir()

    def text(self, rel: str) -> str | None:
        if not self.exists(rel):
            return None
        target = self.path(rel)
        if not target.is_file():
            return None
        if target.stat().st_size > MAX_MANIFEST_BYTES:
            self.unread[rel] = f"larger than {MAX_MANIFEST_BYTES} bytes"
            return None
        return target.read_text(encoding="utf-8", errors="replace")

    def json(self, rel: str) -> dict[str, Any] | None:
        data = self._parsed(rel, load_json)
        return data if isinstance(data, dict) else None

    def toml(self, rel: str) -> dict[str, Any] | None:
        data = self._parsed(rel, load_toml)
        return data if isinstance(data, dict) else None

    def yaml(self, rel: str) -> dict[str, Any] | None:
        data = self._parsed(rel, load_yaml)
        return data if isinstance(data, dict) else None

    def _parsed(self, rel: str, load: Callable[[str], Any]) -> Any:
        """Every structured file of the repository goes through the bounded loader."""
        raw = self.text(rel)
        if raw is None:
            return None
        try:
            return load(raw)
        except UnsafeDocument as exc:
            self.unread[rel] = str(exc)
            return None

    def subdirs(self, rel: str) -> list[str]:
        if not self.is_dir(rel):
            return []
        base = PurePosixPath(rel)
        return sorted(
            str(base / child.name) if rel != "." else child.name
            for child in self.path(rel).iterdir()
            if child.is_dir()
            and not child.is_symlink()
            and not child.name.startswith(".")
            and child.name not in SKIP_DIRS
        )

    def walk(self, limit: int = 20_000) -> list[str]:
        """Relative paths of all files (skipping vendored/build directories), sorted."""
        out: list[str] = []
        stack = [self.root]
        while stack and len(out) < limit:
            current = stack.pop()
            for child in sorted(current.iterdir()):
                if child.is_symlink():
                    continue
                if child.is_dir():
                    if child.name not in SKIP_DIRS:
                        stack.append(child)
                else:
                    out.append(child.relative_to(self.root).as_posix())
        return sorted(out)


def _join(base: str, name: str) -> str:
    return name if base in ("", ".") else f"{base}/{name}"


# --- Node ----------------------------------------------------------------------------------------

NODE_FRAMEWORKS: tuple[tuple[str, tuple[str, ...], str | None, int], ...] = (
    # framework, any-of dependencies, output directory, base build seconds
    ("nextjs", ("next",), ".next", 150),
    ("nuxt", ("nuxt", "nuxt3"), ".output", 140),
    ("remix", ("@remix-run/react", "@remix-run/node", "@remix-run/dev"), "build", 110),
    ("gatsby", ("gatsby",), "public", 180),
    ("sveltekit", ("@sveltejs/kit",), "build", 90),
    ("astro", ("astro",), "dist", 80),
    ("angular", ("@angular/core",), "dist", 160),
    ("vue", ("vue",), "dist", 80),
    ("svelte", ("svelte",), "dist", 70),
    ("react-cra", ("react-scripts",), "build", 120),
    ("react-vite", ("react",), "dist", 80),
    ("express", ("express",), None, 45),
)
NODE_CONFIG_FILES = {
    "nextjs": ("next.config.js", "next.config.mjs", "next.config.ts"),
    "nuxt": ("nuxt.config.ts", "nuxt.config.js"),
    "remix": ("remix.config.js", "remix.config.mjs"),
    "gatsby": ("gatsby-config.js", "gatsby-config.ts"),
    "sveltekit": ("svelte.config.js",),
    "astro": ("astro.config.mjs", "astro.config.ts", "astro.config.js"),
    "angular": ("angular.json",),
    "vue": ("vite.config.ts", "vite.config.js", "vue.config.js"),
    "svelte": ("vite.config.ts", "vite.config.js", "svelte.config.js"),
    "react-vite": ("vite.config.ts", "vite.config.js"),
}


def _node_package_manager(files: RepoFiles, base: str, pkg: dict[str, Any]) -> tuple[str, bool]:
    """(manager, has lockfile) from the packageManager field or the lockfile present."""
    declared = str(pkg.get("packageManager") or "").split("@", 1)[0]
    lockfiles = (
        ("bun", ("bun.lockb", "bun.lock")),
        ("pnpm", ("pnpm-lock.yaml",)),
        ("yarn", ("yarn.lock",)),
        ("npm", ("package-lock.json", "npm-shrinkwrap.json")),
    )
    for manager, names in lockfiles:
        if any(files.exists(_join(base, n)) for n in names):
            return (declared or manager), True
    return (declared or "npm"), False


def _node_install(manager: str, locked: bool, files: RepoFiles, base: str) -> str:
    if manager == "pnpm":
        return (
            "corepack enable && pnpm install --frozen-lockfile"
            if locked
            else ("corepack enable && pnpm install")
        )
    if manager == "yarn":
        if files.exists(_join(base, ".yarnrc.yml")):
            return "corepack enable && yarn install --immutable"
        return "yarn install --frozen-lockfile" if locked else "yarn install"
    if manager == "bun":
        return "bun install --frozen-lockfile" if locked else "bun install"
    return "npm ci" if locked else "npm install"


def _node_run(manager: str, script: str) -> str:
    if manager == "npm":
        return "npm test" if script == "test" else f"npm run {script}"
    if manager == "yarn":
        return f"yarn {script}"
    return f"{manager} run {script}"


def _node_image(pkg: dict[str, Any], manager: str) -> str:
    if manager == "bun":
        return "oven/bun:1"
    engines = pkg.get("engines") or {}
    node = str(engines.get("node", "")) if isinstance(engines, dict) else ""
    majors = [int(m) for m in re.findall(r"(\d{2})", node) if 16 <= int(m) <= 30]
    return f"node:{max(majors)}" if majors else "node:20"


def _node_cache(manager: str) -> list[str]:
    return {
        "npm": ["~/.npm", "node_modules"],
        "yarn": ["~/.cache/yarn", "node_modules"],
        "pnpm": ["~/.local/share/pnpm/store", "node_modules"],
        "bun": ["~/.bun/install/cache", "node_modules"],
    }.get(manager, ["node_modules"])


def detect_node(files: RepoFiles, base: str) -> AppDetection | None:
    pkg = files.json(_join(base, "package.json"))
    if pkg is None:
        return None
    deps: dict[str, Any] = {}
    for key in ("dependencies", "devDependencies", "peerDependencies"):
        section = pkg.get(key)
        if isinstance(section, dict):
            deps.update(section)
    scripts = pkg.get("scripts") if isinstance(pkg.get("scripts"), dict) else {}
    assert isinstance(scripts, dict)
    manager, locked = _node_package_manager(files, base, pkg)
    evidence = [f"{_join(base, 'package.json')}"]
    if locked:
        evidence.append(f"{manager} lockfile")

    framework, output, seconds, confidence = "node", None, 40, 0.6
    for name, markers, out, secs in NODE_FRAMEWORKS:
        hit = next((m for m in markers if m in deps), None)
        if hit is None:
            continue
        framework, output, seconds = name, out, secs
        configs = [c for c in NODE_CONFIG_FILES.get(name, ()) if files.exists(_join(base, c))]
        confidence = 0.95 if configs else 0.85
        evidence.append(f"dependency {hit}")
        evidence.extend(f"config {c}" for c in configs)
        break
    if framework == "react-vite" and "vite" not in deps:
        framework, confidence = "react", 0.7
    if framework == "nextjs":
        config = "".join(files.text(_join(base, c)) or "" for c in NODE_CONFIG_FILES["nextjs"])
        if re.search(r"output\s*:\s*['\"]export['\"]", config):
            output = "out"
    if framework == "angular":
        ng = files.json(_join(base, "angular.json")) or {}
        projects = ng.get("projects") if isinstance(ng.get("projects"), dict) else {}
        if projects:
            output = f"dist/{next(iter(projects))}"
    if framework == "sveltekit" and "@sveltejs/adapter-static" not in deps:
        output = ".svelte-kit"

    test_script = scripts.get("test")
    has_test = isinstance(test_script, str) and test_script.strip() != NODE_DEFAULT_TEST
    lint_script = next((s for s in ("lint", "check", "typecheck") if s in scripts), None)
    build = _node_run(manager, "build") if "build" in scripts else None
    seconds += min(len(deps), 200) // 2
    return AppDetection(
        path=base or ".",
        name=str(pkg.get("name") or PurePosixPath(base).name or "app"),
        language="javascript" if "typescript" not in deps else "typescript",
        framework=framework,
        confidence=confidence,
        package_manager=manager,
        install_command=_node_install(manager, locked, files, base),
        lint_command=_node_run(manager, lint_script) if lint_script else None,
        test_command=_node_run(manager, "test") if has_test else None,
        build_command=build,
        output_directory=output if build else None,
        image=_node_image(pkg, manager),
        cache_paths=_node_cache(manager),
        has_dockerfile=files.exists(_join(base, "Dockerfile")),
        estimated_build_seconds=seconds,
        evidence=evidence,
    )


# --- Python --------------------------------------------------------------------------------------


def _python_deps(files: RepoFiles, base: str) -> tuple[set[str], dict[str, Any]]:
    names: set[str] = set()
    pyproject = files.toml(_join(base, "pyproject.toml")) or {}
    project = pyproject.get("project") if isinstance(pyproject.get("project"), dict) else {}
    assert isinstance(project, dict)
    specs: list[str] = list(project.get("dependencies") or [])
    for group in (project.get("optional-dependencies") or {}).values():
        specs.extend(group)
    for group in (pyproject.get("dependency-groups") or {}).values():
        specs.extend(s for s in group if isinstance(s, str))
    poetry = (pyproject.get("tool") or {}).get("poetry") or {}
    names.update(str(k).lower() for k in (poetry.get("dependencies") or {}))
    names.update(str(k).lower() for k in (poetry.get("dev-dependencies") or {}))
    for group in (poetry.get("group") or {}).values():
        names.update(str(k).lower() for k in (group.get("dependencies") or {}))
    for req in ("requirements.txt", "requirements-dev.txt", "requirements/base.txt"):
        raw = files.text(_join(base, req))
        if raw:
            specs.extend(line for line in raw.splitlines() if line and not line.startswith("#"))
    for spec in specs:
        match = re.match(r"\s*([A-Za-z0-9_.\-]+)", spec)
        if match:
            names.add(match.group(1).lower().replace("_", "-"))
    return names, pyproject


def _python_version(pinned: str | None, requires: str) -> str:
    """The CI image's Python: .python-version, else the newest one `requires-python` allows."""
    if pinned and re.match(r"^\s*3\.\d+", pinned):
        return ".".join(pinned.strip().split(".")[:2])
    upper = re.search(r"<\s*3\.(\d+)", requires)
    exact = re.search(r"(?:==|~=)\s*3\.(\d+)", requires)
    lower = re.search(r">=?\s*3\.(\d+)", requires)
    if exact:
        return f"3.{exact.group(1)}"
    if upper:
        return f"3.{int(upper.group(1)) - 1}"
    if lower and int(lower.group(1)) > 12:
        return f"3.{lower.group(1)}"
    return "3.12"


def detect_python(files: RepoFiles, base: str) -> AppDetection | None:
    manifests = ("pyproject.toml", "requirements.txt", "setup.py", "Pipfile", "manage.py")
    if not any(files.exists(_join(base, m)) for m in manifests):
        return None
    deps, pyproject = _python_deps(files, base)
    tool = pyproject.get("tool") or {}
    evidence = [m for m in manifests if files.exists(_join(base, m))]
    if files.exists(_join(base, "uv.lock")):
        manager, install = "uv", "pip install uv && uv sync --frozen"
        run = "uv run "
    elif files.exists(_join(base, "poetry.lock")) or "poetry" in tool:
        manager, install = "poetry", "pip install poetry && poetry install --no-interaction"
        run = "poetry run "
    elif files.exists(_join(base, "requirements.txt")):
        manager, install, run = "pip", "pip install -r requirements.txt", ""
    else:
        manager, install, run = "pip", "pip install .", ""
    if manager != "pip":
        evidence.append(f"{manager} lockfile")

    if "django" in deps or files.exists(_join(base, "manage.py")):
        framework, confidence, seconds = "django", 0.95 if "django" in deps else 0.8, 90
    elif "fastapi" in deps:
        framework, confidence, seconds = "fastapi", 0.9, 60
    elif "flask" in deps:
        framework, confidence, seconds = "flask", 0.9, 50
    else:
        framework, confidence, seconds = "python", 0.6, 45
    if framework != "python":
        evidence.append(f"dependency {framework}")

    uses_pytest = "pytest" in deps or any(d.startswith("pytest-") for d in deps)
    if uses_pytest or files.exists(_join(base, "pytest.ini")) or "pytest" in tool:
        test: str | None = f"{run}pytest"
    elif framework == "django":
        test = f"{run}python manage.py test"
    elif files.is_dir(_join(base, "tests")):
        test = f"{run}python -m unittest discover -s tests"
    else:
        test = None
    if "ruff" in deps or "ruff" in tool or files.exists(_join(base, "ruff.toml")):
        lint: str | None = f"{run}ruff check ."
    elif "flake8" in deps or files.exists(_join(base, ".flake8")):
        lint = f"{run}flake8"
    else:
        lint = None
    version = _python_version(
        files.text(_join(base, ".python-version")),
        str((pyproject.get("project") or {}).get("requires-python") or ""),
    )
    build: str | None = None
    if framework == "django":
        build = f"{run}python manage.py collectstatic --noinput"
    elif "build-system" in pyproject:
        build = {"uv": "uv build", "poetry": "poetry build"}.get(
            manager, "pip install build && python -m build"
        )
    return AppDetection(
        path=base or ".",
        name=str((pyproject.get("project") or {}).get("name") or PurePosixPath(base).name or "app"),
        language="python",
        framework=framework,
        confidence=confidence,
        package_manager=manager,
        install_command=install,
        lint_command=lint,
        test_command=test,
        build_command=build,
        output_directory="dist" if build and framework != "django" else None,
        image=f"python:{version}",
        cache_paths=["~/.cache/pip"] if manager == "pip" else [f"~/.cache/{manager}"],
        has_dockerfile=files.exists(_join(base, "Dockerfile")),
        estimated_build_seconds=seconds + min(len(deps), 100),
        evidence=evidence,
    )


# --- Go, Rust, Java, Ruby, PHP -------------------------------------------------------------------


def detect_go(files: RepoFiles, base: str) -> AppDetection | None:
    raw = files.text(_join(base, "go.mod"))
    if raw is None:
        return None
    module = re.search(r"^module\s+(\S+)", raw, re.M)
    version = re.search(r"^go\s+(\d+\.\d+)", raw, re.M)
    return AppDetection(
        path=base or ".",
        name=(module.group(1).rsplit("/", 1)[-1] if module else "app"),
        language="go",
        framework="go",
        confidence=0.95,
        package_manager="go modules",
        install_command="go mod download",
        lint_command="go vet ./...",
        test_command="go test ./...",
        build_command="go build -o bin/ ./...",
        output_directory="bin",
        image=f"golang:{version.group(1)}" if version else "golang:1.22",
        cache_paths=["~/go/pkg/mod", "~/.cache/go-build"],
        has_dockerfile=files.exists(_join(base, "Dockerfile")),
        estimated_build_seconds=60,
        evidence=["go.mod"] + (["go.sum"] if files.exists(_join(base, "go.sum")) else []),
    )


def detect_rust(files: RepoFiles, base: str) -> AppDetection | None:
    cargo = files.toml(_join(base, "Cargo.toml"))
    if cargo is None:
        return None
    locked = files.exists(_join(base, "Cargo.lock"))
    flag = " --locked" if locked else ""
    name = str((cargo.get("package") or {}).get("name") or PurePosixPath(base).name or "app")
    return AppDetection(
        path=base or ".",
        name=name,
        language="rust",
        framework="rust",
        confidence=0.95,
        package_manager="cargo",
        install_command=f"cargo fetch{flag}",
        lint_command="cargo clippy --all-targets -- -D warnings",
        test_command=f"cargo test{flag}",
        build_command=f"cargo build --release{flag}",
        output_directory="target/release",
        image="rust:1",
        cache_paths=["~/.cargo/registry", "target"],
        has_dockerfile=files.exists(_join(base, "Dockerfile")),
        estimated_build_seconds=240,
        evidence=["Cargo.toml"] + (["Cargo.lock"] if locked else []),
    )


def detect_java(files: RepoFiles, base: str) -> AppDetection | None:
    pom = files.text(_join(base, "pom.xml"))
    gradle_file = next(
        (g for g in ("build.gradle.kts", "build.gradle") if files.exists(_join(base, g))), None
    )
    if pom is None and gradle_file is None:
        return None
    text = pom or files.text(_join(base, gradle_file or "")) or ""
    spring = "spring-boot" in text or "org.springframework.boot" in text
    if pom is not None:
        mvn = "./mvnw" if files.exists(_join(base, "mvnw")) else "mvn"
        return AppDetection(
            path=base or ".",
            name=PurePosixPath(base).name or "app",
            language="java",
            framework="spring-boot" if spring else "maven",
            confidence=0.9,
            package_manager="maven",
            install_command=f"{mvn} -B -q dependency:go-offline",
            lint_command=f"{mvn} -B checkstyle:check" if "checkstyle" in text else None,
            test_command=f"{mvn} -B test",
            build_command=f"{mvn} -B package -DskipTests",
            output_directory="target",
            image="maven:3.9-eclipse-temurin-21",
            cache_paths=["~/.m2/repository"],
            has_dockerfile=files.exists(_join(base, "Dockerfile")),
            estimated_build_seconds=200,
            evidence=["pom.xml"] + (["spring-boot"] if spring else []),
        )
    gradle = "./gradlew" if files.exists(_join(base, "gradlew")) else "gradle"
    return AppDetection(
        path=base or ".",
        name=PurePosixPath(base).name or "app",
        language="kotlin" if gradle_file == "build.gradle.kts" else "java",
        framework="spring-boot" if spring else "gradle",
        confidence=0.9,
        package_manager="gradle",
        install_command=f"{gradle} dependencies --no-daemon -q",
        lint_command=f"{gradle} check -x test --no-daemon" if "checkstyle" in text else None,
        test_command=f"{gradle} test --no-daemon",
        build_command=f"{gradle} build -x test --no-daemon",
        output_directory="build/libs",
        image="gradle:8-jdk21",
        cache_paths=["~/.gradle/caches"],
        has_dockerfile=files.exists(_join(base, "Dockerfile")),
        estimated_build_seconds=220,
        evidence=[gradle_file or "build.gradle"] + (["spring-boot"] if spring else []),
    )


def detect_ruby(files: RepoFiles, base: str) -> AppDetection | None:
    gemfile = files.text(_join(base, "Gemfile"))
    if gemfile is None:
        return None
    gems = set(re.findall(r"^\s*gem\s+['\"]([^'\"]+)['\"]", gemfile, re.M))
    rails = "rails" in gems or files.exists(_join(base, "config/application.rb"))
    version = (files.text(_join(base, ".ruby-version")) or "").strip().lstrip("ruby-")
    major_minor = ".".join(version.split(".")[:2]) if re.match(r"^\d+\.\d+", version) else "3.3"
    rspec = "rspec-rails" in gems or "rspec" in gems or files.is_dir(_join(base, "spec"))
    test = "bundle exec rspec" if rspec else ("bundle exec rails test" if rails else None)
    return AppDetection(
        path=base or ".",
        name=PurePosixPath(base).name or "app",
        language="ruby",
        framework="rails" if rails else "ruby",
        confidence=0.95 if "rails" in gems else (0.75 if rails else 0.6),
        package_manager="bundler",
        install_command="bundle install --jobs 4",
        lint_command="bundle exec rubocop"
        if "rubocop" in gems or any(g.startswith("rubocop") for g in gems)
        else None,
        test_command=test,
        build_command="bundle exec rails assets:precompile" if rails else None,
        output_directory="public/assets" if rails else None,
        image=f"ruby:{major_minor}",
        cache_paths=["vendor/bundle"],
        has_dockerfile=files.exists(_join(base, "Dockerfile")),
        estimated_build_seconds=150 if rails else 60,
        evidence=["Gemfile"] + (["gem rails"] if "rails" in gems else []),
    )


def detect_php(files: RepoFiles, base: str) -> AppDetection | None:
    composer = files.json(_join(base, "composer.json"))
    if composer is None:
        return None
    deps = {**(composer.get("require") or {}), **(composer.get("require-dev") or {})}
    laravel = "laravel/framework" in deps or files.exists(_join(base, "artisan"))
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
    node_assets = laravel and files.exists(_join(base, "package.json"))
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
        has_dockerfile=files.exists(_join(base, "Dockerfile")),
        estimated_build_seconds=100 if laravel else 50,
        evidence=["composer.json"] + (["laravel/framework"] if laravel else []),
    )


def detect_static(files: RepoFiles, base: str) -> AppDetection | None:
    for candidate in ("index.html", "public/index.html", "site/index.html", "docs/index.html"):
        if files.exists(_join(base, candidate)):
            out = str(PurePosixPath(candidate).parent)
            return AppDetection(
                path=base or ".",
                name=PurePosixPath(base).name or "site",
                language="html",
                framework="static",
                confidence=0.9 if candidate == "index.html" else 0.75,
                package_manager=None,
                install_command=None,
                lint_command='npx --yes html-validate "**/*.html"',
                test_command=None,
                build_command=None,
                output_directory=out,
                image="node:20",
                has_dockerfile=files.exists(_join(base, "Dockerfile")),
                estimated_build_seconds=15,
                evidence=[_join(base, candidate)],
            )
    return None


def detect_docker(files: RepoFiles, base: str) -> AppDetection | None:
    if not files.exists(_join(base, "Dockerfile")):
        return None
    name = PurePosixPath(base).name or "app"
    return AppDetection(
        path=base or ".",
        name=name,
        language="docker",
        framework="dockerfile",
        confidence=0.8,
        package_manager=None,
        install_command=None,
        lint_command="hadolint Dockerfile",
        test_command=None,
        build_command='docker build -t "forgeline-app:${COMMIT_SHA:-local}" .',
        output_directory=None,
        image=None,
        has_dockerfile=True,
        estimated_build_seconds=120,
        evidence=[_join(base, "Dockerfile")],
    )


# Order: language manifests first; a static site or bare Dockerfile only when nothing else matches.
DETECTORS = (
    detect_node,
    detect_python,
    detect_go,
    detect_rust,
    detect_java,
    detect_ruby,
    detect_php,
    detect_static,
    detect_docker,
)


LOCKFILE_NAMES = (
    "package-lock.json",
    "npm-shrinkwrap.json",
    "yarn.lock",
    "pnpm-lock.yaml",
    "bun.lockb",
    "bun.lock",
    "poetry.lock",
    "uv.lock",
    "requirements.txt",
    "go.sum",
    "Cargo.lock",
    "Gemfile.lock",
    "composer.lock",
    "pom.xml",
    "build.gradle",
    "build.gradle.kts",
)


def detect_app(files: RepoFiles, base: str) -> AppDetection | None:
    found = [d for d in (det(files, base) for det in DETECTORS) if d is not None]
    if not found:
        return None
    for app in found:
        app.lockfiles = [_join(base, n) for n in LOCKFILE_NAMES if files.exists(_join(base, n))]
    # Laravel/Rails repos ship a package.json for assets: the backend framework wins.
    best = max(
        found, key=lambda d: (d.framework not in ("node", "static", "dockerfile"), d.confidence)
    )
    if best.framework == "node" and any(d.framework not in ("node",) for d in found[1:]):
        others = [d for d in found if d.framework not in ("node", "static", "dockerfile")]
        if others:
            best = others[0]
    return best


def _workspace_globs(files: RepoFiles) -> tuple[str | None, list[str]]:
    pkg = files.json("package.json") or {}
    workspaces = pkg.get("workspaces")
    if isinstance(workspaces, dict):
        workspaces = workspaces.get("packages")
    if isinstance(workspaces, list) and workspaces:
        return "workspaces", [str(w) for w in workspaces]
    data = files.yaml("pnpm-workspace.yaml")
    if data:
        packages = data.get("packages")
        if isinstance(packages, list):
            return "pnpm-workspace", [str(p) for p in packages]
    for marker in ("turbo.json", "nx.json", "lerna.json"):
        if files.exists(marker):
            return marker.split(".")[0], [f"{d}/*" for d in APP_CONTAINER_DIRS]
    return None, []


def _expand(files: RepoFiles, globs: Iterable[str]) -> list[str]:
    out: list[str] = []
    for pattern in globs:
        pattern = pattern.rstrip("/")
        if pattern.startswith("!"):
            continue
        if pattern.endswith("/*") or pattern.endswith("/**"):
            out.extend(files.subdirs(pattern.split("/*", 1)[0]))
        elif files.is_dir(pattern):
            out.append(pattern)
    return sorted(dict.fromkeys(out))


def analyze_repository(
    root: Path, *, framework_hint: str | None = None, app_path: str | None = None
) -> RepoAnalysis:
    """Detect every buildable app in the checkout; the primary one first."""
    files = RepoFiles(root)
    all_files = files.walk()
    tool, globs = _workspace_globs(files)
    candidates = _expand(files, globs) if globs else []
    if not candidates:
        candidates = [d for c in APP_CONTAINER_DIRS for d in files.subdirs(c)]
    if not candidates:
        # Several top-level folders with their own manifests (frontend/ + backend/).
        candidates = [
            d
            for d in files.subdirs(".")
            if any(
                files.exists(f"{d}/{m}")
                for m in (
                    "package.json",
                    "pyproject.toml",
                    "requirements.txt",
                    "go.mod",
                    "Cargo.toml",
                    "pom.xml",
                    "Gemfile",
                    "composer.json",
                )
            )
        ]
    sub_apps = [a for a in (detect_app(files, c) for c in candidates) if a is not None]
    # packages/* holding plain Node/React code are shared libraries, not deployable apps.
    sub_apps = [
        a
        for a in sub_apps
        if not (a.path.startswith("packages/") and a.framework in ("node", "react"))
    ]
    notes: list[str] = []
    root_app = detect_app(files, ".")
    if len(sub_apps) >= 2 or (tool and sub_apps):
        apps = sub_apps
        is_monorepo = True
        notes.append(f"monorepo with {len(apps)} apps" + (f" ({tool})" if tool else ""))
    elif root_app is not None:
        apps, is_monorepo = [root_app], False
    elif sub_apps:
        apps, is_monorepo = sub_apps, False
    else:
        apps, is_monorepo = (
            [
                AppDetection(
                    name=root.name or "app",
                    language="unknown",
                    framework="unknown",
                    confidence=0.1,
                    evidence=["no manifest, lockfile, index.html or Dockerfile found"],
                )
            ],
            False,
        )
        notes.append("nothing recognisable: the pipeline is a placeholder to edit")

    workspace_install = workspace_image = None
    if is_monorepo and root_app is not None and root_app.language in ("javascript", "typescript"):
        # JS workspaces install once at the root; each app then runs its scripts in place.
        workspace_install, workspace_image = root_app.install_command, root_app.image
        for app in apps:
            if app.language in ("javascript", "typescript"):
                app.install_command = None

    def rank(app: AppDetection) -> tuple[int, int, float]:
        hinted = framework_hint is not None and framework_hint.lower() in app.framework
        chosen = app_path is not None and app.path == app_path.strip("/")
        return (int(chosen), int(hinted), app.confidence)

    apps.sort(key=rank, reverse=True)
    if framework_hint and not any(framework_hint.lower() in a.framework for a in apps):
        notes.append(f"hint {framework_hint!r} not confirmed by the repository contents")
    notes += [f"{rel} was not read: {why}" for rel, why in sorted(files.unread.items())]
    return RepoAnalysis(
        apps=apps,
        is_monorepo=is_monorepo,
        workspace_tool=tool,
        workspace_install_command=workspace_install,
        workspace_image=workspace_image,
        file_count=len(all_files),
        notes=notes,
    )


# --- proposal ------------------------------------------------------------------------------------

SECURITY_COMMANDS = {
    "npm": "npm audit --audit-level=high --omit=dev",
    "pnpm": "corepack enable && pnpm audit --audit-level high --prod",
    "yarn": "yarn audit --level high --groups dependencies || test $? -lt 8",
    "bun": "bunx --bun audit-ci --high || true",
    "poetry": "pip install pip-audit && pip-audit",
    "uv": "pip install uv && uv export --frozen --no-hashes > /tmp/req.txt && "
    "uvx pip-audit -r /tmp/req.txt",
    "go modules": "go install golang.org/x/vuln/cmd/govulncheck@latest && govulncheck ./...",
    "cargo": "cargo install cargo-audit --locked && cargo audit",
    "bundler": "gem install bundler-audit && bundle-audit check --update",
    "composer": "composer audit",
}


def _security_command(app: AppDetection) -> str | None:
    if app.package_manager == "pip":
        if app.install_command and "requirements" in app.install_command:
            return "pip install pip-audit && pip-audit -r requirements.txt"
        return "pip install pip-audit && pip-audit ."
    return SECURITY_COMMANDS.get(app.package_manager or "")


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "app"


# Marks a deploy stage done by Forgeline itself: exports turn it into a call to the deployments API.
FORGELINE_DEPLOY = "forgeline"
NO_ENVIRONMENT_DEPLOY = (
    'echo "No deploy environment chosen: this stage deploys nothing. Generate the pipeline with'
    " input_data.preferences.deploy_environment_id, or set conditions.deploy_environment_id on"
    ' this stage, to deploy through Forgeline."'
)


def _shell_label(text: str) -> str:
    """An environment name made safe inside a double-quoted shell string."""
    return re.sub(r"[^A-Za-z0-9 ._:/-]+", "-", text).strip()[:100] or "environment"


def _deploy_commands(
    app: AppDetection, prefs: Preferences
) -> tuple[str | None, list[str], dict[str, Any]]:
    """Image, commands and extra conditions of the deploy stage for the chosen provider."""
    out = app.output_directory or "."
    where = "." if app.path in ("", ".") else app.path
    match (prefs.deploy_provider or "forgeline").lower():
        case "vercel":
            return "node:20", ['npx --yes vercel deploy --prod --yes --token "$VERCEL_TOKEN"'], {}
        case "netlify":
            return (
                "node:20",
                [f'npx --yes netlify-cli deploy --prod --dir "{out}" --auth "$NETLIFY_AUTH_TOKEN"'],
                {},
            )
        case "docker":
            return (
                None,
                [
                    f'docker build -t "$IMAGE_NAME:$COMMIT_SHA" {where}',
                    'docker push "$IMAGE_NAME:$COMMIT_SHA"',
                ],
                {},
            )
        case _:
            # Inside Forgeline the run starts DeploymentWorkflow as a child when this stage
            # succeeds (conditions.deploy_environment_id): the command needs no credentials.
            # Exports replace it with a call to the deployments API (forgeline.pipeline_export).
            extra: dict[str, Any] = {"deploy_via": FORGELINE_DEPLOY}
            if prefs.deploy_environment_id is None:
                return "alpine:3.20", [NO_ENVIRONMENT_DEPLOY], extra
            label = _shell_label(prefs.deploy_environment_name or str(prefs.deploy_environment_id))
            extra["deploy_environment_id"] = str(prefs.deploy_environment_id)
            return (
                "alpine:3.20",
                [f'echo "Deploying $FORGELINE_COMMIT_SHA to {label} through Forgeline"'],
                extra,
            )


def propose_pipeline(
    analysis: RepoAnalysis,
    preferences: Preferences | None = None,
    *,
    name: str | None = None,
    default_branch: str = "main",
) -> PipelineProposal:
    """Ordered stages per app (prefixed in a monorepo), then one security scan and one deploy."""
    prefs = preferences or Preferences()
    branch = prefs.default_branch or default_branch
    stages: list[ProposedStage] = []
    multi = len(analysis.apps) > 1

    def add(stage: ProposedStage) -> str:
        stages.append(stage)
        return stage.name

    root_install: str | None = None
    root_lockfiles = [
        n
        for n in LOCKFILE_NAMES
        if analysis.workspace_install_command
        and n in ("package-lock.json", "yarn.lock", "pnpm-lock.yaml", "bun.lockb", "bun.lock")
    ]
    if analysis.workspace_install_command:
        root_install = add(
            ProposedStage(
                name="install",
                stage_type="install",
                commands=[analysis.workspace_install_command],
                image=analysis.workspace_image,
                cache_paths=analysis.apps[0].cache_paths,
                cache_key_files=root_lockfiles,
                timeout_seconds=900,
            )
        )

    build_names: list[str] = []
    for app in analysis.apps:
        prefix = f"{_slug(app.name)}-" if multi else ""
        workdir = app.path or "."
        services = ["docker:27-dind"] if app.framework == "dockerfile" else []
        previous: list[str] = [root_install] if root_install else []
        # Each CI job starts from a clean checkout: re-run the install (cached) where needed.
        setup = [app.install_command] if app.install_command else []
        if root_install and analysis.workspace_install_command and not app.install_command:
            up = "/".join([".."] * len(PurePosixPath(workdir).parts)) or "."
            setup = [f"(cd {up} && {analysis.workspace_install_command})"]
        if app.install_command:
            previous = [
                add(
                    ProposedStage(
                        name=f"{prefix}install",
                        stage_type="install",
                        commands=[app.install_command],
                        image=app.image,
                        working_directory=workdir,
                        cache_paths=app.cache_paths,
                        cache_key_files=app.lockfiles or root_lockfiles,
                        timeout_seconds=900,
                    )
                )
            ]
        checks: list[str] = []
        if prefs.include_lint and app.lint_command:
            image = app.image
            if app.framework == "dockerfile":
                image = "hadolint/hadolint:latest-debian"
            checks.append(
                add(
                    ProposedStage(
                        name=f"{prefix}lint",
                        stage_type="lint",
                        commands=[*setup, app.lint_command],
                        image=image,
                        working_directory=workdir,
                        depends_on=previous,
                        cache_paths=app.cache_paths,
                        cache_key_files=app.lockfiles or root_lockfiles,
                        timeout_seconds=600,
                    )
                )
            )
        if prefs.include_tests and app.test_command:
            checks.append(
                add(
                    ProposedStage(
                        name=f"{prefix}test",
                        stage_type="test",
                        commands=[*setup, app.test_command],
                        image=app.image,
                        working_directory=workdir,
                        depends_on=previous,
                        cache_paths=app.cache_paths,
                        cache_key_files=app.lockfiles or root_lockfiles,
                        env={"CI": "true"},
                        timeout_seconds=1200,
                    )
                )
            )
        if app.build_command:
            artifact = (
                [app.output_directory if workdir == "." else f"{workdir}/{app.output_directory}"]
                if app.output_directory
                else []
            )
            build_names.append(
                add(
                    ProposedStage(
                        name=f"{prefix}build",
                        stage_type="build",
                        commands=[*setup, app.build_command],
                        image=app.image,
                        services=services,
                        working_directory=workdir,
                        depends_on=checks or previous,
                        cache_paths=app.cache_paths,
                        cache_key_files=app.lockfiles or root_lockfiles,
                        artifact_paths=artifact,
                        timeout_seconds=max(600, app.estimated_build_seconds * 4),
                    )
                )
            )
        else:
            build_names.extend(checks or previous)

    primary = analysis.apps[0]
    scan_name: str | None = None
    scans = [(app, cmd) for app in analysis.apps if (cmd := _security_command(app))]
    if prefs.include_security_scan and scans:
        first = scans[0][0]
        if len(scans) == 1:
            commands, workdir = [scans[0][1]], first.path
        else:
            commands = [f"(cd {app.path} && {cmd})" for app, cmd in scans]
            workdir = "."
        scan_name = add(
            ProposedStage(
                name="security-scan",
                stage_type="security_scan",
                commands=commands,
                image=first.image,
                working_directory=workdir,
                depends_on=[s for s in build_names if s],
                timeout_seconds=600,
            )
        )
    deploy_after = [scan_name] if scan_name else [s for s in build_names if s]
    if primary.framework != "unknown" and (prefs.deploy_provider or "").lower() != "none":
        image, commands, extra = _deploy_commands(primary, prefs)
        conditions: dict[str, Any] = {
            "branch": [branch],
            "previous_stage_status": "success",
            **extra,
        }
        add(
            ProposedStage(
                name="deploy",
                stage_type="deploy",
                commands=commands,
                image=image,
                services=["docker:27-dind"] if image is None else [],
                depends_on=deploy_after,
                conditions=conditions,
                timeout_seconds=900,
            )
        )
    if not stages:
        add(
            ProposedStage(
                name="build",
                stage_type="build",
                commands=['echo "No build system detected; edit this pipeline." && exit 1'],
                image="alpine:3.20",
            )
        )
    triggers: dict[str, Any] = {
        "on_push": {"branches": [branch]},
        "on_pull_request": {"branches": [branch]},
        "manual": True,
    }
    types = {s.stage_type for s in stages}
    pipeline_type = (
        "full_cicd"
        if "deploy" in types and len(types) > 1
        else (
            "deploy_only"
            if types == {"deploy"}
            else ("build_only" if "build" in types else "test_only")
        )
    )
    label = "monorepo" if analysis.is_monorepo else primary.framework
    return PipelineProposal(
        name=name or f"{label} CI/CD",
        pipeline_type=pipeline_type,
        framework=label if analysis.is_monorepo else primary.framework,
        triggers=triggers,
        stages=stages,
        estimated_build_seconds=sum(a.estimated_build_seconds for a in analysis.apps),
    )
