"""evalkit.execution.send: one request through reuse → cache → budget → limits → retries → entry.

Against the loopback fake (`fake_openai`), over real HTTP: what the server saw is the proof
that a cached or reused answer sends nothing, that a refused request never leaves, and that a
429 is retried into one answered entry.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar, cast

import pytest

from evalkit.execution.budget import Budget, BudgetReached
from evalkit.execution.limits import ModelLimits
from evalkit.execution.send import Sender, SendSettings, Sent
from evalkit.models.targets import resolve
from evalkit.planning.plan import Request
from evalkit.planning.planner import plan
from evalkit.providers import Provider
from evalkit.providers.openai import OpenAIProvider, make_transport
from evalkit.records.cache import Cache
from evalkit.records.encoding import decode
from evalkit.records.entries import RequestEntry
from evalkit.suite.endpoints import ModelSpec
from evalkit.suite.spec import Suite
from fake_openai import FakeOpenAI

T = TypeVar("T")
FAST = SendSettings(max_retries=3, retry_initial_s=0.01)


def request(server: FakeOpenAI, answer: str = "hello") -> Request:
    suite = Suite.model_validate(
        {"prompt": "{{ a }}", "cases": [{"id": "c", "vars": {"a": answer}}]}
    )
    target = resolve(ModelSpec(id="openai/gpt-3.5-turbo"), {}, {"OPENAI_BASE_URL": server.url})
    (only,) = plan(suite, target)
    return only


def with_provider(server: FakeOpenAI, go: Callable[[Provider], Awaitable[T]]) -> T:
    async def main() -> T:
        transport = make_transport(4)
        try:
            return await go(OpenAIProvider(transport, server.url, "sk-test", 5.0))
        finally:
            await transport.aclose()

    return asyncio.run(main())


def send(server: FakeOpenAI, sender: Sender, req: Request) -> Sent:
    return with_provider(server, lambda p: sender.send(req, p, ModelLimits(2)))


def test_an_answer_is_an_entry_and_a_cache_row_of_the_same_choice_texts(
    openai: FakeOpenAI, tmp_path: Path
) -> None:
    cache = Cache(tmp_path)
    req = request(openai)
    sent = send(openai, Sender(FAST, cache), req)
    assert openai.count() == 1
    entry = sent.entry
    assert entry["key"] == req.key and entry["attempts"] == 1 and entry["cached"] is False
    assert entry.get("error_type") is None and entry["choices"][0]["text"] == "echo: hello"
    cache.flush()
    hit = cache.get(req.key)
    assert hit is not None and hit.choices == sent.choices  # the row holds the texts as encoded
    assert hit.answer["choices"] == entry["choices"]
    cache.close()


def test_a_cache_hit_sends_nothing_and_costs_nothing(openai: FakeOpenAI, tmp_path: Path) -> None:
    req = request(openai)
    first = Cache(tmp_path)
    send(openai, Sender(FAST, first), req)
    first.close()
    openai.reset()
    again = Cache(tmp_path)
    sent = send(openai, Sender(FAST, again, Budget(0.0)), req)  # no budget needed: it is free
    again.close()
    assert openai.count() == 0
    assert sent.entry["cached"] is True and sent.entry["cost_usd"] == 0.0
    assert sent.entry["attempts"] == 0 and sent.choices is not None


def test_would_send_is_false_for_a_cached_or_reused_request_and_true_otherwise(
    openai: FakeOpenAI, tmp_path: Path
) -> None:
    cached, fresh = request(openai), request(openai, "something else")
    first = Cache(tmp_path)
    send(openai, Sender(FAST, first), cached)
    first.close()
    again = Cache(tmp_path)
    assert again.holds(cached.key) and not again.holds(fresh.key)
    assert not Sender(FAST, again).would_send(cached)
    assert Sender(FAST, again).would_send(fresh)
    assert Sender(FAST, Cache(tmp_path, read=False)).would_send(cached)  # --refresh sends
    reused = Sender(FAST, None, reusable={fresh.key: cast(RequestEntry, {"key": fresh.key})})
    assert not reused.would_send(fresh)
    again.close()


def test_a_request_past_the_ceiling_is_refused_and_never_sent(openai: FakeOpenAI) -> None:
    budget = Budget(1e-9)
    with pytest.raises(BudgetReached):
        send(openai, Sender(FAST, None, budget), request(openai))
    assert openai.count() == 0 and budget.exhausted and budget.reserved == 0.0


def test_a_429_is_retried_into_one_answered_entry(openai: FakeOpenAI) -> None:
    openai.script([{"status": 429, "retry_after": "0.01"}])
    budget = Budget(10.0)
    sent = send(openai, Sender(FAST, None, budget), request(openai))
    assert openai.count() == 2
    assert sent.entry.get("error_type") is None and sent.entry["attempts"] == 2
    assert budget.reserved == 0.0 and budget.spent == pytest.approx(sent.entry["cost_usd"])


def test_retries_run_out_into_an_error_entry(openai: FakeOpenAI) -> None:
    openai.script([{"status": 503}] * 3)
    sent = send(openai, Sender(FAST), request(openai))
    assert openai.count() == 3 and sent.entry["attempts"] == 3
    assert sent.entry["error_type"] == "server_error" and "choices" not in sent.entry


def test_a_prior_entry_is_reused_and_nothing_is_sent(openai: FakeOpenAI) -> None:
    req = request(openai)
    prior: RequestEntry = {
        "key": req.key,
        "case_id": "c",
        "variant": "",
        "model": req.target.label,
        "sample": 0,
        "vars": req.case.vars,
        "must_pass": req.case.must_pass,
        "choices": [{"index": 0, "text": "from before", "checks": {}}],
    }
    sent = send(openai, Sender(FAST, reusable={req.key: prior}), req)
    assert openai.count() == 0
    assert sent.reused is prior and sent.entry == prior
    assert sent.entry["choices"][0] is not prior["choices"][0]  # rescoring leaves prior alone


def test_an_old_cache_row_is_still_an_answer(openai: FakeOpenAI, tmp_path: Path) -> None:
    """Rows written by `json.dumps(answer)` (spaces after separators) are read, and their
    choices are encoded again for the journal."""
    import json

    req = request(openai)
    cache = Cache(tmp_path)
    old = {"choices": [{"index": 0, "text": "old", "finish_reason": "stop", "logprobs": None}]}
    cache.put(req, json.dumps(old))
    cache.flush()
    hit = cache.get(req.key)
    cache.close()
    assert hit is not None and hit.choices is None and hit.answer["choices"][0]["text"] == "old"
    assert decode(json.dumps(old)) == (old, None)
