"""The SDK honours the server's Retry-After on 429 and 503 (it used to retry 503 on its own short backoff
and fail a 429 at once)."""

from __future__ import annotations

import time

import httpx
import pytest

from onnxsmith import Client, TooManyRequests
from onnxsmith.client import MAX_RETRY_AFTER_S, _backoff


def _transport(answers: list[httpx.Response], calls: list[float]) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        calls.append(time.monotonic())
        return answers.pop(0) if answers else httpx.Response(200, json={"items": [], "next_cursor": None})

    return httpx.MockTransport(handle)


@pytest.mark.parametrize("status", [429, 503])
def test_a_busy_answer_is_retried_after_the_time_the_server_asks_for(status: int) -> None:
    calls: list[float] = []
    busy = httpx.Response(status, headers={"Retry-After": "1"}, json={"type": "x/busy", "detail": "wait"})
    with Client("http://onnxsmith.test", "k", transport=_transport([busy], calls), backoff=0.01) as c:
        assert c.list_models() == []
    assert len(calls) == 2
    assert calls[1] - calls[0] >= 0.95, "the retry did not wait for the server's Retry-After"


def test_after_the_retries_a_429_is_raised_as_too_many_requests() -> None:
    calls: list[float] = []
    busy = [httpx.Response(429, json={"type": "x/too-many-uploads", "detail": "slots"}) for _ in range(3)]
    with (
        Client("http://onnxsmith.test", "k", transport=_transport(busy, calls), retries=2, backoff=0.01) as c,
        pytest.raises(TooManyRequests) as err,
    ):
        c.list_models()
    assert err.value.type == "too-many-uploads" and len(calls) == 3


def test_retry_after_is_capped_and_garbage_is_ignored() -> None:
    def answer(value: str) -> httpx.Response:
        return httpx.Response(503, headers={"Retry-After": value})

    assert _backoff(0, 0.5, answer("100000")) == MAX_RETRY_AFTER_S
    assert _backoff(0, 0.5, answer("soon")) == 0.5
    assert _backoff(0, 0.5, answer("-3")) == 0.5
    assert _backoff(3, 0.5, answer("1")) == 4.0  # the backoff when it is longer than asked
