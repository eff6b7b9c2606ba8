from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Iterable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from synchook.url_safety import (
    ALLOW_PRIVATE_HINT,
    Resolver,
    UnsafeURL,
    check_resolves_public,
    is_forbidden_address,
    parse_ip_host,
    validate_webhook_url,
)
from webhooks.safe_resolver import ForbiddenTargetError, check_literal_target


def fake_resolver(answers: dict[str, list[str]]) -> Resolver:
    async def resolve(host: str, port: int) -> Iterable[str]:
        if host not in answers:
            raise OSError("no such host")
        return answers[host]

    return resolve


PUBLIC = fake_resolver({"hooks.example.com": ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"]})

HOSTILE_PRIVATE_TARGETS = [
    "https://127.0.0.1/",
    "https://127.0.0.1:8443/hook",
    "https://localhost/",
    "https://LOCALHOST./",
    "https://api.localhost/",
    "https://10.0.0.1/",
    "https://172.16.5.4/",
    "https://192.168.1.1/",
    "https://169.254.169.254/latest/meta-data/",
    "https://100.100.100.200/",
    "https://[fd00:ec2::254]/",
    "https://metadata.google.internal/computeMetadata/v1/",
    "https://[::1]/",
    "https://[::ffff:127.0.0.1]/",
    "https://[::ffff:169.254.169.254]/",
    "https://[::]/",
    "https://0.0.0.0/",
    "https://0/",
    "https://2130706433/",
    "https://0177.0.0.1/",
    "https://0x7f.1/",
    "https://0x7f000001/",
    "https://127.1/",
    "https://017700000001/",
    "https://100.64.0.1/",
    "https://224.0.0.1/",
    "https://255.255.255.255/",
    "https://[fe80::1]/",
    "https://[fc00::1]/",
    "https://[fd12:3456::1]/",
    "https://[ff02::1]/",
    "https://[2002:7f00:1::]/",
    "https://[64:ff9b::a00:1]/",
    "https://[::127.0.0.1]/",
    "https://\uff11\uff12\uff17\u3002\uff10\u3002\uff10\u3002\uff11/",
    "https://router/",
    "https://printer.local/",
    "https://db.internal/",
]

HOSTILE_MALFORMED = [
    "ftp://example.com/",
    "file:///etc/passwd",
    "gopher://example.com/",
    "javascript:alert(1)",
    "//example.com/hook",
    "/relative/path",
    "https:///nohost",
    "https://user:pass@example.com/",
    "https://user@example.com/",
    "https://example.com@127.0.0.1/",
    "https://example.com\\@127.0.0.1/",
    "https://example.com/\r\nX-Injected: 1",
    "https://example.com/%0d%0a\nHost: evil",
    "https://exa mple.com/",
    "https://example.com/\x00",
    "https://example.com/\t",
    "https://example.com:0/",
    "https://example.com:65536/",
    "https://example.com:http/",
    "https://[::1/",
    "https://[fe80::1%25eth0]/",
    "https://1.2.3.4.5/",
    "https://256.0.0.1/",
    "https://08.0.0.1/",
    "https://%31%32%37.0.0.1/",
    "https://ex_ample..com/",
    "https://example.com/" + "a" * 2048,
    "",
]


@pytest.mark.parametrize("url", HOSTILE_PRIVATE_TARGETS)
def test_private_targets_are_refused_with_the_way_to_allow_them(url: str) -> None:
    with pytest.raises(UnsafeURL) as excinfo:
        validate_webhook_url(url, allow_private=False)
    assert excinfo.value.private_target
    assert ALLOW_PRIVATE_HINT in excinfo.value.reason
    assert str(excinfo.value) == excinfo.value.reason


@pytest.mark.parametrize("url", HOSTILE_MALFORMED)
def test_malformed_urls_are_refused_even_when_private_is_allowed(url: str) -> None:
    with pytest.raises(UnsafeURL):
        validate_webhook_url(url, allow_private=True)


@pytest.mark.parametrize("url", HOSTILE_MALFORMED)
def test_malformed_urls_are_refused(url: str) -> None:
    with pytest.raises(UnsafeURL):
        validate_webhook_url(url, allow_private=False)


def test_plain_http_is_refused_unless_allowed() -> None:
    with pytest.raises(UnsafeURL, match="https") as excinfo:
        validate_webhook_url("http://hooks.example.com/", allow_private=False)
    assert "SYNCHOOK_ALLOW_PRIVATE_TARGETS=true" in excinfo.value.reason


def test_allow_private_accepts_loopback_http() -> None:
    assert validate_webhook_url("http://127.0.0.1:8080/x", allow_private=True) == "http://127.0.0.1:8080/x"


def test_allow_private_accepts_localhost() -> None:
    assert validate_webhook_url("http://localhost:8080/x", allow_private=True) == "http://localhost:8080/x"


def test_allow_private_normalizes_odd_ipv4_spellings() -> None:
    assert validate_webhook_url("http://0x7f.1:8080/x", allow_private=True) == "http://127.0.0.1:8080/x"


def test_credentials_are_never_echoed() -> None:
    with pytest.raises(UnsafeURL) as excinfo:
        validate_webhook_url("https://admin:hunter2@example.com/", allow_private=False)
    assert "hunter2" not in excinfo.value.reason and "admin" not in excinfo.value.reason


def test_url_is_never_echoed() -> None:
    with pytest.raises(UnsafeURL) as excinfo:
        validate_webhook_url("https://10.0.0.1/hook?token=s3cr3t", allow_private=False)
    assert "s3cr3t" not in excinfo.value.reason


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://hooks.example.com/in", "https://hooks.example.com/in"),
        ("HTTPS://Hooks.Example.COM:443/in?a=1#frag", "https://hooks.example.com/in?a=1"),
        ("https://hooks.example.com", "https://hooks.example.com/"),
        ("https://hooks.example.com:8443/in", "https://hooks.example.com:8443/in"),
        ("https://8.8.8.8/in", "https://8.8.8.8/in"),
        ("https://[2606:4700:4700::1111]/in", "https://[2606:4700:4700::1111]/in"),
        ("https://b\u00fccher.example/", "https://xn--bcher-kva.example/"),
        ("https://example.com/caf\u00e9", "https://example.com/caf\u00e9"),
    ],
)
def test_public_urls_are_accepted_and_normalized(url: str, expected: str) -> None:
    assert validate_webhook_url(url, allow_private=False) == expected


