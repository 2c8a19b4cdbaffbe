"""The OpenAI chat-completions protocol, as captionq speaks it to a model server.

What goes over the wire and what comes back, with no connection in it: the request
body of one chat completion (an image always inline as a ``data:`` URL, never a URL
the server would fetch), the server's answer read tolerantly, and every failure
mapped onto the error tree::

    connection refused, reset, dropped   UnavailableError  model_server_unavailable
    429 (Retry-After honoured), 5xx      UnavailableError  model_server_unavailable
    past the request deadline            TransientError    model_server_timeout
    any other 4xx                        PermanentError    model_request_refused
    200 with no text in it               PermanentError    model_error

Whether a transient failure is retried is ``worker.retry.decide``'s call; a 429's
``Retry-After`` becomes the error's ``retry_after_s``, which the retry waits at least.

Structured output (``response_format`` with a JSON schema) is asked for only when
configured: vLLM honours it, ``transformers serve`` ignores it, and other servers refuse
it. One variant's request asks for ``{"text": ...}`` (:data:`TEXT_SCHEMA`), and
:func:`read_text` reads either answer: JSON ``{"text": ...}`` (or a list of texts, or a
JSON string), fenced or bare, and otherwise the plain text as written. A request for
N variants at once asks for ``{"variants": [string x N]}`` (:func:`variants_format`),
and :func:`read_variants` keeps at most N usable texts of whatever came back: a list
(bare, fenced, under ``variants``, or cut short by the token limit: its complete
strings); plain text is no list and yields none (a model asked for N may have written
them all in one text), so the caller asks for the missing ones one by one.
"""

from __future__ import annotations

import base64
import io
import json
import re
from typing import Any

import httpx
from PIL import Image

from schemas.checks.headers import retry_after_s
from schemas.errors import (
    CaptionError,
    ErrorCode,
    PermanentError,
    TransientError,
    UnavailableError,
)

JPEG_QUALITY = 95
TEXT_SCHEMA: dict[str, Any] = {
    "type": "json_schema",
    "json_schema": {
        "name": "ad_copy",
        "strict": True,
        "schema": {
            "type": "object",
            "properties": {"text": {"type": "string"}},
            "required": ["text"],
            "additionalProperties": False,
        },
    },
}
_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)
_DETAIL_CHARS = 300


def variants_format(n: int) -> dict[str, Any]:
    """``response_format`` asking for exactly ``n`` texts: ``{"variants": [string x n]}``."""
    texts = {"type": "array", "items": {"type": "string"}, "minItems": n, "maxItems": n}
    return {
        "type": "json_schema",
        "json_schema": {
            "name": "ad_copy_variants",
            "strict": True,
            "schema": {
                "type": "object",
                "properties": {"variants": texts},
                "required": ["variants"],
                "additionalProperties": False,
            },
        },
    }


def data_url(image: Image.Image) -> str:
    """The image inline, as JPEG (PNG where it has transparency)."""
    buffer = io.BytesIO()
    if image.mode in ("RGBA", "LA", "P"):
        image.save(buffer, format="PNG")
        kind = "png"
    else:
        (image if image.mode == "RGB" else image.convert("RGB")).save(
            buffer, format="JPEG", quality=JPEG_QUALITY
        )
        kind = "jpeg"
    return f"data:image/{kind};base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def image_message(image: Image.Image, instruction: str) -> list[dict[str, Any]]:
    return [{
        "role": "user",
        "content": [
            {"type": "image_url", "image_url": {"url": data_url(image)}},
            {"type": "text", "text": instruction},
        ],
    }]


def text_messages(system: str, instruction: str) -> list[dict[str, Any]]:
    return [{"role": "system", "content": system}, {"role": "user", "content": instruction}]


