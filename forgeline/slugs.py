"""The one slug rule for names shown in URLs (organizations, projects, generated job names):
transliterated to ASCII ("Müller GmbH" -> "mueller-gmbh"), lowercase words joined by "-"."""

from __future__ import annotations

from slugify import slugify as _slugify


def slug(text: str, *, max_length: int = 50, fallback: str = "item", min_length: int = 1) -> str:
    """`text` as a slug of at most `max_length` characters, cut on a word boundary. A slug
    shorter than `min_length` is extended with `fallback` ("ab" -> "ab-project")."""
    made = _slugify(
        text,
        max_length=max_length,
        word_boundary=True,
        save_order=True,
        replacements=[
            ["Ä", "Ae"],
            ["Ö", "Oe"],
            ["Ü", "Ue"],
            ["ä", "ae"],
            ["ö", "oe"],
            ["ü", "ue"],
            ["ß", "ss"],
        ],
    )
    if not made:
        return fallback
    if len(made) < min_length:
        return f"{made}-{fallback}"[:max_length]
    return made
