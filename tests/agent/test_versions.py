"""Toolchain versions from what a repository declares, resolved with real constraint parsers, and
pip requirement files read as pip reads them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.agent.analysis import analyze_repository
from core.agent.python_requirements import requirement_names
from core.agent.repo_files import RepoFiles
from core.agent.versions import (
    java_version,
    newest_python,
    node_major_for,
    node_version,
    php_version,
    python_version,
    ruby_version,
    rust_toolchain,
)


def _repo(root: Path, files: dict[str, str]) -> RepoFiles:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    return RepoFiles(root)


@pytest.mark.parametrize(
    ("constraint", "expected"),
    [
        ("<=3.11", "3.11"),
        (">=3.9,!=3.12.*", "3.13"),
        (">=3.9,!=3.12.*,<3.13", "3.11"),
        ("^3.10", "3.13"),
        ("~3.10", "3.10"),
        ("~3.10.4", "3.10"),
        ("^3.9,<3.12", "3.11"),
        (">=3.8,<3.11", "3.10"),
        ("3.10.*", "3.10"),
        ("==3.10.*", "3.10"),
        ("~=3.10", "3.13"),
        (">=3.11,<3.12", "3.11"),
        ("<3.12", "3.11"),
        (">3.10", "3.13"),
        ("^3.8 || ^3.10,<3.11", "3.13"),
        (">=3.7, <3.10", "3.9"),
    ],
)
def test_python_constraints_pick_the_newest_admitted_version(
    constraint: str, expected: str
) -> None:
    assert newest_python(constraint) == expected


@pytest.mark.parametrize("hostile", [">=4", "garbage!!", "$(id)", ">=3.9;rm -rf /", "^" * 5000])
def test_python_constraints_nothing_satisfies_fall_back_to_the_default(
    hostile: str, tmp_path: Path
) -> None:
    assert newest_python(hostile) is None
    files = _repo(
        tmp_path, {"pyproject.toml": f"[project]\nrequires-python = {json.dumps(hostile)}"}
    )
    choice = python_version(files, ".")
    assert choice.version == "3.12" and choice.source == ""


def test_python_pins_win_when_the_constraint_admits_them(tmp_path: Path) -> None:
    files = _repo(
        tmp_path,
        {
            "pyproject.toml": '[tool.poetry.dependencies]\npython = "^3.9"\n',
            ".python-version": "# pinned\n3.10.13\n",
        },
    )
    assert (python_version(files, ".").version, python_version(files, ".").source) == (
        "3.10",
        ".python-version",
    )
    (tmp_path / ".python-version").write_text("3.8.18\n")  # outside ^3.9: the constraint wins
    choice = python_version(files, ".")
    assert choice.version == "3.13" and choice.source == "tool.poetry.dependencies.python"
    assert any("outside" in note for note in choice.notes)
    (tmp_path / "pyproject.toml").write_text('[tool.poetry.dependencies]\npython = "~3.11"\n')
    (tmp_path / ".python-version").unlink()
    assert python_version(files, ".").version == "3.11"


def test_python_version_from_runtime_and_pipfile(tmp_path: Path) -> None:
    files = _repo(tmp_path / "a", {"runtime.txt": "python-3.11.4\n", "requirements.txt": ""})
    assert python_version(files, ".").version == "3.11"
    files = _repo(tmp_path / "b", {"Pipfile": '[requires]\npython_version = "3.10"\n'})
    assert python_version(files, ".").version == "3.10"


@pytest.mark.parametrize(
    ("range_text", "expected"),
    [
        (">=18 <21", 20),
        ("^18 || ^20", 20),
        ("18.x", 18),
        (">=16", 24),
        ("<17", 16),
        ("~20.11.0", 20),
        (">= 20.0.0 < 23", 22),
        ("not a range", None),
        (">=99", None),
    ],
)
def test_node_engines_pick_the_newest_admitted_major(range_text: str, expected: int | None) -> None:
    assert node_major_for(range_text) == expected


@pytest.mark.parametrize(
    ("nvmrc", "expected"),
    [
        ("v18.17.0\n", "18.17.0"),
        ("lts/*", "24"),
        ("lts/iron", "20"),
        ("20", "20"),
        ("node", "24"),
        ("lts/unknown", "20"),
        ("$(curl evil.example)", "20"),
    ],
)
def test_nvmrc_forms(nvmrc: str, expected: str, tmp_path: Path) -> None:
    files = _repo(tmp_path, {".nvmrc": nvmrc, "package.json": "{}"})
    assert node_version(files, ".", {}).version == expected


def test_node_pins_in_order_volta_nvmrc_node_version_engines(tmp_path: Path) -> None:
    files = _repo(tmp_path, {".node-version": "22.3.0\n"})
    assert node_version(files, ".", {"engines": {"node": ">=18 <21"}}).version == "20"
    assert node_version(files, ".", {}).version == "22.3.0"
    pkg = {"volta": {"node": "18.19.1"}, "engines": {"node": ">=18"}}
    assert node_version(files, ".", pkg).version == "18.19.1"


def test_a_workspace_member_reads_the_root_nvmrc(tmp_path: Path) -> None:
    files = _repo(tmp_path, {".nvmrc": "lts/hydrogen", "apps/web/package.json": "{}"})
    assert node_version(files, "apps/web", {}, ".").version == "18"


def test_node_image_from_nvmrc_and_engines_in_the_analysis(tmp_path: Path) -> None:
    pkg = {"name": "x", "scripts": {"build": "vite build"}, "engines": {"node": ">=18 <21"}}
    _repo(tmp_path, {"package.json": json.dumps(pkg), "package-lock.json": "{}"})
    assert analyze_repository(tmp_path).primary.image == "node:20"
    (tmp_path / ".nvmrc").write_text("v18.17.0\n")
    assert analyze_repository(tmp_path).primary.image == "node:18.17.0"


@pytest.mark.parametrize(
    ("constraint", "expected"),
    [("^8.1", "8.4"), (">=7.4 <8.1", "8.0"), ("~8.2.0", "8.2"), ("7.4.*|8.0.*", "8.0"),
     ("^7.4 || ^8.0,<8.3", "8.2"), ("nonsense", "8.4")],
)  # fmt: skip
def test_composer_php_constraint(constraint: str, expected: str) -> None:
    assert php_version({"require": {"php": constraint}}).version == expected


def test_composer_platform_pin_wins() -> None:
    composer = {"require": {"php": "^8.0"}, "config": {"platform": {"php": "8.1.27"}}}
    assert php_version(composer).version == "8.1"


def test_gradle_wrapper_caps_the_jdk(tmp_path: Path) -> None:
    props = "distributionUrl=https\\://services.gradle.org/distributions/gradle-7.4.2-bin.zip\n"
    files = _repo(tmp_path, {"gradle/wrapper/gradle-wrapper.properties": props, "gradlew": ""})
    assert java_version(files, ".", "plugins { id 'java' }").version == "17"
    # Gradle 7.4 cannot run on JDK 21 even though the build asks for it.
    choice = java_version(
        files, ".", "java { toolchain { languageVersion = JavaLanguageVersion.of(21) } }"
    )
    assert choice.version == "17" and choice.notes
    props8 = props.replace("7.4.2", "8.5")
    (tmp_path / "gradle/wrapper/gradle-wrapper.properties").write_text(props8)
    assert java_version(files, ".", "sourceCompatibility = '11'").version == "11"
    assert java_version(files, ".", "").version == "21"
    (tmp_path / "build.gradle").write_text("plugins { id 'java' }\n")
    app = analyze_repository(tmp_path).primary
    assert (app.image, app.test_command) == ("eclipse-temurin:21", "./gradlew test --no-daemon")


def test_maven_java_release(tmp_path: Path) -> None:
    pom = "<project><properties><java.version>17</java.version></properties></project>"
    _repo(tmp_path, {"pom.xml": pom})
    assert analyze_repository(tmp_path).primary.image == "maven:3.9-eclipse-temurin-17"


def test_go_directive_and_toolchain(tmp_path: Path) -> None:
    _repo(tmp_path, {"go.mod": "module example.com/x\n\ngo 1.21.5\n"})
    app = analyze_repository(tmp_path).primary
    assert app.image == "golang:1.21"
    assert app.cache_paths == ["/go/pkg/mod", "~/.cache/go-build"]
    (tmp_path / "go.mod").write_text("module example.com/x\n\ngo 1.21\ntoolchain go1.22.3\n")
    assert analyze_repository(tmp_path).primary.image == "golang:1.22"


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("rust-toolchain.toml", '[toolchain]\nchannel = "1.75.0"\n', "1.75.0"),
        ("rust-toolchain.toml", '[toolchain]\nchannel = "nightly-2024-05-01"\n', "nightly"),
        ("rust-toolchain", "stable\n", "1"),
        ("rust-toolchain", "1.70\n", "1.70"),
        ("rust-toolchain", "`id`\n", "1"),
    ],
)
def test_rust_toolchain(name: str, content: str, expected: str, tmp_path: Path) -> None:
    files = _repo(tmp_path, {name: content})
    assert rust_toolchain(files, ".").version == expected


def test_ruby_version_sources(tmp_path: Path) -> None:
    files = _repo(tmp_path, {".ruby-version": "ruby-3.2.2\n"})
    assert ruby_version(files, ".", "").version == "3.2"
    (tmp_path / ".ruby-version").unlink()
    assert (
        ruby_version(files, ".", "source 'https://rubygems.org'\nruby '3.1.4'\n").version == "3.1"
    )


def test_requirement_files_are_read_as_pip_reads_them(tmp_path: Path) -> None:
    _repo(
        tmp_path,
        {
            "requirements.txt": "\n".join(
                [
                    "-r requirements/base.txt",
                    "--requirement=requirements/extra.txt",
                    "-c constraints.txt",
                    "-e .",
                    "-e git+https://github.com/acme/lib.git@v1#egg=acme_lib",
                    "git+https://github.com/acme/other.git#egg=Acme.Other",
                    "Django>=4.2 ; python_version >= '3.10'  # the web framework",
                    "psycopg[binary]==3.1.18 \\",
                    "    --hash=sha256:0000000000000000000000000000000000000000000000000000",
                    "--index-url https://pypi.example/simple",
                    "-i https://pypi.example/simple",
                    "./vendor/localpkg",
                    "https://example.com/pkg-1.0.tar.gz",
                    "requests @ https://example.com/requests.whl",
                    "-r ../../etc/passwd",
                    "-r requirements.txt",
                ]
            ),
            "requirements/base.txt": "redis>=5\n-r ../requirements/common.txt\n",
            "requirements/common.txt": "celery\n",
            "requirements/extra.txt": "pytest\n",
            "constraints.txt": "never-installed==1\n",
        },
    )
    reader = requirement_names(RepoFiles(tmp_path), ".")
    assert reader.names == {
        "acme-lib", "acme-other", "django", "psycopg", "requests", "redis", "celery", "pytest",
    }  # fmt: skip
    assert not {"-r", "-e", "git", "-c", "--hash", "-i", "never-installed"} & reader.names
    assert reader.install_files(".") == ["requirements.txt"]


def test_requirement_includes_are_bounded(tmp_path: Path) -> None:
    chain = {f"r{i}.txt": f"pkg{i}\n-r r{i + 1}.txt\n" for i in range(100)}
    _repo(tmp_path, {"requirements.txt": "-r r0.txt\n", **chain})
    reader = requirement_names(RepoFiles(tmp_path), ".")
    assert len(reader.read) <= 20
    cycle = {
        "requirements.txt": "a\n-r requirements-dev.txt\n",
        "requirements-dev.txt": "b\n-r requirements.txt\n",
    }
    reader = requirement_names(RepoFiles(_repo(tmp_path / "c", cycle).root), ".")
    assert reader.names == {"a", "b"}


def test_pipenv_projects_install_and_run_through_pipenv(tmp_path: Path) -> None:
    _repo(
        tmp_path,
        {
            "Pipfile": '[packages]\nflask = "*"\n[dev-packages]\npytest = "*"\n'
            '[requires]\npython_version = "3.11"\n',
            "Pipfile.lock": "{}",
        },
    )
    app = analyze_repository(tmp_path).primary
    assert (app.framework, app.package_manager, app.image) == ("flask", "pipenv", "python:3.11")
    assert app.install_command == "pip install pipenv && pipenv install --dev --deploy"
    assert app.test_command == "pipenv run pytest"
    assert app.cache_paths == ["~/.cache/pipenv", "~/.cache/pip"]


def test_pip_installs_the_dev_requirements_that_include_the_base(tmp_path: Path) -> None:
    _repo(
        tmp_path,
        {
            "requirements.txt": "flask\n",
            "requirements-dev.txt": "-r requirements.txt\npytest\n",
        },
    )
    app = analyze_repository(tmp_path).primary
    assert app.install_command == "pip install -r requirements-dev.txt"
    assert app.test_command == "python -m pytest"
    assert app.framework == "flask"
