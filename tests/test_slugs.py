"""The one slug rule: transliteration, word boundaries, length, and hostile input."""

from __future__ import annotations

from forgeline.slugs import slug


def test_names_are_transliterated_not_dropped() -> None:
    assert slug("Müller GmbH") == "mueller-gmbh"
    assert slug("Straße & Söhne") == "strasse-soehne"
    assert slug("Crème brûlée") == "creme-brulee"
    assert slug("東京 Tokyo") == "dong-jing-tokyo"


def test_cut_on_a_word_boundary_within_the_length() -> None:
    made = slug("alpha beta gamma delta", max_length=12)
    assert made == "alpha-beta" and len(made) <= 12


def test_empty_short_and_hostile_names_get_a_usable_slug() -> None:
    assert slug("", fallback="project") == "project"
    assert slug("!!!///", fallback="org") == "org"
    assert slug("../../etc/passwd") == "etc-passwd"
    assert slug("ab", fallback="project", min_length=3) == "ab-project"
    assert slug("x" * 500, max_length=50) == "x" * 50
    controls = slug("a\x00b\u202ec")
    assert controls.startswith("a-b") and controls.replace("-", "").isalnum() and controls.isascii()
