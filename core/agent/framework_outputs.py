"""Where a frontend framework writes its build, read from the framework's own config
(angular.json outputPath, the SvelteKit adapter, astro/vite outDir, Next.js distDir/export)."""

from __future__ import annotations

import re
from typing import Any

from core.agent.repo_files import RepoFiles, join

_OUT_DIR = re.compile(r"""\boutDir\s*:\s*['"`]([^'"`$]+)['"`]""")
_DIST_DIR = re.compile(r"""\bdistDir\s*:\s*['"`]([^'"`$]+)['"`]""")
_PAGES = re.compile(r"""\bpages\s*:\s*['"`]([^'"`$]+)['"`]""")
_ADAPTER = re.compile(r"@sveltejs/adapter-([a-z-]+)")
ASTRO_CONFIGS = ("astro.config.mjs", "astro.config.ts", "astro.config.js")
VITE_CONFIGS = ("vite.config.ts", "vite.config.js", "vite.config.mjs", "vite.config.mts")
SVELTE_ADAPTER_OUTPUT = {
    "static": "build",
    "node": "build",
    "netlify": "build",
    "vercel": ".vercel/output",
    "cloudflare": ".svelte-kit/cloudflare",
    "auto": ".svelte-kit",
}


def relative_dir(value: str) -> str | None:
    """A path inside the app, normalised; absolute or escaping paths are not an output."""
    value = value.strip().removeprefix("./").rstrip("/")
    if not value or value.startswith(("/", "~", "$")) or ".." in value.split("/"):
        return None
    return value


def _config_text(files: RepoFiles, base: str, names: tuple[str, ...]) -> str:
    return "\n".join(files.text(join(base, n)) or "" for n in names)


def _strip_comments(text: str) -> str:
    return re.sub(r"//[^\n]*|/\*.*?\*/", "", text, flags=re.DOTALL)


def angular_output(files: RepoFiles, base: str) -> str | None:
    ng = files.json(join(base, "angular.json")) or {}
    projects = ng.get("projects")
    if not isinstance(projects, dict) or not projects:
        return None
    default = ng.get("defaultProject")
    name = default if isinstance(default, str) and default in projects else next(iter(projects))
    project = projects.get(name) if isinstance(projects.get(name), dict) else {}
    architect = (project or {}).get("architect")
    build: Any = architect.get("build") if isinstance(architect, dict) else None
    builder = str(build.get("builder") or "") if isinstance(build, dict) else ""
    options = (build.get("options") or {}) if isinstance(build, dict) else {}
    # The application builder (Angular 17+) puts the browser bundle in a `browser` subfolder.
    browser_sub = builder.endswith(":application")
    path: Any = options.get("outputPath") if isinstance(options, dict) else None
    if isinstance(path, dict):
        base_dir = relative_dir(str(path.get("base") or f"dist/{name}"))
        sub = path.get("browser", "browser")
        return f"{base_dir}/{sub}".rstrip("/") if base_dir and isinstance(sub, str) else base_dir
    out = relative_dir(path) if isinstance(path, str) else relative_dir(f"dist/{name}")
    return f"{out}/browser" if out and browser_sub else out


def sveltekit_output(files: RepoFiles, base: str) -> str | None:
    text = _strip_comments(_config_text(files, base, ("svelte.config.js", "svelte.config.ts")))
    adapter = _ADAPTER.search(text)
    if adapter is None:
        return None
    name = adapter.group(1)
    if name == "static":
        pages = _PAGES.search(text)
        return relative_dir(pages.group(1)) if pages else "build"
    return SVELTE_ADAPTER_OUTPUT.get(name)


def vite_like_output(files: RepoFiles, base: str, names: tuple[str, ...]) -> str | None:
    match = _OUT_DIR.search(_strip_comments(_config_text(files, base, names)))
    return relative_dir(match.group(1)) if match else None


def nextjs_output(files: RepoFiles, base: str) -> str | None:
    names = ("next.config.js", "next.config.mjs", "next.config.ts")
    text = _strip_comments(_config_text(files, base, names))
    if re.search(r"output\s*:\s*['\"]export['\"]", text):
        return "out"
    match = _DIST_DIR.search(text)
    return relative_dir(match.group(1)) if match else None


def declared_output(files: RepoFiles, base: str, framework: str) -> str | None:
    """The output directory the framework's config declares, or None to keep the default."""
    match framework:
        case "angular":
            return angular_output(files, base)
        case "sveltekit":
            return sveltekit_output(files, base)
        case "nextjs":
            return nextjs_output(files, base)
        case "astro":
            return vite_like_output(files, base, ASTRO_CONFIGS)
        case "react-vite" | "vue" | "svelte" | "remix":
            return vite_like_output(files, base, VITE_CONFIGS)
    return None
