"""What reaches Sentry: never image bytes, API keys or webhook secrets.

:func:`init_sentry` is the only way a captionq process turns Sentry on. It
layers three defences, because any one of them can miss:

1. ``custom_repr`` turns bytes in stack-frame variables into
   ``<N bytes>`` before Sentry writes their ``repr``;
2. Sentry's own :class:`~sentry_sdk.scrubber.EventScrubber`, recursive, with
   our field names added to its deny-list (by *key*);
3. :func:`before_send` / :func:`before_breadcrumb`, which walk the whole
   event (request, headers, extra, contexts, breadcrumbs, exception values,
   frame variables, span data) and scrub by *value*: bytes, long base64
   runs, ``data:`` URLs, ``repr`` s of bytes, decoded binary, API keys
   (``cq_...``), webhook secrets (``whsec_...``) and bearer credentials.

Request bodies are never attached (``max_request_body_size="never"``) and
PII is off (``send_default_pii=False``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

import sentry_sdk
from sentry_sdk.scrubber import DEFAULT_DENYLIST, EventScrubber

if TYPE_CHECKING:
    from sentry_sdk.integrations import Integration
    from sentry_sdk.types import Breadcrumb, BreadcrumbHint, Event, Hint

FILTERED: Final = "[Filtered]"
SENSITIVE_KEYS: Final = frozenset(
    {
        "authorization",
        "proxy_authorization",
        "x_api_key",
        "api_key",
        "apikey",
        "cookie",
        "set_cookie",
        "secret",
        "password",
        "token",
        "access_token",
        "refresh_token",
        "image_base64",
        "image_b64",
        "image_bytes",
        "image_data",
        "webhook_secret",
        "signing_secret",
        "webhook_signature",
    }
)
_SENSITIVE_SUFFIXES: Final = ("_secret", "_token", "_password", "_api_key", "_base64")
_MAX_DEPTH: Final = 64

_CREDENTIAL: Final = re.compile(
    r"\bcq_[A-Za-z0-9_\-]{6,}"  # captionq API keys
    r"|\bwhsec_[A-Za-z0-9+/=_\-]{6,}"  # Standard Webhooks secrets
    r"|\b(?:Bearer|Basic|Token)\s+[A-Za-z0-9._~+/=\-]{8,}",
    re.IGNORECASE,
)
_BINARY_TEXT: Final = re.compile(
    r"data:[\w.+/-]*;base64,[A-Za-z0-9+/=\s]*"  # a data: URL, whatever its length
    r"|[A-Za-z0-9+/]{120,}={0,2}"  # a long base64 run
    r"|(?:bytearray\()?\bb(['\"])(?:\\x[0-9a-fA-F]{2}|\\.|(?!\1)[^\\]){24,}(?:\1\)?)?"  # bytes repr
)
_NON_TEXT: Final = re.compile(r"[\ufffd\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def scrub(value: Any, *, _depth: int = 0) -> Any:
    """A copy of ``value`` with bytes, credentials and sensitive keys filtered."""
    if _depth > _MAX_DEPTH:
        return FILTERED
    if isinstance(value, bytes | bytearray | memoryview):
        return f"[{len(value)} bytes filtered]"
    if isinstance(value, str):
        return scrub_text(value)
    if isinstance(value, Mapping):
        return {
            key: FILTERED if is_sensitive_key(key) else scrub(item, _depth=_depth + 1)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        items = [scrub(item, _depth=_depth + 1) for item in value]
        if len(items) == 2 and isinstance(items[0], str) and is_sensitive_key(items[0]):
            items[1] = FILTERED  # a (name, value) header pair
        return items if isinstance(value, list) else tuple(items)
    return value


def scrub_text(text: str) -> str:
    """``text`` with credentials and binary-looking runs replaced."""
    if len(text) >= 16 and len(_NON_TEXT.findall(text)) * 10 > len(text):
        return f"[binary text of {len(text)} characters filtered]"
    text = _CREDENTIAL.sub(FILTERED, text)
    return _BINARY_TEXT.sub(lambda m: f"[{len(m.group(0))} characters of binary filtered]", text)


def is_sensitive_key(key: object) -> bool:
    if not isinstance(key, str):
        return False
    normal = key.strip().lower().replace("-", "_")
    return normal in SENSITIVE_KEYS or normal.endswith(_SENSITIVE_SUFFIXES)


def before_send(event: Event, hint: Hint) -> Event | None:
    """Sentry ``before_send`` (and ``before_send_transaction``) hook."""
    scrubbed: Event = scrub(event)
    return scrubbed


def before_breadcrumb(crumb: Breadcrumb, hint: BreadcrumbHint) -> Breadcrumb | None:
    """Sentry ``before_breadcrumb`` hook."""
    scrubbed: Breadcrumb = scrub(crumb)
    return scrubbed


def repr_without_bytes(value: object) -> str | None:
    """Sentry ``custom_repr``: bytes never get a ``repr``; None means Sentry's own."""
    if isinstance(value, bytes | bytearray | memoryview):
        return f"<{len(value)} bytes>"
    return None


def init_sentry(
    dsn: str, *, environment: str | None = None, integrations: Sequence[Integration] = ()
) -> None:
    """Turn Sentry on for this process, with every scrubber in place. ``integrations``:
    the process's own (Celery with Crons check-ins in workers and beat, FastAPI in the
    API), which schemas cannot import; they report through the same scrubbers."""
    denylist = [*DEFAULT_DENYLIST, *sorted(SENSITIVE_KEYS)]
    sentry_sdk.init(
        dsn=dsn,
        environment=environment,
        integrations=list(integrations),
        send_default_pii=False,
        include_local_variables=True,
        max_request_body_size="never",
        custom_repr=repr_without_bytes,
        event_scrubber=EventScrubber(denylist=denylist, recursive=True),
        before_send=before_send,
        before_send_transaction=before_send,
        before_breadcrumb=before_breadcrumb,
    )
