"""check_url / check_address: every way of writing an inward address."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from schemas.checks.urls import CheckedURL, check_address, check_url, parse_ipv4_host
from schemas.errors import ErrorCode, PermanentError

pytestmark = pytest.mark.unit

INWARD_URLS = {
    "loopback": "http://127.0.0.1/",
    "loopback-other": "http://127.8.9.10/",
    "decimal": "http://2130706433/",
    "octal": "http://0177.0.0.1/",
    "octal-padded": "http://00000177.0.0.01/",
    "hex-short": "http://0x7f.1/",
    "hex-whole": "http://0x7f000001/",
    "short-form": "http://127.1/",
    "trailing-dot": "http://127.0.0.1./",
    "fullwidth-digits": "http://\uff11\uff12\uff17.\uff10.\uff10.\uff11/",
    "unspecified-v4": "http://0.0.0.0/",
    "zero": "http://0/",
    "rfc1918-10": "http://10.1.2.3/",
    "rfc1918-172": "http://172.16.5.4/",
    "rfc1918-192": "http://192.168.0.1/",
    "cgnat": "http://100.64.0.1/",
    "link-local": "http://169.254.1.1/",
    "metadata": "http://169.254.169.254/latest/meta-data/",
    "metadata-decimal": "http://2852039166/",
    "multicast": "http://224.0.0.1/",
    "reserved": "http://240.0.0.1/",
    "broadcast": "http://255.255.255.255/",
    "benchmarking": "http://198.18.0.1/",
    "v6-loopback": "http://[::1]/",
    "v6-unspecified": "http://[::]/",
    "v6-mapped-loopback": "http://[::ffff:127.0.0.1]/",
    "v6-mapped-hex": "http://[::ffff:7f00:1]/",
    "v6-mapped-metadata": "http://[::ffff:169.254.169.254]/",
    "v6-compatible": "http://[::127.0.0.1]/",
    "v6-nat64-private": "http://[64:ff9b::10.0.0.1]/",
    "v6-nat64-loopback": "http://[64:ff9b::7f00:1]/",
    "v6-6to4-private": "http://[2002:c0a8:0101::1]/",
    "v6-6to4-loopback": "http://[2002:7f00:1::]/",
    "v6-teredo": "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/",
    "v6-unique-local": "http://[fd12:3456::1]/",
    "v6-link-local": "http://[fe80::1]/",
    "v6-metadata-aws": "http://[fd00:ec2::254]/",
    "v6-multicast": "http://[ff02::1]/",
    "localhost": "http://localhost/",
    "localhost-upper": "http://LOCALHOST./",
    "localhost-sub": "http://api.localhost/",
    "https-loopback": "https://127.0.0.1/",
    "port-not-allowed": "http://example.com:8080/",
    "port-ssh": "https://example.com:22/",
}


@pytest.mark.parametrize("url", INWARD_URLS.values(), ids=INWARD_URLS.keys())
def test_inward_urls_are_blocked(url: str) -> None:
    with pytest.raises(PermanentError) as caught:
        check_url(url)
    assert caught.value.code is ErrorCode.url_blocked


INVALID_URLS = {
    "empty": "",
    "no-host": "http:///path",
    "ftp": "ftp://example.com/x",
    "file": "file:///etc/passwd",
    "javascript": "javascript:alert(1)",
    "userinfo": "http://user:pass@example.com/",
    "userinfo-trick": "http://example.com@127.0.0.1/",
    "backslash-trick": "http://example.com\\@127.0.0.1/",
    "space": "http://exa mple.com/",
    "newline": "http://example.com/\r\nHost: evil",
    "nul": "http://example.com\x00.evil/",
    "bad-port": "http://example.com:99999/",
    "five-labels": "http://1.2.3.4.5/",
    "bad-octal": "http://09.0.0.1/",
    "out-of-range": "http://256.0.0.1/",
    "zone-id": "http://[fe80::1%25eth0]/",
    "bad-v6": "http://[::g]/",
    "underscore": "http://exa_mple.com/",
    "empty-label": "http://a..b/",
    "too-long": "http://" + "a" * 2100 + ".com/",
}


@pytest.mark.parametrize("url", INVALID_URLS.values(), ids=INVALID_URLS.keys())
def test_malformed_urls_are_invalid(url: str) -> None:
    with pytest.raises(PermanentError) as caught:
        check_url(url)
    assert caught.value.code is ErrorCode.url_invalid


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        pytest.param("https://example.com/a.jpg", "https://example.com/a.jpg", id="plain"),
        pytest.param("HTTPS://Example.COM:443/a?b=1#frag", "https://example.com/a?b=1", id="case"),
        pytest.param("https://bücher.example/p", "https://xn--bcher-kva.example/p", id="idna"),
        pytest.param("http://8.8.8.8/x y".replace(" ", "%20"), "http://8.8.8.8/x%20y", id="v4"),
        pytest.param("http://[2606:4700::1111]/", "http://[2606:4700::1111]/", id="v6"),
        pytest.param("http://[64:ff9b::8.8.8.8]/", "http://[64:ff9b::808:808]/", id="nat64-public"),
        pytest.param("http://[2002:808:808::1]/", "http://[2002:808:808::1]/", id="6to4-public"),
    ],
)
def test_public_urls_pass_in_canonical_form(url: str, expected: str) -> None:
    assert check_url(url).url == expected


def test_allow_list_admits_exactly_the_listed_network_and_port() -> None:
    allow = {"allowed_ports": (8080,), "allow_networks": ("127.0.0.1/32",)}
    checked = check_url("http://127.0.0.1:8080/img", **allow)  # type: ignore[arg-type]
    assert checked.address == ipaddress.ip_address("127.0.0.1")
    assert check_url("http://[::ffff:127.0.0.1]:8080/", **allow).port == 8080  # type: ignore[arg-type]
    for other in ("http://127.0.0.2:8080/", "http://127.0.0.1:8081/", "http://10.0.0.1:8080/"):
        with pytest.raises(PermanentError) as caught:
            check_url(other, **allow)  # type: ignore[arg-type]
        assert caught.value.code is ErrorCode.url_blocked


@pytest.mark.parametrize("address", ["169.254.169.254", "fd00:ec2::254", "::ffff:169.254.169.254"])
def test_metadata_stays_blocked_even_when_allow_listed(address: str) -> None:
    with pytest.raises(PermanentError) as caught:
        check_address(address, allow_networks=("0.0.0.0/0", "::/0"))
    assert caught.value.code is ErrorCode.url_blocked


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("2130706433", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("10.1", "10.0.0.1"),
        ("192.168.257", "192.168.1.1"),
        ("0", "0.0.0.0"),
    ],
)
def test_numeric_hosts_read_like_inet_aton(host: str, expected: str) -> None:
    assert str(parse_ipv4_host(host)) == expected


def test_names_are_not_numeric_hosts() -> None:
    assert parse_ipv4_host("images.example.com") is None
    assert parse_ipv4_host("1.2.3.example") is None


def test_a_bulk_requests_callback_urls_are_each_checked_and_made_canonical(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The jobs of one bulk request share their callback URL as a rule, and check_all
    checks each accepted URL once: each job still gets its own canonical URL, and a
    refused one refuses its own job only, however often it recurs."""
    from producers import submit
    from producers.submit import check_all
    from schemas.api import JobRequest
    from schemas.errors import RequestError
    from schemas.settings import CoreSettings

    shouted, plain, inward = "HTTPS://Example.COM:443/hook", "https://example.com/hook", "http://10.0.0.1/h"
    urls = [shouted, plain, inward, shouted, inward, "https://b.example/h"]
    requests = [
        JobRequest(image_url="https://example.com/a.png", styles=["playful"], platforms=["x"],
                   callback_url=url)  # fmt: skip
        for url in urls
    ]
    checked: list[str] = []
    check = submit.callback_target

    def counted(url: str, **kw: Any) -> CheckedURL:
        checked.append(url)
        return check(url, **kw)

    monkeypatch.setattr(submit, "callback_target", counted)
    out = check_all(requests, CoreSettings())
    assert checked == [shouted, plain, inward, inward, "https://b.example/h"]
    got = [o.code if isinstance(o, RequestError) else o[0].callback_url for o in out]
    blocked = ErrorCode.url_blocked
    assert got == [plain, plain, blocked, plain, blocked, "https://b.example/h"]
