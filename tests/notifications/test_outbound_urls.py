"""Outbound notification URLs under the SSRF rules: metadata, private and (in production)
loopback addresses are refused without a connection; plain http only to loopback."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import pytest

from forgeline.outbound_urls import UnsafeOutboundUrl, check_outbound_url


async def never_resolve(host: str, port: int) -> Sequence[str]:
    raise AssertionError(f"no lookup expected for {host}")


def answering(*addresses: str) -> Callable[[str, int], Awaitable[Sequence[str]]]:
    async def resolve(host: str, port: int) -> Sequence[str]:
        return list(addresses)

    return resolve


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "https://169.254.169.254/",
        "https://10.0.0.7/hook",
        "https://192.168.1.10/hook",
        "https://[fd00:ec2::254]/",
        "https://[::ffff:10.0.0.1]/",
        "https://100.100.100.200/",
        "https://0.0.0.0/",
    ],
)
async def test_internal_addresses_refused_everywhere(url: str) -> None:
    for loopback in (True, False):
        with pytest.raises(UnsafeOutboundUrl):
            await check_outbound_url(url, allow_loopback=loopback, resolver=never_resolve)


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:9/hook", "https://[::1]/hook", "http://localhost:8080/hook"],
)
async def test_loopback_only_where_allowed(url: str) -> None:
    resolver = answering("127.0.0.1")
    with pytest.raises(UnsafeOutboundUrl, match="loopback"):
        await check_outbound_url(url, allow_loopback=False, resolver=resolver)
    target = await check_outbound_url(url, allow_loopback=True, resolver=resolver)
    assert target.addresses and target.url == url


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://example.com/x", "https"),
        ("http://example.com/hook", "plain http"),
        ("https://user:pw@example.com/hook", "credentials"),
        ("https://2130706433/", "dotted-quad"),
        ("https://0x7f.1/", "dotted-quad"),
        ("https://exa mple.com/", "whitespace"),
        ("https:///nohost", "no host"),
        ("https://" + "a" * 3000 + ".com/", "longer"),
    ],
)
async def test_malformed_or_unsafe_forms(url: str, message: str) -> None:
    with pytest.raises(UnsafeOutboundUrl, match=message):
        await check_outbound_url(url, allow_loopback=True, resolver=answering("93.184.215.14"))


async def test_a_name_resolving_inside_is_refused() -> None:
    """DNS may point a public-looking name at the metadata service or a private network."""
    for addresses in (("169.254.169.254",), ("93.184.215.14", "10.1.2.3")):
        with pytest.raises(UnsafeOutboundUrl, match="internal addresses"):
            await check_outbound_url(
                "https://hooks.example.com/x", allow_loopback=True, resolver=answering(*addresses)
            )
    ok = await check_outbound_url(
        "https://hooks.example.com/x", allow_loopback=False, resolver=answering("93.184.215.14")
    )
    assert ok.addresses == ("93.184.215.14",) and ok.port == 443
