"""Key rotation reaches the secrets inside project/environment configs (JSONB), not only the
`*_encrypted` columns."""

from __future__ import annotations

import uuid

from cryptography.fernet import Fernet
from pydantic import SecretStr

from db.key_rotation import rotate_config_secrets
from db.models.projects import Environment, Project
from db.session import session_scope
from forgeline import environment_variables as env_vars
from forgeline.crypto import DecryptionFailed
from forgeline.settings import Settings
from tests.factories import make_org


async def test_rotation_moves_config_secrets_to_the_newest_key(app, session_maker) -> None:
    current: Settings = app.state.settings
    old_key = Fernet.generate_key().decode()
    old = current.model_copy(update={"encryption_keys": SecretStr(old_key)})
    # The session's key first (newest), the old one still accepted: what an operator deploys
    # before running `forgeline rotate-keys`. Rows already on the session key stay readable.
    both = current.model_copy(
        update={
            "encryption_keys": SecretStr(f"{current.encryption_keys.get_secret_value()},{old_key}")
        }
    )
    org = await make_org(session_maker)
    project_id, env_id = uuid.uuid4(), uuid.uuid4()
    sealed = env_vars.seal([{"name": "TOKEN", "value": "rotate-me", "secret": True}], (), old)
    async with session_scope(session_maker) as session:
        session.add(
            Project(
                id=project_id,
                organization_id=org.org_id,
                name="Rotation",
                slug=f"rot-{project_id.hex[:8]}",
                project_type="api",
                config={"environment_variables": sealed},
            )
        )
        await session.flush()
        session.add(
            Environment(
                id=env_id,
                project_id=project_id,
                name="prod",
                env_type="production",
                provider="static",
                config={"environment_variables": sealed},
            )
        )
    try:
        env_vars.reveal(sealed, current)
        raise AssertionError("the old key must not be readable with the current key alone")
    except DecryptionFailed:
        pass

    counts = await rotate_config_secrets(session_maker, both)
    assert counts["projects.config.environment_variables"] >= 1
    assert counts["environments.config.environment_variables"] >= 1
    async with session_maker() as session:
        for model, row_id in ((Project, project_id), (Environment, env_id)):
            row = await session.get(model, row_id)
            assert row is not None
            assert env_vars.reveal(row.config["environment_variables"], current) == {
                "TOKEN": "rotate-me"
            }


def test_a_runs_variables_snapshot_rotates_with_its_sources(settings) -> None:
    """An unfinished run's snapshot holds the same ciphertexts as its sources: rotated to the
    newest key, every secret in it still reads the same."""
    from activities.runs.run_variables import stage_variables
    from forgeline.crypto import encrypt_str

    old_key = Fernet.generate_key().decode()
    old = settings.model_copy(update={"encryption_keys": SecretStr(old_key)})
    both = settings.model_copy(
        update={
            "encryption_keys": SecretStr(f"{settings.encryption_keys.get_secret_value()},{old_key}")
        }
    )
    env_id = str(uuid.uuid4())
    sealed = env_vars.seal([{"name": "TOKEN", "value": "rotate-me", "secret": True}], (), old)
    snapshot = {
        "run": encrypt_str('[{"name": "RUN", "value": "run-secret", "secret": true}]', old),
        "project": sealed,
        "environments": {env_id: sealed},
        "environment_id": env_id,
    }
    rotated = env_vars.rotate_snapshot(snapshot, both)
    variables = stage_variables(settings, rotated, None)  # the newest key alone reads it
    assert variables.env == {"TOKEN": "rotate-me", "RUN": "run-secret"}
    assert sorted(variables.secrets) == ["rotate-me", "rotate-me", "run-secret"]
