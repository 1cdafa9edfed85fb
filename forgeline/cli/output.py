"""The root command group: `--output json|table` accepted on every command (spelled `--json`
inside), and an answer the API would never give reported as one line instead of a traceback."""

from __future__ import annotations

from typing import Any

import typer
from typer._click.core import Context
from typer._click.exceptions import UsageError
from typer.core import TyperGroup

OUTPUT_FORMATS = ("json", "table")


def normalize_output(args: list[str]) -> list[str]:
    """`--output json`, `-o json` and `--output=json` become `--json`; `table` is the default
    and is dropped. Anything after `--` is left alone."""
    out: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            out.extend(args[i:])
            break
        value: str | None = None
        if arg in ("--output", "-o") and i + 1 < len(args):
            value, i = args[i + 1], i + 2
        elif arg.startswith("--output="):
            value, i = arg.split("=", 1)[1], i + 1
        else:
            out.append(arg)
            i += 1
            continue
        if value not in OUTPUT_FORMATS:
            raise UsageError(f"--output must be one of {', '.join(OUTPUT_FORMATS)}")
        if value == "json":
            out.append("--json")
    return out


class ForgelineGroup(TyperGroup):
    def parse_args(self, ctx: Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, normalize_output(list(args)))

    def invoke(self, ctx: Context) -> Any:
        try:
            return super().invoke(ctx)
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            if isinstance(exc, typer.TyperException):
                raise
            # Commands read the API's documented shapes; anything else came from a server that
            # is not a Forgeline API (or a proxy's error page).
            typer.echo(
                f"Error: unexpected answer from the server ({type(exc).__name__}: {exc})",
                err=True,
            )
            raise typer.Exit(1) from exc
