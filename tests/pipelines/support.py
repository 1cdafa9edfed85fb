"""Builders for pipeline-definition tests: a project, a canonical document, requests."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

YAML = {"Content-Type": "application/yaml"}
ACCEPT_YAML = {"Accept": "application/yaml"}

# Canonical form: model field order, defaults left out, block style (what GET returns).
CANONICAL = """\
name: web
description: Build and test the web app
image: node:20-bookworm
triggers:
  on_push:
    branches:
    - main
variables:
  NODE_ENV: test
stages:
- name: install
  type: install
  commands:
  - npm ci
  cache:
  - node_modules
- name: test
  type: test
  commands:
  - npm test
  - |-
    echo "multi
    line"
  depends_on:
  - install
  timeout_seconds: 900
  retries: 2
  when:
    branches:
    - main
    - release/*
  artifacts:
  - coverage/lcov.info
  environment:
    CI_SHARD: '1'
"""


def headers(org: Any, **extra: str) -> dict[str, str]:
    return {**org.headers, **extra}


async def create(
    client: httpx.AsyncClient, org: Any, project_id: uuid.UUID, text: str = CANONICAL
) -> uuid.UUID:
    resp = await client.post(
        f"/v1/projects/{project_id}/pipelines", content=text, headers=headers(org, **YAML)
    )
    assert resp.status_code == 201, resp.text
    return uuid.UUID(resp.headers["Location"].rsplit("/", 1)[1])


def with_name(text: str, name: str) -> str:
    return text.replace("name: web\n", f"name: {name}\n", 1)