def chat_body(
    model: str,
    messages: list[dict[str, Any]],
    *,
    max_tokens: int,
    temperature: float,
    top_p: float,
    seed: int | None,
    response_format: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One chat completion: one choice (``transformers serve`` ignores ``n``)."""
    body: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "max_tokens": max_tokens,
        "temperature": temperature,
        "stream": False,
    }
    if temperature > 0:
        body["top_p"] = top_p
    if seed is not None:
        body["seed"] = seed
    if response_format is not None:
        body["response_format"] = response_format
    return body


def _unfenced(content: str | None) -> str:
    text = (content or "").strip()
    fenced = _FENCE.match(text)
    return fenced.group(1).strip() if fenced else text


def read_text(content: str | None) -> str:
    """The text of an answer, whether or not the server kept to the JSON schema."""
    text = _unfenced(content)
    if not text or text[0] not in "{[\"":
        return text
    try:
        value = json.loads(text)
    except ValueError:
        return text
    found = _first_text(value)
    return text if found is None else found.strip()


def read_variants(content: str | None, n: int) -> list[str]:
    """The usable texts (non-empty, at most ``n``, in order) of an answer that was asked
    for ``{"variants": [...]}``; none where it holds no list."""
    text = _unfenced(content)
    try:
        value: Any = json.loads(text)
    except ValueError:
        value = _complete_items(text)
    if isinstance(value, dict):
        value = value.get("variants", next((v for v in value.values() if isinstance(v, list)),
                                           None))
    if not isinstance(value, list):
        return []
    texts = [found.strip() for v in value if (found := _first_text(v)) is not None]
    return [t for t in texts if t][:n]


def _complete_items(text: str) -> list[Any] | None:
    """The complete items of a JSON list that was cut short (``["a", "b", "c``: a and
    b); None where there is no list."""
    at = text.find("[")
    if at < 0:
        return None
    decoder, items = json.JSONDecoder(), list[Any]()
    at += 1
    while True:
        while at < len(text) and text[at] in " \t\r\n,":
            at += 1
        try:
            item, at = decoder.raw_decode(text, at)
        except ValueError:
            return items
        items.append(item)


def _first_text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        if isinstance(value.get("text"), str):
            return value["text"]
        return next((v for v in value.values() if isinstance(v, str)), None)
    if isinstance(value, list):
        return next((found for v in value if (found := _first_text(v)) is not None), None)
    return None


def answer_text(response: httpx.Response, what: str) -> str:
    """The first choice's text of a 2xx answer, or the failure it is, raised."""
    return read_text(answer_content(response, what))


def answer_content(response: httpx.Response, what: str) -> str:
    """The first choice's content of a 2xx answer as written, or the failure it is,
    raised."""
    failure = failure_of(response, what)
    if failure is not None:
        raise failure
    try:
        choice = response.json()["choices"][0]
        content = choice["message"].get("content")
    except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
        raise PermanentError(f"{what}: not a chat completion: {_detail(response)}",
                             code=ErrorCode.model_error) from exc
    if content is not None and not isinstance(content, str):
        raise PermanentError(f"{what}: content is {type(content).__name__}, not text",
                             code=ErrorCode.model_error)
    return content or ""


def failure_of(response: httpx.Response, what: str) -> CaptionError | None:
    """What a non-2xx answer means; None for a 2xx."""
    status = response.status_code
    if status < 300:
        return None
    detail = f"{what}: HTTP {status}: {_detail(response)}"
    if status == 429:
        asked_s = retry_after_s(response.headers.get("retry-after")) or 0.0
        return UnavailableError(detail, code=ErrorCode.model_server_unavailable,
                                retry_after_s=asked_s)
    if status >= 500:
        return UnavailableError(detail, code=ErrorCode.model_server_unavailable,
                                retry_after_s=0.0)
    return PermanentError(detail, code=ErrorCode.model_request_refused)


def transport_failure(exc: httpx.HTTPError, what: str, timeout_s: float) -> CaptionError:
    """A request that got no answer: past its deadline, or no connection."""
    if isinstance(exc, httpx.TimeoutException) and not isinstance(exc, httpx.ConnectTimeout):
        return TransientError(f"{what}: no answer within {timeout_s:g}s",
                              code=ErrorCode.model_server_timeout)
    return UnavailableError(f"{what}: {type(exc).__name__}: {exc}",
                            code=ErrorCode.model_server_unavailable, retry_after_s=0.0)


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:_DETAIL_CHARS]
    # OpenAI and vLLM: {"error": {"message": ...}}; FastAPI servers: {"detail": ...}.
    error = (body.get("error") or body.get("detail")) if isinstance(body, dict) else None
    message = error.get("message") if isinstance(error, dict) else error
    return str(message if message else body)[:_DETAIL_CHARS]
