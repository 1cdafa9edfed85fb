"""Environment variables stored in project/environment config: secret values encrypted at rest,
masked in every API answer, revealed only inside the activity that runs a build or deploy."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from forgeline.crypto import decrypt_str, encrypt_str, rotate_str
from forgeline.settings import Settings

MASK = "********"


def seal(
    variables: Iterable[Mapping[str, Any]],
    previous: Iterable[Mapping[str, Any]] = (),
    settings: Settings | None = None,
) -> list[dict[str, Any]]:
    """Stored form of validated variables: `{name, secret, value}` or `{name, secret,
    value_encrypted}`. A secret sent back as the mask keeps the previously stored ciphertext,
    so a client can round-trip a config it read without wiping its secrets."""
    earlier = {str(v["name"]): v for v in previous if v.get("secret")}
    sealed: list[dict[str, Any]] = []
    for var in variables:
        name, value, secret = str(var["name"]), str(var["value"]), bool(var.get("secret"))
        if not secret:
            sealed.append({"name": name, "secret": False, "value": value})
            continue
        kept = earlier.get(name)
        if value == MASK and kept is not None and "value_encrypted" in kept:
            ciphertext = str(kept["value_encrypted"])
        else:
            ciphertext = encrypt_str(value, settings)
        sealed.append({"name": name, "secret": True, "value_encrypted": ciphertext})
    return sealed


def masked(stored: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """What the API returns: plain values for ordinary variables, the mask for secrets."""
    return [
        {
            "name": str(v.get("name", "")),
            "secret": bool(v.get("secret")),
            "value": MASK if v.get("secret") else str(v.get("value", "")),
        }
        for v in stored
    ]


def reveal(stored: Iterable[Mapping[str, Any]], settings: Settings | None = None) -> dict[str, str]:
    """Plain name -> value map for a build/deploy step. Call inside activities only."""
    result: dict[str, str] = {}
    for v in stored:
        if v.get("secret"):
            result[str(v["name"])] = decrypt_str(str(v["value_encrypted"]), settings)
        else:
            result[str(v["name"])] = str(v.get("value", ""))
    return result


def secret_values(
    stored: Iterable[Mapping[str, Any]], settings: Settings | None = None
) -> set[str]:
    """The plain secret values, for masking them in stage logs."""
    return {value for value in reveal([v for v in stored if v.get("secret")], settings).values()}


def rotate(
    stored: Iterable[Mapping[str, Any]], settings: Settings | None = None
) -> list[dict[str, Any]]:
    """Re-encrypt secret values under the newest key (for key rotation)."""
    rotated: list[dict[str, Any]] = []
    for v in stored:
        item = dict(v)
        if item.get("secret") and item.get("value_encrypted"):
            item["value_encrypted"] = rotate_str(str(item["value_encrypted"]), settings)
        rotated.append(item)
    return rotated


def rotate_snapshot(
    snapshot: Mapping[str, Any], settings: Settings | None = None
) -> dict[str, Any]:
    """A run's variables snapshot (see activities/runs/run_variables.py) under the newest
    key: the run's own encrypted variables and every secret of its project and environments."""
    rotated = dict(snapshot)
    if rotated.get("run"):
        rotated["run"] = rotate_str(str(rotated["run"]), settings)
    rotated["project"] = rotate(rotated.get("project") or [], settings)
    rotated["environments"] = {
        env_id: rotate(variables or [], settings)
        for env_id, variables in (rotated.get("environments") or {}).items()
    }
    return rotated
