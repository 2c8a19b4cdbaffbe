"""fetch_image against real loopback servers: redirects inward, slow and endless
bodies, lying headers, compression bombs, TLS, DNS rebinding."""

from __future__ import annotations

import gzip
import socket
import time
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest

from schemas.errors import CaptionError, ErrorCode, PermanentError, TransientError
from tests.support.servers import CertAuthority, Handler, LoopbackServer, redirect, send
from worker.fetch import fetch_image

pytestmark = pytest.mark.integration

BODY = b"\x89PNG\r\n\x1a\n" + b"pixels" * 100
LIMIT = 64 * 1024


def _ok(request: BaseHTTPRequestHandler) -> None:
    send(request, BODY)


def _fetch(server: LoopbackServer, path: str, **kwargs: Any) -> bytes:
    options: dict[str, Any] = {"max_bytes": LIMIT, "timeout_s": 3.0, **server.allow}
    options.update(kwargs)
    return fetch_image(server.url(path), **options)


def _error(server: LoopbackServer, path: str, **kwargs: Any) -> CaptionError:
    with pytest.raises(CaptionError) as caught:
        _fetch(server, path, **kwargs)
    return caught.value


def test_fetches_an_allowed_loopback_server(http_server: LoopbackServer) -> None:
    http_server.route("/img", _ok)
    assert _fetch(http_server, "/img") == BODY
    sent = http_server.seen[0].headers
    assert sent["accept-encoding"] == "identity"
    assert sent["host"] == f"127.0.0.1:{http_server.port}"


def test_loopback_is_refused_without_the_allow_list(http_server: LoopbackServer) -> None:
    http_server.route("/img", _ok)
    error = _error(http_server, "/img", allow_networks=())
    assert error.code is ErrorCode.url_blocked
    assert http_server.seen == []


