"""Which URLs a worker may fetch or call back: pure checks, no network.

Two steps, both raising :class:`~schemas.errors.PermanentError`:

- :func:`check_url` parses a URL the way a resolver and an HTTP client would
  (IDNA, numeric IPv4 forms such as ``2130706433``, ``0177.0.0.1``,
  ``0x7f.1``, ``127.1``) and refuses what is malformed (``url_invalid``) or
  points somewhere it must not (``url_blocked``): a port not allowed, a
  literal address that is not globally routable, a name that always means
  this machine.
- :func:`check_address` refuses an address that is not globally routable,
  including IPv4 carried inside IPv6 (mapped, compatible, NAT64, 6to4) and
  Teredo. The fetcher calls it on every address a host name resolves to.

``allow_networks`` (CIDR strings or networks) re-admits addresses on
purpose, for tests and private deployments. Cloud metadata addresses stay
blocked even then. Pair it with ``allowed_ports`` to admit exactly one
service, e.g. ``allow_networks=("127.0.0.1/32",)``, ``allowed_ports=(8080,)``.

One port rule holds for image and callback URLs alike (``URL_ALLOWED_PORTS``, 80 and
443 by default): :func:`parse_ports` reads it, ports and ``"low-high"`` ranges.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final
from urllib.parse import quote, urlsplit, urlunsplit

import idna

from schemas.errors import ErrorCode, PermanentError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_PORTS: Final = (80, 443)


@dataclass(frozen=True, slots=True)
class Ports:
    """Allowed ports: single ports and inclusive ranges (``port in ports``)."""

    single: frozenset[int]
    ranges: tuple[tuple[int, int], ...] = ()

    def __contains__(self, port: object) -> bool:
        if not isinstance(port, int):
            return False
        return port in self.single or any(low <= port <= high for low, high in self.ranges)


def parse_ports(values: Iterable[int | str]) -> Ports:
    """``[80, 443, "8000-8100"]`` as :class:`Ports`; ``ValueError`` on anything else."""
    single: set[int] = set()
    ranges: list[tuple[int, int]] = []
    for value in values:
        if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 65535:
            single.add(value)
            continue
        low, sep, high = str(value).partition("-")
        if not (sep and low.isdigit() and high.isdigit() and 1 <= int(low) <= int(high) <= 65535):
            raise ValueError(f"not a port or a low-high port range: {value!r}")
        ranges.append((int(low), int(high)))
    return Ports(frozenset(single), tuple(ranges))

MAX_URL_LENGTH: Final = 2048

_SCHEME_PORTS: Final = {"http": 80, "https": 443}

# Networks that never receive a fetch, whatever ``ipaddress``'s flags say in a
# given Python release (its tables changed between 3.11 and 3.13).
_BLOCKED_NETWORKS: Final[tuple[IPNetwork, ...]] = tuple(
    ipaddress.ip_network(cidr)
    for cidr in (
        "0.0.0.0/8",  # "this network", 0.0.0.0 connects to the local host
        "10.0.0.0/8",
        "100.64.0.0/10",  # carrier-grade NAT
        "127.0.0.0/8",
        "169.254.0.0/16",  # link-local, cloud metadata
        "172.16.0.0/12",
        "192.0.0.0/24",  # IETF protocol assignments
        "192.0.2.0/24",
        "192.88.99.0/24",  # 6to4 relay anycast
        "192.168.0.0/16",
        "198.18.0.0/15",  # benchmarking
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, broadcast
        "::/128",
        "::1/128",
        "::/96",  # IPv4-compatible (deprecated)
        "64:ff9b:1::/48",  # local-use NAT64
        "100::/64",  # discard-only
        "2001::/32",  # Teredo
        "2001:db8::/32",
        "3fff::/20",  # documentation
        "fc00::/7",  # unique local
        "fe80::/10",  # link-local
        "fec0::/10",  # site-local (deprecated)
        "ff00::/8",  # multicast
    )
)

# Cloud instance metadata: blocked even when an allow-list admits its network.
_METADATA_ADDRESSES: Final[frozenset[IPAddress]] = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "169.254.170.2", "169.254.169.123", "fd00:ec2::254")
)
_BLOCKED_NAMES: Final = frozenset({"localhost", "metadata.google.internal", "metadata"})

_NAT64: Final = ipaddress.ip_network("64:ff9b::/96")
_HOST_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_FORBIDDEN_URL_CHARS = re.compile(r"[\x00-\x20\x7f\\]")


@dataclass(frozen=True, slots=True)
class CheckedURL:
    """A URL that passed :func:`check_url`, in the form that will be used.

    ``host`` is the ASCII host name (IDNA) or the canonical address text;
    ``address`` is set when the URL names an address rather than a name.
    """

    url: str
    scheme: str
    host: str
    port: int
    target: str
    address: IPAddress | None

    @property
    def host_header(self) -> str:
        return _netloc(self.scheme, self.host, self.port)


def parse_networks(networks: Iterable[str | IPNetwork]) -> tuple[IPNetwork, ...]:
    """CIDR strings to networks; a malformed entry is a configuration error."""
    try:
        return tuple(ipaddress.ip_network(n, strict=False) for n in networks)
    except ValueError as exc:
        raise ValueError(f"allow_networks: {exc}") from exc


def check_address(
    ip: str | IPAddress, *, allow_networks: Iterable[str | IPNetwork] = ()
) -> IPAddress:
    """Return ``ip`` if a fetch may connect to it, else raise ``url_blocked``."""
    try:
        address = ipaddress.ip_address(ip) if isinstance(ip, str) else ip
    except ValueError as exc:
        raise PermanentError(f"not an IP address: {ip!r}", code=ErrorCode.url_invalid) from exc
    allowed = parse_networks(allow_networks)
    for candidate in _effective_addresses(address):
        if candidate in _METADATA_ADDRESSES:
            raise _blocked(address, "is a cloud metadata address")
        if any(candidate in net for net in allowed if net.version == candidate.version):
            continue
        reason = _blocked_reason(candidate)
        if reason:
            raise _blocked(address, reason)
    return address


def check_url(
    url: str,
    *,
    allowed_ports: Ports | Sequence[int] = DEFAULT_PORTS,
    allow_networks: Iterable[str | IPNetwork] = (),
) -> CheckedURL:
    """Parse ``url`` for fetching or a callback; raise if it may not be used.

    A literal address is checked here; a host name is checked again by the
    caller on every address it resolves to.
    """
    if not isinstance(url, str) or not url:
        raise PermanentError("URL is empty", code=ErrorCode.url_invalid)
    if len(url) > MAX_URL_LENGTH:
        raise PermanentError(f"URL longer than {MAX_URL_LENGTH}", code=ErrorCode.url_invalid)
    if _FORBIDDEN_URL_CHARS.search(url):
        raise PermanentError(
            "URL contains whitespace, control characters or a backslash",
            code=ErrorCode.url_invalid,
        )
    try:
        parts = urlsplit(url)
        explicit_port = parts.port
    except ValueError as exc:
        raise PermanentError(f"malformed URL: {exc}", code=ErrorCode.url_invalid) from exc
    scheme = parts.scheme.lower()
    if scheme not in _SCHEME_PORTS:
        raise PermanentError("only http and https URLs are allowed", code=ErrorCode.url_invalid)
    if "@" in parts.netloc:
        raise PermanentError("URLs with user info are not allowed", code=ErrorCode.url_invalid)
    host, address = _canonical_host(parts.hostname or "", bracketed="[" in parts.netloc)
    port = explicit_port if explicit_port is not None else _SCHEME_PORTS[scheme]
    if port not in allowed_ports:
        raise PermanentError(f"port {port} is not allowed", code=ErrorCode.url_blocked)
    if address is not None:
        check_address(address, allow_networks=allow_networks)
    elif host in _BLOCKED_NAMES or host.endswith(".localhost"):
        raise PermanentError(f"host {host!r} is this machine", code=ErrorCode.url_blocked)
    path = quote(parts.path or "/", safe="/%:@!$&'()*+,;=-._~")
    query = quote(parts.query, safe="/%:@!$&'()*+,;=-._~?")
    target = path + (f"?{query}" if query else "")
    return CheckedURL(
        url=urlunsplit((scheme, _netloc(scheme, host, port), path, query, "")),
        scheme=scheme,
        host=host,
        port=port,
        target=target,
        address=address,
    )


def _netloc(scheme: str, host: str, port: int) -> str:
    host = f"[{host}]" if ":" in host else host
    return host if port == _SCHEME_PORTS[scheme] else f"{host}:{port}"


def _canonical_host(raw: str, *, bracketed: bool) -> tuple[str, IPAddress | None]:
    if not raw:
        raise PermanentError("URL has no host", code=ErrorCode.url_invalid)
    if bracketed:
        if "%" in raw:
            raise PermanentError("IPv6 zone ids are not allowed", code=ErrorCode.url_invalid)
        try:
            v6 = ipaddress.IPv6Address(raw)
        except ValueError as exc:
            raise PermanentError(f"bad IPv6 literal {raw!r}", code=ErrorCode.url_invalid) from exc
        return str(v6), v6
    try:
        ascii_host = idna.encode(raw, uts46=True, std3_rules=True).decode("ascii")
    except (idna.IDNAError, UnicodeError) as exc:
        raise PermanentError(f"bad host name {raw!r}: {exc}", code=ErrorCode.url_invalid) from exc
    ascii_host = ascii_host.lower().rstrip(".")
    v4 = parse_ipv4_host(ascii_host)
    if v4 is not None:
        return str(v4), v4
    labels = ascii_host.split(".")
    if len(ascii_host) > 253 or not all(_HOST_LABEL.match(label) for label in labels):
        raise PermanentError(f"bad host name {raw!r}", code=ErrorCode.url_invalid)
    return ascii_host, None


def parse_ipv4_host(host: str) -> ipaddress.IPv4Address | None:
    """Read ``host`` as an IPv4 address the way ``inet_aton`` and browsers do.

    Returns None for a host name. A host whose last label is numeric is an
    address (WHATWG URL rule): ``127.1``, ``0x7f.1``, ``0177.0.0.1``,
    ``2130706433``; if it is not a valid one the URL is invalid.
    """
    labels = host.rstrip(".").split(".")
    if not _is_number(labels[-1]):
        return None
    if len(labels) > 4 or not all(_is_number(label) for label in labels):
        raise PermanentError(f"bad IPv4 address {host!r}", code=ErrorCode.url_invalid)
    numbers = [_parse_number(label, host) for label in labels]
    *head, last = numbers
    if any(n > 255 for n in head) or last >= 256 ** (5 - len(numbers)):
        raise PermanentError(f"IPv4 address out of range {host!r}", code=ErrorCode.url_invalid)
    value = last
    for index, number in enumerate(head):
        value += number << (8 * (3 - index))
    return ipaddress.IPv4Address(value)


def _is_number(label: str) -> bool:
    if label[:2] in ("0x", "0X"):
        return all(c in "0123456789abcdefABCDEF" for c in label[2:])
    return label.isascii() and label.isdigit()


def _parse_number(label: str, host: str) -> int:
    try:
        if label[:2] in ("0x", "0X"):
            return int(label[2:] or "0", 16)
        if len(label) > 1 and label.startswith("0"):
            return int(label[1:], 8)
        return int(label, 10)
    except ValueError as exc:
        raise PermanentError(f"bad IPv4 address {host!r}", code=ErrorCode.url_invalid) from exc


def _effective_addresses(address: IPAddress) -> list[IPAddress]:
    """``address`` and any IPv4 address a packet to it would really reach."""
    if isinstance(address, ipaddress.IPv4Address):
        return [address]
    if address.ipv4_mapped is not None:
        return [address.ipv4_mapped]
    found: list[IPAddress] = [address]
    if address.sixtofour is not None:
        found.append(address.sixtofour)
    if address in _NAT64:
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return found


def _blocked_reason(address: IPAddress) -> str | None:
    if address in _NAT64:  # routable only as far as the IPv4 inside, checked separately
        return None
    if any(address in net for net in _BLOCKED_NETWORKS if net.version == address.version):
        return "is in a private, local or reserved network"
    if not address.is_global or address.is_multicast or address.is_reserved:
        return "is not globally routable"
    return None


def _blocked(address: IPAddress, reason: str) -> PermanentError:
    return PermanentError(f"address {address} {reason}", code=ErrorCode.url_blocked)
