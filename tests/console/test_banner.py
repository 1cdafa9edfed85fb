"""`make run` prints where the web console is."""

from __future__ import annotations

from forgeline.settings import Settings
from forgeline.stack import banner


def test_the_run_banner_names_the_console_url(settings: Settings) -> None:
    text = banner(settings, {})
    assert f"  Web console    http://localhost:{settings.api_port}/\n" in text
