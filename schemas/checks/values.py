"""Values that every database stores alike: text without NUL, JSON without NaN.

SQLite stores a NUL inside text and NaN inside JSON; PostgreSQL refuses both (its
``text`` cannot hold U+0000, and its ``json`` follows RFC 8259, which has no NaN or
infinity). Refusing them at the edge, with a code, makes both databases answer the
same and keeps one bad item of a bulk request from failing the others.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from schemas.errors import ErrorCode, PermanentError


def check_storable(value: object, *, field: str) -> None:
    """Raise ``invalid_request`` naming the first part of ``value`` that a database
    would refuse: a string with NUL, or a float that is NaN or infinite."""
    problem = _problem(value, field)
    if problem is not None:
        raise PermanentError(problem, code=ErrorCode.invalid_request)


def _problem(value: object, at: str) -> str | None:
    if isinstance(value, str):
        return f"{at}: NUL characters (U+0000) are not allowed" if "\x00" in value else None
    if isinstance(value, float) and not math.isfinite(value):
        return f"{at}: {value} is not a number JSON can hold (NaN and infinities are refused)"
    if isinstance(value, Mapping):
        for key, item in value.items():
            found = _problem(key, f"{at} key {key!r}") or _problem(item, f"{at}.{key}")
            if found:
                return found
    elif isinstance(value, Sequence) and not isinstance(value, bytes | bytearray):
        for index, item in enumerate(value):
            found = _problem(item, f"{at}[{index}]")
            if found:
                return found
    return None
