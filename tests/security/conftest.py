"""Loopback HTTP(S) servers and a throwaway CA for the security tests.

A test registers what each path answers (``server.route("/x", handler)``);
the server records every request it saw (path and headers) so a test can
assert what the fetcher sent, or that it never arrived.
"""

from __future__ import annotations

import contextlib
import gzip
import shutil
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TypedDict

import pytest

Handler = Callable[[BaseHTTPRequestHandler], None]


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: bytes = b""


class AllowOnly(TypedDict):
    allowed_ports: tuple[int, ...]
    allow_networks: tuple[str, ...]


@dataclass
class LoopbackServer:
    scheme: str
    host: str
    port: int
    routes: dict[str, Handler] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)

    @property
    def allow(self) -> AllowOnly:
        """Keyword arguments for fetch_image admitting exactly this server."""
        return {"allowed_ports": (self.port,), "allow_networks": ("127.0.0.1/32",)}

    def url(self, path: str, *, host: str | None = None) -> str:
        return f"{self.scheme}://{host or self.host}:{self.port}{path}"

    def route(self, path: str, handler: Handler) -> None:
        self.routes[path] = handler


def send(
    request: BaseHTTPRequestHandler,
    body: bytes,
    *,
    status: int = 200,
    content_type: str | None = "image/png",
    headers: dict[str, str] | None = None,
) -> None:
    """A complete response with Content-Length (unless ``headers`` sets it)."""
    request.send_response(status)
    if content_type is not None:
        request.send_header("Content-Type", content_type)
    extra = headers or {}
    if "Content-Length" not in extra:
        request.send_header("Content-Length", str(len(body)))
    for name, value in extra.items():
        request.send_header(name, value)
    request.end_headers()
    request.wfile.write(body)


def redirect(location: str, status: int = 302) -> Handler:
    def handler(request: BaseHTTPRequestHandler) -> None:
        send(request, b"", status=status, content_type=None, headers={"Location": location})

    return handler


def _handler_class(server: LoopbackServer) -> type[BaseHTTPRequestHandler]:
    class RequestHandler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            server.seen.append(Seen(self.path, {k.lower(): v for k, v in self.headers.items()}))
            handler = server.routes.get(self.path.split("?")[0])
            if handler is None:
                send(self, b"not found", status=404, content_type="text/plain")
                return
            # The fetcher hanging up mid-answer is what several tests expect.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError, ssl.SSLError):
                handler(self)

        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            if self.headers.get("Content-Encoding", "").lower() == "gzip":
                body = gzip.decompress(body)
            server.seen.append(
                Seen(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
            )
            send(self, b"{}", content_type="application/json")

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            return

    return RequestHandler


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        return  # handshakes the client refused, clients that hung up


def _serve(scheme: str, tls: ssl.SSLContext | None) -> Iterator[LoopbackServer]:
    state = LoopbackServer(scheme=scheme, host="127.0.0.1", port=0)
    httpd = _QuietServer(("127.0.0.1", 0), _handler_class(state))
    if tls is not None:
        httpd.socket = tls.wrap_socket(httpd.socket, server_side=True)
    state.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


@pytest.fixture
def http_server() -> Iterator[LoopbackServer]:
    yield from _serve("http", None)


@pytest.fixture
def second_server() -> Iterator[LoopbackServer]:
    yield from _serve("http", None)


@dataclass(frozen=True)
class CertAuthority:
    ca_file: Path
    cert_file: Path
    key_file: Path
    hostname: str

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))


@pytest.fixture(scope="session")
def cert_authority(tmp_path_factory: pytest.TempPathFactory) -> CertAuthority:
    """A CA and a server certificate for ``images.test``, made with openssl."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed: TLS tests need it to make certificates")
    folder = tmp_path_factory.mktemp("ca")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=folder, check=True, capture_output=True)

    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=captionq test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign")  # fmt: skip
    run("req", *ec, "-keyout", "leaf.key", "-out", "leaf.csr", "-subj", "/CN=images.test")
    (folder / "leaf.ext").write_text(
        "subjectAltName=DNS:images.test\nbasicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
        "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n"
    )
    run("x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "leaf.pem", "-days", "2", "-extfile", "leaf.ext")  # fmt: skip
    return CertAuthority(folder / "ca.pem", folder / "leaf.pem", folder / "leaf.key", "images.test")


@pytest.fixture
def https_server(cert_authority: CertAuthority) -> Iterator[LoopbackServer]:
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert_authority.cert_file, cert_authority.key_file)
    yield from _serve("https", tls)
