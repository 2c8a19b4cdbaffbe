"""Loopback HTTP(S) servers that a test owns, and a throwaway certificate authority.

A test registers what each path answers (``server.route("/x", handler)``, or a
``fallback`` for every other path); the server records every request it saw (path,
headers, body) so a test can assert what the fetcher sent, or that it never arrived.
"""

from __future__ import annotations

import contextlib
import gzip
import shutil
import ssl
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TypedDict

Handler = Callable[[BaseHTTPRequestHandler], None]


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        return  # handshakes the client refused, clients that hung up


class Loopback:
    """A threaded HTTP server on 127.0.0.1, serving ``handler`` until ``stop()``."""

    def __init__(
        self, handler: type[BaseHTTPRequestHandler], tls: ssl.SSLContext | None = None
    ) -> None:
        self.httpd = _QuietServer(("127.0.0.1", 0), handler)
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: bytes = b""


class AllowOnly(TypedDict):
    allowed_ports: tuple[int, ...]
    allow_networks: tuple[str, ...]


class LoopbackServer(Loopback):
    """Answers GETs from its routes (404 for a path it does not know, unless a
    ``fallback`` answers those) and every POST with ``{}``."""

    def __init__(
        self,
        scheme: str = "http",
        tls: ssl.SSLContext | None = None,
        fallback: Handler | None = None,
    ) -> None:
        self.scheme = scheme
        self.host = "127.0.0.1"
        self.routes: dict[str, Handler] = {}
        self.fallback = fallback
        self.seen: list[Seen] = []
        super().__init__(_handler_class(self), tls)

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


def _not_found(request: BaseHTTPRequestHandler) -> None:
    send(request, b"not found", status=404, content_type="text/plain")


def _handler_class(server: LoopbackServer) -> type[BaseHTTPRequestHandler]:
    class RequestHandler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            server.seen.append(Seen(self.path, {k.lower(): v for k, v in self.headers.items()}))
            path = self.path.split("?")[0]
            handler = server.routes.get(path) or server.fallback or _not_found
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


@dataclass(frozen=True)
class CertAuthority:
    ca_file: Path
    cert_file: Path
    key_file: Path
    hostname: str

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))

    def server_context(self) -> ssl.SSLContext:
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(self.cert_file, self.key_file)
        return tls


def make_cert_authority(folder: Path) -> CertAuthority | None:
    """A CA and a server certificate for ``images.test``, made with openssl in ``folder``
    (None without openssl)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        return None
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