def test_resolves_once_and_connects_to_the_checked_address(
    http_server: LoopbackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DNS rebinding: a second lookup would get 10.0.0.1; there must be none."""
    answers = iter([["127.0.0.1"], ["10.0.0.1"]])
    calls: list[str] = []

    def rebinding_resolver(host: str, port: int) -> list[str]:
        calls.append(host)
        return next(answers)

    real_getaddrinfo = socket.getaddrinfo

    def numeric_only(host: object, *args: Any, **kwargs: Any) -> Any:
        if not isinstance(host, str) or not host.replace(".", "").isdigit():
            raise AssertionError(f"name lookup for {host!r} during the fetch")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", numeric_only)
    http_server.route("/img", _ok)
    url = http_server.url("/img", host="images.test")
    body = fetch_image(
        url, max_bytes=LIMIT, timeout_s=3.0, resolver=rebinding_resolver, **http_server.allow
    )
    assert body == BODY
    assert calls == ["images.test"]
    assert http_server.seen[0].headers["host"] == f"images.test:{http_server.port}"


@pytest.mark.parametrize(
    "addresses",
    [
        pytest.param(["8.8.8.8", "10.0.0.7"], id="one-private-among-public"),
        pytest.param(["127.0.0.2"], id="loopback-outside-allow-list"),
        pytest.param(["::ffff:192.168.1.1"], id="mapped-private"),
        pytest.param(["169.254.169.254"], id="metadata"),
    ],
)
def test_a_name_resolving_inward_is_blocked(
    http_server: LoopbackServer, addresses: list[str]
) -> None:
    with pytest.raises(PermanentError) as caught:
        fetch_image(
            http_server.url("/img", host="images.test"),
            max_bytes=LIMIT,
            timeout_s=3.0,
            resolver=lambda host, port: addresses,
            **http_server.allow,
        )
    assert caught.value.code is ErrorCode.url_blocked
    assert http_server.seen == []


def test_a_slow_resolver_is_cut_by_the_deadline(http_server: LoopbackServer) -> None:
    def hanging(host: str, port: int) -> list[str]:
        time.sleep(3)
        return ["127.0.0.1"]

    started = time.monotonic()
    with pytest.raises(TransientError) as caught:
        fetch_image(
            http_server.url("/img", host="slow-dns.test"),
            max_bytes=LIMIT,
            timeout_s=0.3,
            resolver=hanging,
            **http_server.allow,
        )
    assert caught.value.code is ErrorCode.fetch_timeout
    assert time.monotonic() - started < 1.5


@pytest.mark.parametrize(
    ("location", "code"),
    [
        pytest.param(
            "http://169.254.169.254:{port}/latest/meta-data/", "url_blocked", id="metadata"
        ),
        pytest.param("http://127.0.0.2:{port}/img", "url_blocked", id="other-loopback"),
        pytest.param("http://2130706434:{port}/img", "url_blocked", id="decimal-127.0.0.2"),
        pytest.param("http://0x7f.0.0.2:{port}/img", "url_blocked", id="hex-127.0.0.2"),
        pytest.param("http://10.0.0.1:{port}/img", "url_blocked", id="rfc1918"),
        pytest.param("http://[::1]:{port}/img", "url_blocked", id="ipv6-loopback"),
        pytest.param("http://[::ffff:a9fe:a9fe]:{port}/", "url_blocked", id="mapped-metadata"),
        pytest.param("http://localhost:{port}/img", "url_blocked", id="localhost-name"),
        pytest.param("http://127.0.0.1:22/", "url_blocked", id="other-port-same-host"),
        pytest.param("file:///etc/passwd", "url_invalid", id="file-scheme"),
        pytest.param("gopher://127.0.0.1:{port}/_", "url_invalid", id="gopher-scheme"),
        pytest.param("http://user:pw@127.0.0.1:{port}/img", "url_invalid", id="userinfo"),
        pytest.param("http://[::1/x", "url_invalid", id="unclosed-ipv6-bracket"),
        pytest.param("//[x", "url_invalid", id="bracket-in-scheme-relative"),
        pytest.param("https://b.example]/", "url_invalid", id="stray-bracket"),
    ],
)
def test_redirects_inward_are_checked_again(
    http_server: LoopbackServer, location: str, code: str
) -> None:
    http_server.route("/hop", redirect(location.format(port=http_server.port)))
    http_server.route("/img", _ok)
    error = _error(http_server, "/hop")
    assert isinstance(error, PermanentError)
    assert error.code == code
    assert [s.path for s in http_server.seen] == ["/hop"]


def test_follows_redirects_within_the_limit(http_server: LoopbackServer) -> None:
    http_server.route("/a", redirect("/b", 301))
    http_server.route("/b", redirect(http_server.url("/c"), 307))
    http_server.route("/c", redirect("/img", 308))
    http_server.route("/img", _ok)
    assert _fetch(http_server, "/a") == BODY


def test_too_many_redirects(http_server: LoopbackServer) -> None:
    http_server.route("/loop", redirect("/loop"))
    error = _error(http_server, "/loop", max_redirects=3)
    assert isinstance(error, PermanentError)
    assert error.code is ErrorCode.fetch_failed
    assert len(http_server.seen) == 4


def _drip(request: BaseHTTPRequestHandler) -> None:
    request.send_response(200)
    request.send_header("Content-Type", "image/png")
    request.send_header("Content-Length", "1000")
    request.end_headers()
    for _ in range(200):
        request.wfile.write(b"x")
        request.wfile.flush()
        time.sleep(0.05)


def _slow_headers(request: BaseHTTPRequestHandler) -> None:
    for line in (b"HTTP/1.1 200 OK\r\n", b"Content-Type: image/png\r\n") * 50:
        request.wfile.write(line)
        request.wfile.flush()
        time.sleep(0.05)


def _endless(request: BaseHTTPRequestHandler) -> None:
    request.send_response(200)
    request.send_header("Content-Type", "image/jpeg")
    request.send_header("Transfer-Encoding", "chunked")
    request.end_headers()
    chunk = b"x" * 8192
    for _ in range(10_000):
        request.wfile.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))


@pytest.mark.parametrize("handler", [_drip, _slow_headers], ids=["slow-body", "slow-headers"])
def test_the_total_deadline_cuts_a_slow_server(
    http_server: LoopbackServer, handler: Handler
) -> None:
    http_server.route("/slow", handler)
    started = time.monotonic()
    error = _error(http_server, "/slow", timeout_s=0.6)
    assert isinstance(error, TransientError)
    assert error.code is ErrorCode.fetch_timeout
    assert time.monotonic() - started < 1.2


def test_an_endless_body_stops_at_the_byte_cap(http_server: LoopbackServer) -> None:
    http_server.route("/endless", _endless)
    error = _error(http_server, "/endless")
    assert isinstance(error, PermanentError)
    assert error.code is ErrorCode.image_too_large


def test_a_large_content_length_is_refused_before_reading(http_server: LoopbackServer) -> None:
    def huge(request: BaseHTTPRequestHandler) -> None:
        send(request, b"", headers={"Content-Length": str(10**9)})
        time.sleep(2)

    http_server.route("/huge", huge)
    started = time.monotonic()
    assert _error(http_server, "/huge").code is ErrorCode.image_too_large
    assert time.monotonic() - started < 1.0


def test_a_body_shorter_than_its_content_length_fails(http_server: LoopbackServer) -> None:
    def short(request: BaseHTTPRequestHandler) -> None:
        send(request, b"only ten b", headers={"Content-Length": "1000", "Connection": "close"})
        request.close_connection = True

    http_server.route("/short", short)
    error = _error(http_server, "/short")
    assert isinstance(error, TransientError)
    assert error.code is ErrorCode.fetch_failed


def test_a_body_longer_than_its_content_length_is_cut_to_it(http_server: LoopbackServer) -> None:
    def long(request: BaseHTTPRequestHandler) -> None:
        send(request, b"0123456789" + b"x" * 200_000, headers={"Content-Length": "10"})

    http_server.route("/long", long)
    assert _fetch(http_server, "/long") == b"0123456789"


@pytest.mark.parametrize(
    "content_type",
    ["text/html; charset=utf-8", "application/json", "text/plain", None],
    ids=["html", "json", "text", "missing"],
)
def test_a_body_that_is_not_an_image_is_refused(
    http_server: LoopbackServer, content_type: str | None
) -> None:
    http_server.route("/page", lambda r: send(r, b"<html></html>", content_type=content_type))
    error = _error(http_server, "/page")
    assert isinstance(error, PermanentError)
    assert error.code is ErrorCode.url_not_image


@pytest.mark.parametrize("content_type", ["application/octet-stream", "binary/octet-stream"])
def test_octet_stream_is_accepted(http_server: LoopbackServer, content_type: str) -> None:
    """Bytes of no declared type (S3 serves an object stored without one as
    binary/octet-stream) are fetched; the bytes are then checked as an image."""
    http_server.route("/bin", lambda r: send(r, BODY, content_type=content_type))
    assert _fetch(http_server, "/bin") == BODY


def test_a_proxy_transformed_answer_is_the_image(http_server: LoopbackServer) -> None:
    http_server.route("/via", lambda r: send(r, BODY, status=203))
    assert _fetch(http_server, "/via") == BODY
    http_server.route("/empty", lambda r: send(r, b"", status=204))
    assert _error(http_server, "/empty").code is ErrorCode.fetch_refused


def test_a_gzip_bomb_is_cut_at_the_decompressed_cap(http_server: LoopbackServer) -> None:
    bomb = gzip.compress(b"\0" * (20 * 1024 * 1024), compresslevel=9)
    assert len(bomb) < LIMIT  # small on the wire, 20 MiB once inflated
    http_server.route("/bomb", lambda r: send(r, bomb, headers={"Content-Encoding": "gzip"}))
    error = _error(http_server, "/bomb")
    assert error.code is ErrorCode.image_too_large


def test_small_gzip_is_decompressed(http_server: LoopbackServer) -> None:
    packed = gzip.compress(BODY)
    http_server.route("/gz", lambda r: send(r, packed, headers={"Content-Encoding": "gzip"}))
    assert _fetch(http_server, "/gz") == BODY


def test_an_unsupported_content_encoding_is_refused(http_server: LoopbackServer) -> None:
    http_server.route("/br", lambda r: send(r, b"\x1b\x00", headers={"Content-Encoding": "br"}))
    error = _error(http_server, "/br")
    assert isinstance(error, PermanentError)
    assert error.code is ErrorCode.fetch_failed


@pytest.mark.parametrize(
    ("status", "kind", "code"),
    [
        pytest.param(404, PermanentError, ErrorCode.fetch_refused, id="404-permanent"),
        pytest.param(403, PermanentError, ErrorCode.fetch_refused, id="403-permanent"),
        pytest.param(410, PermanentError, ErrorCode.fetch_refused, id="410-permanent"),
        pytest.param(425, PermanentError, ErrorCode.fetch_refused, id="425-permanent"),
        pytest.param(501, PermanentError, ErrorCode.fetch_refused, id="501-permanent"),
        pytest.param(408, TransientError, ErrorCode.fetch_failed, id="408-transient"),
        pytest.param(429, TransientError, ErrorCode.fetch_failed, id="429-transient"),
        pytest.param(500, TransientError, ErrorCode.fetch_failed, id="500-transient"),
        pytest.param(503, TransientError, ErrorCode.fetch_failed, id="503-transient"),
    ],
)
def test_http_errors_map_to_their_codes(
    http_server: LoopbackServer, status: int, kind: type[CaptionError], code: ErrorCode
) -> None:
    http_server.route("/err", lambda r: send(r, b"no", status=status, content_type="text/plain"))
    error = _error(http_server, "/err")
    assert type(error) is kind
    assert error.code is code


@pytest.mark.parametrize(
    ("status", "header", "wait_s"),
    [
        pytest.param(503, "7", 7.0, id="503-seconds"),
        pytest.param(429, "120", 120.0, id="429-seconds"),
        pytest.param(503, "Wed, 21 Oct 2015 07:28:00 GMT", 0.0, id="503-date-past"),
        pytest.param(503, "soon", None, id="503-unreadable"),
        pytest.param(500, "7", None, id="500-ignores-it"),
    ],
)
def test_retry_after_is_read_on_429_and_503(
    http_server: LoopbackServer, status: int, header: str, wait_s: float | None
) -> None:
    http_server.route(
        "/busy",
        lambda r: send(r, b"busy", status=status, content_type="text/plain",
                       headers={"Retry-After": header}),
    )  # fmt: skip
    error = _error(http_server, "/busy")
    assert isinstance(error, TransientError)
    assert error.code is ErrorCode.fetch_failed
    assert getattr(error, "retry_after_s", None) == wait_s


def test_connection_refused_is_transient(http_server: LoopbackServer) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free_port = probe.getsockname()[1]
    with pytest.raises(TransientError) as caught:
        fetch_image(
            f"http://127.0.0.1:{free_port}/img",
            max_bytes=LIMIT,
            timeout_s=2.0,
            allowed_ports=(free_port,),
            allow_networks=("127.0.0.1/32",),
        )
    assert caught.value.code is ErrorCode.fetch_failed


def test_proxy_variables_are_ignored(
    http_server: LoopbackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "all_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9/")
    http_server.route("/img", _ok)
    assert _fetch(http_server, "/img") == BODY


def test_tls_keeps_the_host_name_for_sni_and_the_certificate(
    https_server: LoopbackServer, cert_authority: CertAuthority
) -> None:
    https_server.route("/img", _ok)
    body = fetch_image(
        https_server.url("/img", host="images.test"),
        max_bytes=LIMIT,
        timeout_s=3.0,
        resolver=lambda host, port: ["127.0.0.1"],
        ssl_context=cert_authority.client_context(),
        **https_server.allow,
    )
    assert body == BODY


def test_tls_refuses_a_certificate_for_another_name(
    https_server: LoopbackServer, cert_authority: CertAuthority
) -> None:
    https_server.route("/img", _ok)
    with pytest.raises(PermanentError) as caught:
        fetch_image(
            https_server.url("/img", host="other.test"),
            max_bytes=LIMIT,
            timeout_s=3.0,
            resolver=lambda host, port: ["127.0.0.1"],
            ssl_context=cert_authority.client_context(),
            **https_server.allow,
        )
    assert caught.value.code is ErrorCode.fetch_failed
    assert https_server.seen == []


def test_https_to_http_downgrade_is_refused(
    https_server: LoopbackServer, http_server: LoopbackServer, cert_authority: CertAuthority
) -> None:
    http_server.route("/img", _ok)
    https_server.route("/hop", redirect(http_server.url("/img", host="images.test")))
    with pytest.raises(PermanentError) as caught:
        fetch_image(
            https_server.url("/hop", host="images.test"),
            max_bytes=LIMIT,
            timeout_s=3.0,
            resolver=lambda host, port: ["127.0.0.1"],
            ssl_context=cert_authority.client_context(),
            allowed_ports=(https_server.port, http_server.port),
            allow_networks=("127.0.0.1/32",),
        )
    assert caught.value.code is ErrorCode.url_blocked
    assert http_server.seen == []
