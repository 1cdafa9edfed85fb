"""Hostile repository URLs are refused before anything clones them."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

from forgeline.url_safety import (
    UnsafeRepositoryUrl,
    blocked_reason,
    parse_repository_url,
    resolve_for_clone,
    validate_repository_url,
)

PUBLIC = "140.82.112.3"


def fake_resolver(table: dict[str, list[str]]):
    async def resolve(host: str, port: int) -> Sequence[str]:
        if host not in table:
            raise UnsafeRepositoryUrl(f"host {host!r} does not resolve")
        return table[host]

    return resolve


PUBLIC_DNS = fake_resolver(
    {
        "github.com": [PUBLIC],
        "gitlab.com": ["172.65.251.78", "2606:4700:90:0:f22e:fbec:5bed:a9b9"],
    }
)


@pytest.mark.parametrize(
    "url",
    [
        "https://github.com/forgeline/demo.git",
        "https://github.com/forgeline/demo",
        "ssh://git@github.com/forgeline/demo.git",
        "ssh://git@github.com:2222/forgeline/demo.git",
        "git@github.com:forgeline/demo.git",
        "https://gitlab.com/group/sub/project.git",
        "https://GitHub.com/forgeline/demo.git",
    ],
)
async def test_accepts_public_https_and_ssh(url: str) -> None:
    validated = await validate_repository_url(url, allow_local=False, resolver=PUBLIC_DNS)
    assert validated.kind in ("https", "ssh")
    assert validated.addresses


HOSTILE_STRUCTURE = [
    "",
    " https://github.com/a/b",
    "https://github.com/a/b\n",
    "-uhttps://github.com/a/b",
    "--upload-pack=touch /tmp/pwned",
    "ext::sh -c touch% /tmp/pwned",
    "fd::17",
    "foo::bar",
    "file:///etc",
    "file:/etc/passwd",
    "/etc",
    "./repo",
    "~/repo",
    "git://github.com/a/b.git",
    "http://github.com/a/b.git",
    "ftp://github.com/a/b.git",
    "https://user:pass@github.com/a/b.git",
    "https://token@github.com/a/b.git",
    "https://github.com@evil.example/a/b.git",
    "ssh://git:secret@github.com/a/b.git",
    "ssh://-oProxyCommand=touch%20x/a/b",
    "-oProxyCommand=touch x:a/b",
    "git@-oProxyCommand=x:a/b",
    "git@github.com:-upload-pack=x",
    "https://github.com/a/b.git?x=1",
    "https://github.com/a/b.git#frag",
    "https://github.com/",
    "https://github.com/a/../../b",
    "https://github.com/a/b;rm -rf",
    "https://github.com/a/b`id`",
    "https://github.com/a/$(id)",
    "https://%6c%6fcalhost/a/b",
    "https://2130706433/a/b",
    "https://0177.0.0.1/a/b",
    "https://0x7f.0.0.1/a/b",
    "https://0x7f000001/a/b",
    "https://127.1/a/b",
    "https://[::1/a/b",
    "https://github.com:99999/a/b",
    "not a url",
    "github.com/a/b",
]


@pytest.mark.parametrize("url", HOSTILE_STRUCTURE)
async def test_refuses_hostile_structure(url: str) -> None:
    with pytest.raises(UnsafeRepositoryUrl):
        await validate_repository_url(url, allow_local=False, resolver=PUBLIC_DNS)


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/a/b",
        "https://10.0.0.8/a/b",
        "https://172.16.5.4/a/b",
        "https://192.168.1.1/a/b",
        "https://169.254.169.254/latest/meta-data",
        "https://100.64.0.1/a/b",
        "https://100.100.100.200/a/b",
        "https://0.0.0.0/a/b",
        "https://224.0.0.1/a/b",
        "https://240.0.0.1/a/b",
        "https://255.255.255.255/a/b",
        "https://[::1]/a/b",
        "https://[::]/a/b",
        "https://[fe80::1]/a/b",
        "https://[fd00:ec2::254]/a/b",
        "https://[fc00::1]/a/b",
        "https://[ff02::1]/a/b",
        "https://[::ffff:127.0.0.1]/a/b",
        "https://[::ffff:7f00:1]/a/b",
        "https://[::ffff:169.254.169.254]/a/b",
        "https://[::127.0.0.1]/a/b",
        "https://[64:ff9b::a9fe:a9fe]/a/b",
        "https://[2002:7f00:1::]/a/b",
        "git@10.1.2.3:a/b.git",
        "ssh://git@[::1]/a/b.git",
    ],
)
async def test_refuses_internal_ip_literals(url: str) -> None:
    with pytest.raises(UnsafeRepositoryUrl, match="internal addresses"):
        await validate_repository_url(url, allow_local=False, resolver=PUBLIC_DNS)


@pytest.mark.parametrize(
    "answers",
    [
        ["127.0.0.1"],
        ["169.254.169.254"],
        [PUBLIC, "10.0.0.1"],  # one bad answer among good ones is enough
        ["::ffff:192.168.0.1"],
        ["fd00:ec2::254"],
        ["fe80::1%eth0"],
    ],
)
async def test_refuses_names_resolving_inside(answers: list[str]) -> None:
    resolver = fake_resolver({"innocent.example.com": answers})
    with pytest.raises(UnsafeRepositoryUrl, match="internal addresses"):
        await validate_repository_url(
            "https://innocent.example.com/a/b.git", allow_local=False, resolver=resolver
        )


async def test_localhost_via_real_resolver() -> None:
    with pytest.raises(UnsafeRepositoryUrl):
        await validate_repository_url("https://localhost/a/b.git", allow_local=False)


async def test_unresolvable_host() -> None:
    with pytest.raises(UnsafeRepositoryUrl, match="does not resolve"):
        await validate_repository_url(
            "https://nowhere.invalid/a/b.git", allow_local=False, resolver=PUBLIC_DNS
        )


def test_blocked_reason_public_is_none() -> None:
    assert blocked_reason(PUBLIC) is None
    assert blocked_reason("2606:4700:90:0:f22e:fbec:5bed:a9b9") is None
    assert blocked_reason("169.254.169.254") == "cloud metadata address"


def test_canonical_url_has_no_surprises() -> None:
    parsed = parse_repository_url("https://GitHub.com./a/b.git", allow_local=False)
    assert parsed.url == "https://github.com/a/b.git"
    scp = parse_repository_url("git@github.com:a/b.git", allow_local=False)
    assert scp.url == "git@github.com:a/b.git" and scp.username == "git"


@pytest.fixture
def git_repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    return repo


async def test_local_paths_only_when_allowed(git_repo: Path, tmp_path: Path) -> None:
    with pytest.raises(UnsafeRepositoryUrl, match="disabled"):
        await validate_repository_url(str(git_repo), allow_local=False)
    ok = await validate_repository_url(str(git_repo), allow_local=True)
    assert ok.kind == "local" and ok.url == str(git_repo.resolve())
    ok2 = await validate_repository_url(f"file://{git_repo}", allow_local=True)
    assert ok2.kind == "local"
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(UnsafeRepositoryUrl, match="not a git repository"):
        await validate_repository_url(str(plain), allow_local=True)
    with pytest.raises(UnsafeRepositoryUrl, match="not an existing directory"):
        await validate_repository_url(str(tmp_path / "missing"), allow_local=True)
    with pytest.raises(UnsafeRepositoryUrl, match="absolute"):
        await validate_repository_url("./repo", allow_local=True)
    # Allowing local paths does not open the remote-helper door.
    with pytest.raises(UnsafeRepositoryUrl):
        await validate_repository_url("ext::sh -c id", allow_local=True)


async def test_resolve_for_clone_pins_checked_address() -> None:
    target = await resolve_for_clone(
        "https://github.com/a/b.git", allow_local=False, resolver=PUBLIC_DNS
    )
    args = target.git_args()
    assert f"http.curloptResolve=github.com:443:{PUBLIC}" in args
    assert "http.followRedirects=false" in args
    assert "protocol.allow=never" in args
    ssh = await resolve_for_clone("git@github.com:a/b.git", allow_local=False, resolver=PUBLIC_DNS)
    assert f"HostName={PUBLIC}" in ssh.env["GIT_SSH_COMMAND"]


async def test_resolve_for_clone_defeats_rebinding() -> None:
    """Stored while public, rebound to metadata before the clone: the re-check refuses it."""
    answers = {"rebind.example.com": [PUBLIC]}
    resolver = fake_resolver(answers)
    await validate_repository_url(
        "https://rebind.example.com/a/b.git", allow_local=False, resolver=resolver
    )
    answers["rebind.example.com"] = ["169.254.169.254"]
    with pytest.raises(UnsafeRepositoryUrl):
        await resolve_for_clone(
            "https://rebind.example.com/a/b.git", allow_local=False, resolver=resolver
        )
