"""Fetch an image by URL without letting the URL reach inside the network.

One hop, in order::

    check_url        scheme, user info, port, literal addresses (schemas.checks.urls)
    resolve once     getaddrinfo in a thread bounded by the deadline
    check_address    on EVERY resolved address: one bad address refuses the URL
    connect          to the checked address itself (no second lookup, so DNS
                     rebinding cannot swap it), while the Host header, TLS SNI
                     and certificate check keep the original host name
                     (these three: ``worker.connection``, shared with the sender)
    read             status, Content-Type, Content-Length, then the body,
                     counted (after decompression) against ``max_bytes``

Redirects are not followed by the HTTP library: each ``Location`` goes
through the same hop again, at most ``max_redirects`` times, never from
https down to http. One deadline covers the whole fetch, every redirect and
every read included, so a server that drips a byte a second is cut off.
No proxy or other environment setting is read.

Errors, by code: ``url_invalid`` / ``url_blocked`` (permanent);
``fetch_timeout`` (transient); ``fetch_failed`` (transient for network errors,
408, 429 and 5xx but 501, 429 and 503 carrying their ``Retry-After``; permanent for
redirect faults and TLS certificate failures); ``fetch_refused`` (permanent: any
other 4xx, and 501); ``url_not_image`` (permanent: a Content-Type that is not an
image); ``image_too_large`` (permanent).
"""

from __future__ import annotations

import ssl
import time
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final
from urllib.parse import urljoin

import httpcore

from schemas.checks.headers import retry_after_s
from schemas.checks.urls import (
    DEFAULT_PORTS,
    CheckedURL,
    IPAddress,
    IPNetwork,
    check_url,
    parse_networks,
)
from schemas.errors import CaptionError, ErrorCode, ImageError, PermanentError, TransientError
from worker.connection import Deadline, PinnedBackend, Resolver, resolve
from worker.errors import RetryLaterError

USER_AGENT: Final = b"captionq-fetch/1"
_REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})
_RETRYABLE_4XX: Final = frozenset({408, 429})
# Bytes of no declared type are let through (S3 serves an object stored without one as
# binary/octet-stream): the bytes themselves are checked as an image after the fetch.
_ACCEPTED_TYPES: Final = ("image/", "application/octet-stream", "binary/octet-stream")
_OK: Final = (200, 203)  # 203: the resource, as a proxy transformed it
_READ_CHUNK: Final = 64 * 1024


def fetch_image(
    url: str,
    *,
    max_bytes: int,
    timeout_s: float,
    allowed_ports: Sequence[int] = DEFAULT_PORTS,
    allow_networks: Iterable[str | IPNetwork] = (),
    max_redirects: int = 3,
    resolver: Resolver | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> bytes:
    """Return the body of ``url`` (an image, not yet decoded).

    ``resolver`` and ``ssl_context`` exist for tests and private deployments
    (a private CA); production leaves them to the system and to certifi.
    """
    deadline = Deadline(time.monotonic() + timeout_s)
    networks = parse_networks(allow_networks)
    target = check_url(url, allowed_ports=allowed_ports, allow_networks=networks)
    for _hop in range(max_redirects + 1):
        addresses = resolve(target, deadline=deadline, networks=networks, resolver=resolver)
        result = _get(
            target,
            addresses=addresses,
            deadline=deadline,
            max_bytes=max_bytes,
            ssl_context=ssl_context,
        )
        if isinstance(result, bytes):
            return result
        target = _redirect_target(
            target, result.location, allowed_ports=allowed_ports, networks=networks
        )
    raise PermanentError(f"more than {max_redirects} redirects", code=ErrorCode.fetch_failed)


@dataclass(frozen=True, slots=True)
class _Redirect:
    location: str


def _get(
    target: CheckedURL,
    *,
    addresses: Sequence[IPAddress],
    deadline: Deadline,
    max_bytes: int,
    ssl_context: ssl.SSLContext | None,
) -> bytes | _Redirect:
    backend = PinnedBackend(host=target.host, addresses=addresses, deadline=deadline)
    url = httpcore.URL(
        scheme=target.scheme.encode(),
        host=target.host.encode(),
        port=target.port,
        target=target.target.encode(),
    )
    headers = [
        (b"Host", target.host_header.encode()),
        (b"User-Agent", USER_AGENT),
        (b"Accept", b"image/*, application/octet-stream;q=0.5"),
        (b"Accept-Encoding", b"identity"),
        (b"Connection", b"close"),
    ]
    try:
        with (
            httpcore.ConnectionPool(
                ssl_context=ssl_context, network_backend=backend, max_connections=1
            ) as pool,
            pool.stream("GET", url, headers=headers) as response,
        ):
            return _read_response(response, target=target, max_bytes=max_bytes)
    except httpcore.TimeoutException as exc:
        raise TransientError(
            f"fetching {target.host} timed out", code=ErrorCode.fetch_timeout
        ) from exc
    except (httpcore.NetworkError, httpcore.ProtocolError) as exc:
        if _caused_by(exc, ssl.SSLCertVerificationError):
            raise PermanentError(
                f"TLS certificate of {target.host} is not valid: {exc}",
                code=ErrorCode.fetch_failed,
            ) from exc
        raise TransientError(
            f"fetching {target.host} failed: {exc}", code=ErrorCode.fetch_failed
        ) from exc


def _read_response(
    response: httpcore.Response, *, target: CheckedURL, max_bytes: int
) -> bytes | _Redirect:
    status = response.status
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in response.headers}
    if status in _REDIRECTS:
        if "location" not in headers:
            raise PermanentError(f"HTTP {status} without Location", code=ErrorCode.fetch_failed)
        return _Redirect(headers["location"])
    if status not in _OK:
        raise _status_error(target.host, status, headers.get("retry-after"))
    content_type = headers.get("content-type", "").split(";")[0].strip().lower()
    if not content_type.startswith(_ACCEPTED_TYPES):
        raise ImageError(
            f"Content-Type {content_type or '(none)'!r} is not an image",
            code=ErrorCode.url_not_image,
        )
    declared = headers.get("content-length", "").strip()
    if declared.isdigit() and int(declared) > max_bytes:
        raise _too_large(max_bytes, f"Content-Length is {declared}")
    body = _BodyReader(headers.get("content-encoding", "identity"), max_bytes=max_bytes)
    for chunk in response.iter_stream():
        body.feed(chunk)
    return body.finish()


