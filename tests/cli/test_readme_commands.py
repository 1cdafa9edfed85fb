"""Every `forgeline ...` command of the README's Day-to-day section exists with the options it
shows (the commands themselves run against the real stack in the other tests here)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from typer.main import get_command

import forgeline.cli as cli

README = Path(__file__).resolve().parents[2] / "README.md"


def day_to_day_commands() -> list[list[str]]:
    text = README.read_text()
    section = text.split("## Day-to-day", 1)[1].split("\n## ", 1)[0]
    commands = []
    for line in section.splitlines():
        if line.startswith("uv run forgeline "):
            words = shlex.split(line.split("#", 1)[0].split("|")[-1])
            commands.append(words[3:])
        elif "| uv run forgeline " in line:
            words = shlex.split(line.split("| uv run forgeline ", 1)[1].split("#", 1)[0])
            commands.append(words)
    return commands


def test_day_to_day_commands_exist_with_their_options() -> None:
    commands = day_to_day_commands()
    assert len(commands) >= 10
    root = get_command(cli.app)
    for words in commands:
        command = root
        rest = list(words)
        while rest and hasattr(command, "commands") and rest[0] in command.commands:
            command = command.commands[rest.pop(0)]
        assert not hasattr(command, "commands"), f"not a command: {words}"
        known = {opt for param in command.params for opt in param.opts}
        for word in rest:
            if re.match(r"^--[a-z-]+$", word):
                assert word in known, f"{' '.join(words)}: no option {word}"
