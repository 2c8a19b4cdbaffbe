"""The served backend over real HTTP, against a loopback server that answers what
``transformers serve`` never does: a reported revision, 429 with Retry-After, 5xx, a
list of variants by JSON schema; and the bound on requests in flight, the bearer key,
one request per variant without structured output and one per image and style with it
(the missing ones of a short or plain answer asked for one by one)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest
from PIL import Image

from schemas.errors import ErrorCode, PermanentError, TransientError, UnavailableError
from tests.support.servers import Loopback, send
from worker.models import served_protocol as wire
from worker.models.base import Generation, Text, WriteRequest
from worker.models.served import (
    LIST,
    LIST_TOKENS_PER_ITEM,
    PER_VARIANT,
    ServedVLM,
    ServedWriter,
    Server,
)


@dataclass
class OpenAIish:
    """Answers /v1/models with ``models`` and each chat completion with ``status``
    (200: the request's last user text back), after ``delay_s``. A request for a list
    by schema gets ``listed`` texts more than asked (negative: fewer), each
    ``"{seed}.{k}"``, or plain text where ``plain_lists``."""

    models: list[dict[str, Any]] = field(default_factory=lambda: [{"id": "m"}])
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    bodies: list[dict[str, Any]] = field(default_factory=list)
    auth: list[str] = field(default_factory=list)
    models_delay_s: float = 0.0
    listed: int = 0
    plain_lists: bool = False
    running: int = 0
    most_running: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handler(self) -> type[BaseHTTPRequestHandler]:
        state = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                time.sleep(state.models_delay_s)
                send(self, json.dumps({"object": "list", "data": state.models}).encode(),
                     content_type="application/json")

            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                with state.lock:
                    state.bodies.append(body)
                    state.auth.append(self.headers.get("authorization", ""))
                    state.running += 1
                    state.most_running = max(state.most_running, state.running)
                time.sleep(state.delay_s)
                with state.lock:
                    state.running -= 1
                if state.status != 200:
                    send(self, b'{"error": {"message": "busy"}}', status=state.status,
                         content_type="application/json", headers=state.headers)
                    return
                text = body["messages"][-1]["content"]
                text = text if isinstance(text, str) else text[-1]["text"]
                schema = body.get("response_format", {}).get("json_schema", {})
                if schema.get("name") == "ad_copy_variants":
                    n = schema["schema"]["properties"]["variants"]["maxItems"] + state.listed
                    listed = [f"{body['seed']}.{k}" for k in range(n)]
                    text = "Sure, here you go." if state.plain_lists else json.dumps(
                        {"variants": listed})
                answer = {"choices": [{"index": 0, "message": {"role": "assistant",
                                                               "content": text}}]}
                send(self, json.dumps(answer).encode(), content_type="application/json")

            def log_message(self, *_: object) -> None:
                return

        return Handler


@pytest.fixture
def server() -> Iterator[tuple[OpenAIish, str]]:
    state = OpenAIish()
    loop = Loopback(state.handler())
    yield state, f"http://127.0.0.1:{loop.port}/v1"
    for model in MADE:
        model.close()
    MADE.clear()
    loop.stop()


MADE: list[ServedWriter | ServedVLM] = []  # closed after each test


def requests(n: int) -> list[WriteRequest]:
    image = Image.new("RGB", (8, 8), (1, 2, 3))
    return [WriteRequest(image, "a cup", f"write {i}", "", i) for i in range(n)]


def writer(base_url: str, **extra: Any) -> ServedWriter:
    MADE.append(ServedWriter(Server(base_url=base_url, model="m", **extra),
                             Generation(max_new_tokens=5)))
    return MADE[-1]  # type: ignore[return-value]


def test_a_reported_revision_other_than_the_configured_one_is_refused(
    server: tuple[OpenAIish, str],
) -> None:
    state, url = server
    state.models = [{"id": "m", "revision": "abc123"}]
    with pytest.raises(PermanentError) as caught:
        writer(url, revision="def456").check_served()
    assert caught.value.code == ErrorCode.model_not_served
    assert "revision abc123, not def456" in caught.value.message
    writer(url, revision="abc123").check_served()  # the same revision: served


def test_the_model_check_at_start_has_the_starts_deadline_not_a_requests(
    server: tuple[OpenAIish, str],
) -> None:
    state, url = server
    state.models_delay_s = 0.2
    writer(url, timeout_s=0.05).check_served()  # a /v1/models slower than 50 ms: served
    state.delay_s = 0.2
    (late,) = writer(url, timeout_s=0.05).write(requests(1))
    assert isinstance(late, TransientError)
    assert late.code == ErrorCode.model_server_timeout


def test_a_429_carries_retry_after_and_a_5xx_is_unavailable(
    server: tuple[OpenAIish, str],
) -> None:
    state, url = server
    state.status, state.headers = 429, {"Retry-After": "3"}
    (busy,) = writer(url).write(requests(1))
    assert isinstance(busy, UnavailableError)
    assert (busy.code, busy.retry_after_s) == (ErrorCode.model_server_unavailable, 3.0)
    state.status, state.headers = 503, {}
    (down,) = writer(url).write(requests(1))
    assert isinstance(down, UnavailableError)
    assert "HTTP 503: busy" in down.message


def test_requests_are_concurrent_up_to_the_bound_one_per_variant_with_the_key(
    server: tuple[OpenAIish, str],
) -> None:
    state, url = server
    state.delay_s = 0.2
    texts = writer(url, max_in_flight=2, api_key="sk-test").write(requests(6))
    assert texts == [f"write {i}" for i in range(6)]  # in order
    assert state.most_running == 2
    assert set(state.auth) == {"Bearer sk-test"}
    assert sorted(b["seed"] for b in state.bodies) == list(range(6))  # each its own seed
    assert all("n" not in b and b["max_tokens"] == 5 for b in state.bodies)


def test_a_vlm_caption_sends_the_image_inline_and_greedy(server: tuple[OpenAIish, str]) -> None:
    state, url = server
    vlm = ServedVLM(Server(base_url=url, model="m"), Generation(max_new_tokens=5))
    MADE.append(vlm)
    (caption,) = vlm.caption([Image.new("RGB", (8, 8), (1, 2, 3))])
    assert caption == "Describe this image in one factual sentence."
    (body,) = state.bodies
    assert body["temperature"] == 0.0
    assert "seed" not in body
    part = body["messages"][0]["content"][0]
    assert part["image_url"]["url"].startswith("data:image/jpeg;base64,")


def variants_of(jobs: int, styles: int, n: int) -> list[WriteRequest]:
    """Each job's image (one object per job), its styles' instructions, n variants each
    with its own seed; ordered as the pipeline orders slots."""
    images = [Image.new("RGB", (8, 8), (j, 2, 3)) for j in range(jobs)]
    return [
        WriteRequest(images[j], "a cup", f"style {s}", "", seed=100 * j + 10 * s + k, job=j)
        for j in range(jobs) for s in range(styles) for k in range(n)
    ]  # fmt: skip


def vlm(base_url: str, **extra: Any) -> ServedVLM:
    made = ServedVLM(Server(base_url=base_url, model="m", **extra), Generation(max_new_tokens=5))
    MADE.append(made)
    return made


def modes(texts: list[Text]) -> list[str]:
    return [getattr(t, "mode", type(t).__name__) for t in texts]


def test_with_structured_output_each_image_and_style_is_one_request_for_a_list(
    server: tuple[OpenAIish, str],
) -> None:
    state, url = server
    texts = vlm(url, structured=True).write(variants_of(jobs=2, styles=2, n=3))
    assert len(state.bodies) == 4  # 2 images x 2 styles, not 12 variants
    for body in state.bodies:
        assert body["response_format"] == wire.variants_format(3)
        assert body["max_tokens"] == 3 * (5 + LIST_TOKENS_PER_ITEM)
        assert body["messages"][0]["content"][0]["type"] == "image_url"
        assert "write 3 different versions" in body["messages"][0]["content"][1]["text"]
    # Each group's texts in its slots' order, from the request seeded by its first slot.
    assert texts == [f"{100 * j + 10 * s}.{k}" for j in range(2) for s in range(2)
                     for k in range(3)]
    assert set(modes(texts)) == {LIST}


def test_a_short_list_is_completed_one_variant_at_a_time_and_never_exceeds_n(
    server: tuple[OpenAIish, str],
) -> None:
    state, url = server
    state.listed = -1  # two of three
    texts = writer(url, structured=True).write(variants_of(jobs=1, styles=2, n=3))
    assert len(state.bodies) == 2 + 2  # a list per style, then its one missing variant
    assert texts[:2] == ["0.0", "0.1"]
    assert modes(texts) == [LIST, LIST, PER_VARIANT, LIST, LIST, PER_VARIANT]
    alone = [b for b in state.bodies if b["response_format"] == wire.TEXT_SCHEMA]
    assert sorted(b["seed"] for b in alone) == [2, 12]  # each missing slot's own seed
    state.bodies.clear()
    state.listed = 4  # seven for three
    texts = writer(url, structured=True).write(variants_of(jobs=1, styles=1, n=3))
    assert (len(state.bodies), texts) == (1, ["0.0", "0.1", "0.2"])


def test_a_server_that_ignores_the_schema_gets_one_request_per_variant_after_the_list(
    server: tuple[OpenAIish, str],
) -> None:
    state, url = server
    state.plain_lists = True
    texts = writer(url, structured=True).write(variants_of(jobs=2, styles=1, n=2))
    assert len(state.bodies) == 2 + 4
    assert set(modes(texts)) == {PER_VARIANT}
    assert texts == ["style 0"] * 4  # each answered on its own (the server echoes)


def test_without_structured_output_no_list_is_asked_for(
    server: tuple[OpenAIish, str],
) -> None:
    state, url = server
    texts = writer(url).write(variants_of(jobs=1, styles=2, n=2))
    assert len(state.bodies) == 4
    assert all("response_format" not in b for b in state.bodies)
    assert set(modes(texts)) == {PER_VARIANT}


def test_a_failed_list_request_fails_each_of_its_variants(
    server: tuple[OpenAIish, str],
) -> None:
    state, url = server
    state.status = 503
    texts = writer(url, structured=True).write(variants_of(jobs=1, styles=1, n=3))
    assert len(state.bodies) == 1  # not retried here, nor asked for one by one
    assert all(isinstance(t, UnavailableError) for t in texts)
