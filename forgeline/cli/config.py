"""Named profiles (server URL and API key) in $XDG_CONFIG_HOME/forgeline/config.toml, and the
`forgeline config ...` commands that manage them. The file holds keys: it is written 0600 and
refused when group or others can read it, as ssh does with private keys."""

from __future__ import annotations

import json
import os
import re
import stat
import sys
import tomllib
from pathlib import Path
from typing import Annotated, Any

import typer

NAME = "config"
app = typer.Typer(help="Named profiles: server URL and API key.", no_args_is_help=True)

PROFILE_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class ConfigError(Exception):
    """The config file cannot be used; the message says why and where."""


def config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "forgeline" / "config.toml"


def load() -> dict[str, Any]:
    """The parsed config file ({} when there is none)."""
    path = config_path()
    try:
        info = path.stat()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from exc
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"{path} is not a regular file")
    if info.st_mode & 0o077:
        raise ConfigError(
            f"{path} is readable by others (mode {stat.S_IMODE(info.st_mode):o}); "
            f"it holds API keys: chmod 600 {path}"
        )
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from exc
    profiles = data.get("profiles", {})
    if not isinstance(profiles, dict) or not all(isinstance(p, dict) for p in profiles.values()):
        raise ConfigError(f"{path}: [profiles.<name>] tables expected")
    return data


def profile(name: str | None) -> dict[str, str]:
    """The named profile, else the default one, else {} (settings and flags decide)."""
    data = load()
    chosen = name or os.environ.get("FORGELINE_PROFILE") or data.get("default_profile")
    if not chosen:
        return {}
    found = data.get("profiles", {}).get(chosen)
    if found is None:
        raise ConfigError(f"No profile {chosen!r} in {config_path()}")
    return {k: str(v) for k, v in found.items() if k in ("api_url", "api_key")}


def _quote(value: str) -> str:
    # TOML basic string: escape backslash, quote and every control character.
    out = []
    for ch in value:
        if ch in '"\\':
            out.append("\\" + ch)
        elif not ch.isprintable():
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def save(data: dict[str, Any]) -> Path:
    """Write the file 0600 from the start (never briefly world-readable), then move it in."""
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    lines = []
    if data.get("default_profile"):
        lines.append(f"default_profile = {_quote(str(data['default_profile']))}")
    for name, values in sorted(data.get("profiles", {}).items()):
        lines.append("")
        lines.append(f"[profiles.{_quote(name)}]")
        for key in ("api_url", "api_key"):
            if values.get(key):
                lines.append(f"{key} = {_quote(str(values[key]))}")
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    os.replace(tmp, path)
    return path


def _fail(exc: ConfigError) -> typer.Exit:
    typer.echo(f"Error: {exc}", err=True)
    return typer.Exit(2)


def _load() -> dict[str, Any]:
    """The configuration file, or exit 2 with the reason it cannot be read."""
    try:
        return load()
    except ConfigError as exc:
        raise _fail(exc) from exc


def _profiles(data: dict[str, Any], name: str) -> dict[str, Any]:
    """A copy of the profiles, which must include `name` (else exit 2)."""
    profiles = dict(data.get("profiles", {}))
    if name not in profiles:
        raise _fail(ConfigError(f"No profile {name!r} in {config_path()}"))
    return profiles


def _check_name(name: str) -> str:
    if not re.match(PROFILE_NAME, name):
        raise typer.BadParameter("letters, digits, '.', '_' and '-', at most 64")
    return name


@app.command("set")
def set_profile(
    name: Annotated[str, typer.Argument(callback=_check_name, help="Profile name.")],
    api_url: Annotated[str, typer.Option("--api-url", help="Server URL.")],
    api_key_env: Annotated[
        str | None,
        typer.Option(help="Name of an environment variable holding the key (else read stdin)."),
    ] = None,
    default: Annotated[bool, typer.Option("--default", help="Make it the default.")] = False,
) -> None:
    """Add or replace a profile. The key comes from an environment variable or standard input,
    never from the command line (shell history, process lists)."""
    if not api_url.startswith(("http://", "https://")):
        raise typer.BadParameter("must start with http:// or https://", param_hint="--api-url")
    if api_key_env:
        key = os.environ.get(api_key_env, "")
        if not key:
            typer.echo(f"Error: {api_key_env} is not set", err=True)
            raise typer.Exit(2)
    else:
        key = sys.stdin.readline().strip()
    data = _load()
    profiles = dict(data.get("profiles", {}))
    profiles[name] = {"api_url": api_url, **({"api_key": key} if key else {})}
    data["profiles"] = profiles
    if default or not data.get("default_profile"):
        data["default_profile"] = name
    path = save(data)
    typer.echo(f"Profile {name} saved in {path}")


@app.command("use")
def use_profile(name: str) -> None:
    """Make a profile the default."""
    data = _load()
    _profiles(data, name)
    data["default_profile"] = name
    save(data)
    typer.echo(f"Default profile: {name}")


@app.command("list")
def list_profiles(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Profiles with their server URL (keys are never printed)."""
    data = _load()
    rows = [
        {
            "name": name,
            "api_url": values.get("api_url"),
            "has_api_key": bool(values.get("api_key")),
            "default": name == data.get("default_profile"),
        }
        for name, values in sorted(data.get("profiles", {}).items())
    ]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        mark = "*" if row["default"] else " "
        typer.echo(f"{mark} {row['name']}\t{row['api_url']}")


@app.command("remove")
def remove_profile(name: str) -> None:
    data = _load()
    profiles = _profiles(data, name)
    del profiles[name]
    data["profiles"] = profiles
    if data.get("default_profile") == name:
        data.pop("default_profile")
    save(data)
    typer.echo(f"Profile {name} removed")
