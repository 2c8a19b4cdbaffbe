"""HTTP header values that servers send captionq: read once, the same way everywhere.

``Retry-After`` (RFC 9110, 10.2.3) is either delay-seconds or an HTTP date; image
servers, model servers and captionq's own API (for the SDK) all send it.
"""

from __future__ import annotations

import time
from email.utils import parsedate_to_datetime


def retry_after_s(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds a ``Retry-After`` value asks to wait (a date in the past: 0), or None when
    it is absent or unreadable (a negative number, words, a date without a zone)."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return seconds if seconds >= 0 and seconds == seconds and seconds != float("inf") else None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))