class _BodyReader:
    """Collects a body, decompressing gzip/deflate, never past ``max_bytes``."""

    def __init__(self, content_encoding: str, *, max_bytes: int) -> None:
        encoding = content_encoding.strip().lower()
        if encoding not in ("", "identity", "gzip", "x-gzip", "deflate"):
            raise PermanentError(
                f"Content-Encoding {encoding!r} is not supported", code=ErrorCode.fetch_failed
            )
        self._max_bytes = max_bytes
        self._raw = 0
        self._parts: list[bytes] = []
        self._size = 0
        # wbits 32+15: zlib or gzip framing, detected from the header.
        self._inflate = (
            zlib.decompressobj(32 + zlib.MAX_WBITS) if encoding not in ("", "identity") else None
        )

    def feed(self, chunk: bytes) -> None:
        self._raw += len(chunk)
        if self._raw > self._max_bytes:
            raise _too_large(self._max_bytes, "the body is larger")
        self._keep(chunk if self._inflate is None else self._decompress(self._inflate, chunk))

    def finish(self) -> bytes:
        if self._inflate is not None:
            self._keep(self._inflate.flush())
            if not self._inflate.eof:
                raise PermanentError("compressed body ends early", code=ErrorCode.fetch_failed)
        return b"".join(self._parts)

    def _decompress(self, inflate: zlib._Decompress, chunk: bytes) -> bytes:
        room = self._max_bytes - self._size + 1  # one byte past the cap proves a bomb
        try:
            return inflate.decompress(chunk, room)
        except zlib.error as exc:
            raise PermanentError(
                f"compressed body is corrupt: {exc}", code=ErrorCode.fetch_failed
            ) from exc

    def _keep(self, data: bytes) -> None:
        self._size += len(data)
        if self._size > self._max_bytes:
            raise _too_large(self._max_bytes, "the decompressed body is larger")
        self._parts.append(data)


def _redirect_target(
    current: CheckedURL,
    location: str,
    *,
    allowed_ports: Sequence[int],
    networks: Sequence[IPNetwork],
) -> CheckedURL:
    try:
        joined = urljoin(current.url, location.strip())
    except ValueError as exc:  # e.g. an unclosed IPv6 bracket
        raise PermanentError(
            f"redirect to a malformed URL: {location[:200]!r}", code=ErrorCode.url_invalid
        ) from exc
    following = check_url(joined, allowed_ports=allowed_ports, allow_networks=networks)
    if current.scheme == "https" and following.scheme != "https":
        raise PermanentError(
            f"redirect from https down to {following.scheme} refused",
            code=ErrorCode.url_blocked,
        )
    return following


def _status_error(host: str, status: int, retry_after: str | None) -> CaptionError:
    """What an answer other than 200 or 203 (and a redirect) means: 408, 429 and 5xx but 501
    may mend (``fetch_failed``, transient; 429 and 503 with the wait the server asked
    for), anything else cannot (``fetch_refused``)."""
    said = f"{host} answered HTTP {status}"
    if status not in _RETRYABLE_4XX and (status < 500 or status == 501):
        return PermanentError(said, code=ErrorCode.fetch_refused)
    wait_s = retry_after_s(retry_after) if status in (429, 503) else None
    if wait_s is not None:
        return RetryLaterError(f"{said}, retry after {wait_s:.0f}s", retry_after_s=wait_s)
    return TransientError(said, code=ErrorCode.fetch_failed)


def _too_large(max_bytes: int, detail: str) -> ImageError:
    return ImageError(f"image over {max_bytes} bytes: {detail}", code=ErrorCode.image_too_large)


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, kind):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
