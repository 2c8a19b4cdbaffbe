"""The chat-completions protocol as captionq speaks it: request bodies, the tolerant
readers of answers (one text, or a list of N), every failure typed with its code,
Retry-After honoured by decide; and the plan of a batch's variant requests."""

from __future__ import annotations

import base64
import io
import json

import httpx
import pytest
from PIL import Image

from schemas.errors import ErrorCode, PermanentError, TransientError, UnavailableError
from schemas.settings import WorkerSettings
from worker import retry
from worker.models import served_protocol as wire
from worker.models.base import WriteRequest
from worker.models.served import plan

pytestmark = pytest.mark.unit


def answer(status: int, body: object = None, headers: dict[str, str] | None = None,
           text: str | None = None) -> httpx.Response:
    content = text.encode() if text is not None else json.dumps(body).encode()
    return httpx.Response(status, content=content, headers=headers or {})


def completion(content: object) -> dict[str, object]:
    return {"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]}


@pytest.mark.parametrize(
    ("content", "text"),
    [
        ("Fresh coffee, bright mornings.", "Fresh coffee, bright mornings."),
        ('{"text": "Fresh coffee."}', "Fresh coffee."),
        ('```json\n{"text": "Fenced."}\n```', "Fenced."),
        ('["First.", "Second."]', "First."),
        ('[{"text": "In a list."}]', "In a list."),
        ('"A JSON string."', "A JSON string."),
        ('{"caption": "Another key."}', "Another key."),
        ('{"text": "unclosed', '{"text": "unclosed'),  # not JSON: kept as written
        ("{not json at all}", "{not json at all}"),
        ('{"n": 3}', '{"n": 3}'),  # JSON with no text in it: kept as written
        ("", ""),
        (None, ""),
    ],
)
def test_the_reader_takes_json_or_plain_text(content: str | None, text: str) -> None:
    assert wire.answer_text(answer(200, completion(content)), "m") == text


@pytest.mark.parametrize(
    "body", [{"choices": []}, {"nothing": 1}, [1, 2], {"choices": [{"message": None}]}],
    ids=["no-choices", "no-key", "a-list", "no-message"],
)
def test_an_answer_that_is_no_chat_completion_is_a_model_error(body: object) -> None:
    with pytest.raises(PermanentError) as caught:
        wire.answer_text(answer(200, body), "m")
    assert caught.value.code == ErrorCode.model_error


def test_content_that_is_not_text_is_a_model_error() -> None:
    with pytest.raises(PermanentError) as caught:
        wire.answer_text(answer(200, completion([{"type": "text"}])), "m")
    assert caught.value.code == ErrorCode.model_error


def test_a_429_is_transient_and_carries_its_retry_after() -> None:
    failure = wire.failure_of(answer(429, {"error": {"message": "slow down"}},
                                     {"retry-after": "7"}), "m")
    assert isinstance(failure, UnavailableError)
    assert failure.code == ErrorCode.model_server_unavailable
    assert failure.retry_after_s == 7.0
    assert "slow down" in failure.message
    decision = retry.decide(failure, attempt=1, max_attempts=5)
    assert isinstance(decision, retry.Retry)
    assert decision.countdown_s >= 7.0  # the backoff's first delay is at most 2 s


def test_a_retry_after_past_the_cap_waits_the_cap_only() -> None:
    failure = wire.failure_of(answer(429, {}, {"retry-after": "86400"}), "m")
    decision = retry.decide(failure, attempt=1, max_attempts=5)  # type: ignore[arg-type]
    assert decision == retry.Retry(retry.RETRY_AFTER_MAX_S)


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_5xx_is_transient(status: int) -> None:
    failure = wire.failure_of(answer(status, text="upstream died"), "m")
    assert isinstance(failure, UnavailableError)
    assert failure.code == ErrorCode.model_server_unavailable
    assert isinstance(retry.decide(failure, attempt=1, max_attempts=5), retry.Retry)


@pytest.mark.parametrize("status", [400, 401, 404, 413, 422])
def test_other_4xx_is_permanent_with_the_servers_message(status: int) -> None:
    failure = wire.failure_of(answer(status, {"error": {"message": "bad image_url"}}), "m")
    assert isinstance(failure, PermanentError)
    assert failure.code == ErrorCode.model_request_refused
    assert "bad image_url" in failure.message
    assert retry.decide(failure, attempt=1, max_attempts=5) == retry.GiveUp(
        ErrorCode.model_request_refused, failure.message)


def test_a_deadline_passed_is_a_timeout_and_no_connection_is_unavailable() -> None:
    late = wire.transport_failure(httpx.ReadTimeout("read"), "m", 2.0)
    assert isinstance(late, TransientError)
    assert late.code == ErrorCode.model_server_timeout
    assert "2s" in late.message
    for exc in (httpx.ConnectError("refused"), httpx.ConnectTimeout("syn"),
                httpx.RemoteProtocolError("closed")):
        failure = wire.transport_failure(exc, "m", 2.0)
        assert failure.code == ErrorCode.model_server_unavailable, exc


def test_the_image_goes_inline_as_a_data_url_never_a_fetchable_url() -> None:
    for image, kind in ((Image.new("RGB", (9, 7), (1, 2, 3)), "jpeg"),
                        (Image.new("L", (9, 7), 5), "jpeg"),
                        (Image.new("RGBA", (9, 7), (1, 2, 3, 4)), "png")):
        (message,) = wire.image_message(image, "Describe it.")
        part = message["content"][0]["image_url"]["url"]
        head, data = part.split(",", 1)
        assert head == f"data:image/{kind};base64"
        assert Image.open(io.BytesIO(base64.b64decode(data))).size == (9, 7)
        assert message["content"][1] == {"type": "text", "text": "Describe it."}


def test_the_body_asks_for_json_only_when_configured_and_one_choice() -> None:
    plain = wire.chat_body("m", [], max_tokens=5, temperature=0.0, top_p=0.9, seed=None)
    assert not {"response_format", "n", "seed", "top_p"} & set(plain)  # greedy, one choice
    sampled = wire.chat_body("m", [], max_tokens=5, temperature=0.8, top_p=0.9, seed=3,
                             response_format=wire.TEXT_SCHEMA)
    assert sampled["response_format"]["type"] == "json_schema"
    assert (sampled["seed"], sampled["top_p"]) == (3, 0.9)


def test_the_list_schema_asks_for_exactly_n_strings() -> None:
    schema = wire.variants_format(3)["json_schema"]["schema"]
    assert schema["required"] == ["variants"]
    assert schema["properties"]["variants"] == {
        "type": "array", "items": {"type": "string"}, "minItems": 3, "maxItems": 3}


@pytest.mark.parametrize(
    ("content", "texts"),
    [
        ('{"variants": ["One.", "Two.", "Three."]}', ["One.", "Two.", "Three."]),
        ('```json\n{"variants": ["Fenced.", "Too."]}\n```', ["Fenced.", "Too."]),
        ('["Bare.", "List.", "Here."]', ["Bare.", "List.", "Here."]),
        ('{"items": ["Another key.", "Still."]}', ["Another key.", "Still."]),
        ('[{"text": "Objects."}, {"text": "Too."}]', ["Objects.", "Too."]),
        ('{"variants": ["One.", "Two."]}', ["One.", "Two."]),  # fewer: the usable ones
        ('{"variants": [" A. ", "", "  ", 7, "B."]}', ["A.", "B."]),  # blanks are unusable
        ('{"variants": ["1", "2", "3", "4", "5"]}', ["1", "2", "3"]),  # never more than N
        ('{"variants": ["Whole.", "Also whole.", "cut sh', ["Whole.", "Also whole."]),
        ("Plain text from a server that ignored the schema.", []),
        ('{"text": "One text, not a list."}', []),
        ("[not json", []),
        ("", []),
        (None, []),
    ],
)
def test_the_list_reader_keeps_at_most_n_usable_texts(
    content: str | None, texts: list[str]
) -> None:
    assert wire.read_variants(content, 3) == texts


def slot(job: int | None, instruction: str, seed: int) -> WriteRequest:
    return WriteRequest(Image.new("RGB", (2, 2)), "a cup", instruction, "", seed, job=job)


def test_without_structured_output_each_variant_is_its_own_request() -> None:
    requests = [slot(0, "playful", 0), slot(0, "playful", 1), slot(1, "playful", 2)]
    assert plan(requests, structured=False) == [(0,), (1,), (2,)]


def test_with_structured_output_one_request_per_job_and_instruction() -> None:
    """Job 0: two styles of two variants, the second style's interleaved; job 1 has the
    same instruction as job 0's first style but is another job; a request with no job
    is never grouped."""
    requests = [
        slot(0, "playful/x", 0), slot(0, "luxury/x", 1), slot(0, "playful/x", 2),
        slot(0, "luxury/x", 3), slot(1, "playful/x", 4), slot(1, "playful/x", 5),
        slot(None, "playful/x", 6), slot(None, "playful/x", 7), slot(1, "playful/y", 8),
    ]  # fmt: skip
    assert plan(requests, structured=True) == [(0, 2), (1, 3), (4, 5), (6,), (7,), (8,)]


@pytest.mark.parametrize("role", ["captioner", "copywriter"])
def test_a_served_role_needs_a_server_and_a_model(role: str) -> None:
    upper = role.upper()
    with pytest.raises(ValueError, match=f"{upper}_BASE_URL"):
        WorkerSettings(**{f"{role}_backend": "served"})
    if role == "copywriter":
        with pytest.raises(ValueError, match="COPYWRITER_MODEL"):
            WorkerSettings(copywriter_backend="served", copywriter_base_url="http://h/v1")
    ok = WorkerSettings(**{f"{role}_backend": "served", f"{role}_base_url": "http://h/v1",
                           f"{role}_model": "m"})
    assert getattr(ok, f"{role}_backend") == "served"
