"""A pinned, deadline-bound connection: the one way captionq opens a socket to a
tenant's server (the image fetch and the callback sender both use it).

    resolve once     getaddrinfo in a thread bounded by the deadline (:func:`resolve`)
    check_address    on EVERY resolved address: one bad address refuses the URL
    connect          to the checked address itself (:class:`PinnedBackend`: no second
                     lookup, so DNS rebinding cannot swap it), while the Host header,
                     TLS SNI and certificate check keep the original host name
    every read/write ends by one :class:`Deadline` (:class:`DeadlineStream`), so a
                     server that drips a byte a second is cut off

No proxy or other environment setting is read: the connection is made by a private
:class:`httpcore.ConnectionPool` whose network backend only knows the checked addresses.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import httpcore

from schemas.checks.urls import CheckedURL, IPAddress, IPNetwork, check_address
from schemas.errors import ErrorCode, TransientError

Resolver = Callable[[str, int], Sequence[str]]
"""``(host, port) -> addresses``; the default asks the system resolver."""


@dataclass(slots=True)
class Deadline:
    end: float  # time.monotonic(); a sender that reuses a connection moves it per request

    def clamp(self, timeout: float | None, expired: type[Exception]) -> float:
        """The smaller of ``timeout`` and the time left; raise ``expired`` if none is."""
        left = self.end - time.monotonic()
        if left <= 0:
            raise expired("the fetch deadline has passed")
        return left if timeout is None else min(timeout, left)


class DeadlineStream(httpcore.NetworkStream):
    """A socket stream whose every read and write ends by the fetch deadline."""

    def __init__(self, inner: httpcore.NetworkStream, deadline: Deadline) -> None:
        self._inner = inner
        self._deadline = deadline

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, self._deadline.clamp(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, self._deadline.clamp(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        budget = self._deadline.clamp(timeout, httpcore.ConnectTimeout)
        return DeadlineStream(
            self._inner.start_tls(ssl_context, server_hostname, budget), self._deadline
        )

    def get_extra_info(self, info: str) -> object:
        return self._inner.get_extra_info(info)


class PinnedBackend(httpcore.NetworkBackend):
    """Connects only to addresses already checked for ``host``; never resolves."""

    def __init__(self, *, host: str, addresses: Sequence[IPAddress], deadline: Deadline) -> None:
        self._host = host
        self._addresses = addresses
        self._deadline = deadline
        self._system = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        if host != self._host:
            raise httpcore.ConnectError(f"refusing to connect to unchecked host {host!r}")
        failure: httpcore.ConnectError | None = None
        for address in self._addresses:
            budget = self._deadline.clamp(timeout, httpcore.ConnectTimeout)
            try:
                stream = self._system.connect_tcp(
                    str(address), port, budget, local_address, socket_options
                )
            except httpcore.ConnectError as exc:
                failure = exc
                continue
            return DeadlineStream(stream, self._deadline)
        raise failure or httpcore.ConnectError(f"no address for {host!r}")

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("unix sockets are not allowed")


def resolve(
    target: CheckedURL,
    *,
    deadline: Deadline,
    networks: Sequence[IPNetwork],
    resolver: Resolver | None,
) -> tuple[IPAddress, ...]:
    if target.address is not None:  # a literal, checked by check_url
        return (target.address,)
    try:
        budget = deadline.clamp(None, TimeoutError)
        found = _lookup_within(resolver or _system_resolve, target, budget)
    except TimeoutError as exc:
        raise TransientError(
            f"resolving {target.host} timed out", code=ErrorCode.fetch_timeout
        ) from exc
    except OSError as exc:
        raise TransientError(
            f"cannot resolve {target.host}: {exc}", code=ErrorCode.fetch_failed
        ) from exc
    addresses = tuple(dict.fromkeys(check_address(a, allow_networks=networks) for a in found))
    if not addresses:
        raise TransientError(f"{target.host} has no address", code=ErrorCode.fetch_failed)
    return addresses


def _lookup_within(resolver: Resolver, target: CheckedURL, budget: float) -> Sequence[str]:
    """Run ``resolver`` in a daemon thread: getaddrinfo has no timeout of its own."""
    outcome: list[Sequence[str] | BaseException] = []

    def lookup() -> None:
        try:
            outcome.append(resolver(target.host, target.port))
        except BaseException as exc:  # handed to the caller below
            outcome.append(exc)

    thread = threading.Thread(target=lookup, name="captionq-resolve", daemon=True)
    thread.start()
    thread.join(budget)
    if not outcome:
        raise TimeoutError(f"no answer for {target.host} within {budget:.1f}s")
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    return outcome[0]


def _system_resolve(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    return [str(info[4][0]) for info in infos]
