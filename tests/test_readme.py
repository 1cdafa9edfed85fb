"""The README's configuration table lists every setting with its current default."""

from __future__ import annotations

from forgeline.settings_doc import README, START, render


def test_readme_settings_table_is_current() -> None:
    text = README.read_text()
    assert text.startswith("# Forgeline\n\n```sh\nmake run")
    assert START in text
    assert render(text) == text, "README settings table is stale: run `make readme`"