def test_url_of_exactly_2048_characters_is_accepted() -> None:
    base = "https://hooks.example.com/"
    url = base + "a" * (2048 - len(base))
    assert validate_webhook_url(url, allow_private=False) == url


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("2130706433", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("0X7F.0.0.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("10.1", "10.0.0.1"),
        ("192.168.257", "192.168.1.1"),
        ("0", "0.0.0.0"),
        ("0x", "0.0.0.0"),
        ("1.2.3.4.", "1.2.3.4"),
        ("[::1]", "::1"),
        ("example.com", None),
        ("1.2.3.example", None),
    ],
)
def test_parse_ip_host_reads_ipv4_like_inet_aton(host: str, expected: str | None) -> None:
    parsed = parse_ip_host(host)
    assert (None if parsed is None else str(parsed)) == expected


@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_parse_ip_host_agrees_on_every_spelling(value: int) -> None:
    address = ipaddress.IPv4Address(value)
    a, b, c, d = address.packed
    for spelling in (
        str(value),
        hex(value),
        f"{a}.{(b << 16) | (c << 8) | d}",
        f"0{a:o}.{b}.{c}.{d}",
        f"{a}.{b}.{c}.{d}",
    ):
        assert parse_ip_host(spelling) == address


@pytest.mark.parametrize(
    ("ip", "fragment"),
    [
        ("127.0.0.1", "loopback"),
        ("10.0.0.1", "private"),
        ("172.31.255.255", "private"),
        ("192.168.0.1", "private"),
        ("169.254.1.1", "link-local"),
        ("169.254.169.254", "metadata"),
        ("100.100.100.200", "metadata"),
        ("fd00:ec2::254", "metadata"),
        ("100.64.0.1", "CGNAT"),
        ("224.0.0.1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("::1", "loopback"),
        ("fe80::1", "link-local"),
        ("fe80::1%eth0", "link-local"),
        ("fc00::1", "unique local"),
        ("ff02::1", "multicast"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:10.0.0.1", "private"),
        ("2002:a00:1::", "private"),
        ("64:ff9b::7f00:1", "loopback"),
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "Teredo"),
        ("192.0.2.1", "documentation"),
        ("not-an-ip", "unparseable"),
    ],
)
def test_is_forbidden_address_gives_a_reason(ip: str, fragment: str) -> None:
    reason = is_forbidden_address(ip)
    assert reason is not None and fragment in reason


@pytest.mark.parametrize("ip", ["8.8.8.8", "93.184.215.14", "2606:4700:4700::1111", "::ffff:8.8.8.8", "2002:808:808::"])
def test_public_addresses_pass(ip: str) -> None:
    assert is_forbidden_address(ip) is None


async def test_resolves_public_accepts_public_answers() -> None:
    url = "https://hooks.example.com/in"
    assert await check_resolves_public(url, allow_private=False, resolver=PUBLIC) == url


async def test_name_resolving_to_loopback_is_refused() -> None:
    resolver = fake_resolver({"evil.example.com": ["127.0.0.1"]})
    with pytest.raises(UnsafeURL, match="resolves to a loopback address") as excinfo:
        await check_resolves_public("https://evil.example.com/", allow_private=False, resolver=resolver)
    assert excinfo.value.private_target and ALLOW_PRIVATE_HINT in excinfo.value.reason


async def test_any_private_answer_among_public_ones_is_refused() -> None:
    resolver = fake_resolver({"mixed.example.com": ["93.184.215.14", "10.1.2.3"]})
    with pytest.raises(UnsafeURL, match="private"):
        await check_resolves_public("https://mixed.example.com/", allow_private=False, resolver=resolver)


async def test_name_resolving_to_mapped_ipv6_loopback_is_refused() -> None:
    resolver = fake_resolver({"v6.example.com": ["::ffff:127.0.0.1"]})
    with pytest.raises(UnsafeURL, match="loopback"):
        await check_resolves_public("https://v6.example.com/", allow_private=False, resolver=resolver)


async def test_localhost_is_refused_with_the_real_resolver() -> None:
    with pytest.raises(UnsafeURL, match="local"):
        await check_resolves_public("https://localhost/", allow_private=False)


async def test_unresolvable_name_is_refused() -> None:
    with pytest.raises(UnsafeURL, match="could not be resolved") as excinfo:
        await check_resolves_public("https://nowhere.example.com/", allow_private=False, resolver=PUBLIC)
    assert not excinfo.value.private_target


async def test_empty_answer_is_refused() -> None:
    resolver = fake_resolver({"empty.example.com": []})
    with pytest.raises(UnsafeURL, match="could not be resolved"):
        await check_resolves_public("https://empty.example.com/", allow_private=False, resolver=resolver)


async def test_allow_private_skips_resolution() -> None:
    resolver = fake_resolver({})  # would raise if asked
    url = "http://127.0.0.1:8080/x"
    assert await check_resolves_public(url, allow_private=True, resolver=resolver) == url


async def test_public_ip_literal_needs_no_resolution() -> None:
    resolver = fake_resolver({})
    assert await check_resolves_public("https://8.8.8.8/", allow_private=False, resolver=resolver) == "https://8.8.8.8/"


# Issue 16 item 9: ranges Python's IANA tables call global, and IPvFuture literals.
NEWLY_REFUSED = [
    ("::ffff:0:7f00:1", "IPv4-translated"),  # RFC 2765 SIIT form of 127.0.0.1
    ("::ffff:0:a00:1", "IPv4-translated"),
    ("::ffff:0:808:808", "IPv4-translated"),  # even a public IPv4: reached only through some translator
    ("3fff::1", "documentation"),  # RFC 9637
    ("3fff:fff:ffff:ffff::1", "documentation"),
]


@pytest.mark.parametrize(("ip", "fragment"), NEWLY_REFUSED)
def test_siit_and_3fff_addresses_are_refused_at_create_and_at_delivery(ip: str, fragment: str) -> None:
    reason = is_forbidden_address(ip)
    assert reason is not None and fragment in reason
    with pytest.raises(UnsafeURL) as excinfo:
        validate_webhook_url(f"https://[{ip}]/hook", allow_private=False)
    assert excinfo.value.private_target and fragment in excinfo.value.reason
    with pytest.raises(ForbiddenTargetError):
        check_literal_target(f"https://[{ip}]/hook", allow_private=False)


async def test_a_name_resolving_to_a_siit_address_is_refused() -> None:
    resolver = fake_resolver({"hooks.example.com": ["::ffff:0:a9fe:a9fe"]})
    with pytest.raises(UnsafeURL, match="IPv4-translated"):
        await check_resolves_public("https://hooks.example.com/", allow_private=False, resolver=resolver)


@pytest.mark.parametrize("ip", ["3fff:1000::1", "::ffff:1:0:0", "::ffff:8.8.8.8"])
def test_neighbours_of_the_new_ranges_are_not_caught_by_them(ip: str) -> None:
    reason = is_forbidden_address(ip) or ""
    assert "documentation" not in reason and "IPv4-translated" not in reason


def test_a_name_starting_like_ipvfuture_is_still_a_name() -> None:
    assert validate_webhook_url("https://v6.example.com/", allow_private=False) == "https://v6.example.com/"


@pytest.mark.parametrize("url", ["https://[v1.fe80::a]/", "http://[v1.fe80::a]/", "https://[vF.x:y]/hook"])
@pytest.mark.parametrize("allow_private", [False, True])
def test_ipvfuture_hosts_are_refused(url: str, allow_private: bool) -> None:
    if url.startswith("http:") and not allow_private:
        return  # refused for plain http before the host is read
    with pytest.raises(UnsafeURL, match="IPvFuture"):
        validate_webhook_url(url, allow_private=allow_private)
    with pytest.raises(ForbiddenTargetError):
        check_literal_target(url, allow_private=False)


def test_a_lookup_cut_short_leaves_nothing_to_call_back_into_its_closed_loop() -> None:
    """A lookup whose caller gave up (the create's timeout) must not answer later into a closed loop.

    Seen in CI: a c-ares channel shared per loop outlived a test's loop and its late callback failed in the
    next test (`RuntimeError: Event loop is closed`, raised from a cffi callback). A black-holed nameserver
    (a UDP socket that reads and never answers) keeps the query pending past the caller's timeout.
    """
    import gc
    import socket
    import sys
    import time

    black_hole = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    black_hole.bind(("127.0.0.1", 0))
    nameserver = f"127.0.0.1:{black_hole.getsockname()[1]}"
    unraisable: list[object] = []
    previous_hook = sys.unraisablehook
    sys.unraisablehook = unraisable.append
    try:
        first = asyncio.new_event_loop()
        with pytest.raises(TimeoutError):
            # The caller gives up after 0.2 s; c-ares alone would try for 1.5 s (0.5 s, then 1 s).
            first.run_until_complete(
                asyncio.wait_for(
                    check_resolves_public(
                        "https://slow.example/", allow_private=False, nameservers=[nameserver], timeout=1.5
                    ),
                    0.2,
                )
            )
        first.close()
        second = asyncio.new_event_loop()
        second.run_until_complete(asyncio.sleep(2.5))  # past every c-ares retry of the abandoned query
        second.close()
        time.sleep(0.1)
        gc.collect()
    finally:
        sys.unraisablehook = previous_hook
        black_hole.close()
    assert unraisable == []
