"""A Django app whose static files go through a manifest storage (Django's or WhiteNoise's)
collects them before its tests, which run with DEBUG off and would otherwise fail on a missing
manifest entry; a plain storage gets no such step, and a settings file linked from outside the
repository is not read."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.agent.analysis import analyze_repository
from core.agent.proposal import propose_pipeline

WHITENOISE = 'STORAGES = {"staticfiles": {"BACKEND": ' \
    '"whitenoise.storage.CompressedManifestStaticFilesStorage"}}\n'  # fmt: skip
COLLECT = "python manage.py collectstatic --noinput"


def _django(root: Path, settings: dict[str, str]) -> Path:
    (root / "manage.py").write_text("import os\n")
    (root / "requirements.txt").write_text("Django==5.1\nwhitenoise==6.6\n")
    for rel, text in settings.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


@pytest.mark.parametrize(
    ("settings", "collects"),
    [
        ({"site/settings.py": WHITENOISE}, True),
        ({"site/settings/__init__.py": "", "site/settings/base.py": WHITENOISE}, True),
        ({"settings.py": "STATICFILES_STORAGE = 'x.ManifestStaticFilesStorage'\n"}, True),
        ({"site/settings.py": "STATIC_URL = '/static/'\n"}, False),
    ],
)
def test_manifest_storage_collects_static_files_before_the_tests(
    tmp_path: Path, settings: dict[str, str], collects: bool
) -> None:
    analysis = analyze_repository(_django(tmp_path, settings))
    app = analysis.primary
    assert app.framework == "django"
    assert (COLLECT in app.setup_commands) is collects
    test = next(s for s in propose_pipeline(analysis).stages if s.stage_type == "test")
    if collects:
        assert test.commands.index(COLLECT) < test.commands.index(app.test_command or "")


def test_a_settings_file_linked_from_outside_is_not_read(tmp_path: Path) -> None:
    outside = tmp_path / "outside.py"
    outside.write_text(WHITENOISE)
    repo = tmp_path / "repo"
    (repo / "site").mkdir(parents=True)
    (repo / "site" / "settings.py").symlink_to(outside)
    analysis = analyze_repository(_django(repo, {}))
    assert COLLECT not in analysis.primary.setup_commands
