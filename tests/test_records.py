"""evalkit.records.entries: the entries a run journals, the one fold that reads them back, and the
answer serialised once for the cache row and the journal line.

Entries are built with `request_entry` from planned requests, as the sender builds them;
lines written by older evalkit releases (no `variant`, no `round`, costs as integers) are
written out by hand.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from evalkit.models.targets import resolve
from evalkit.planning.plan import Request
from evalkit.planning.planner import plan
from evalkit.providers import ProviderError
from evalkit.records.encoding import decode, encode, journal_line
from evalkit.records.entries import Answer, Provenance, request_entry, retire_entry, select_entry
from evalkit.records.fold import fold, recorded_spent
from evalkit.suite.endpoints import ModelSpec
from evalkit.suite.spec import Suite

STARTED = "2026-01-02T03:04:05.123+00:00"
MODEL = "openai/gpt-4o-mini"


def request(case: str = "a", sample: int = 0, prompt: str = "Q {{ x }}") -> Request:
    suite = Suite.model_validate({"prompt": prompt, "cases": [{"id": case, "vars": {"x": case}}]})
    target = resolve(ModelSpec(id=MODEL), {}, {"OPENAI_BASE_URL": "http://t/v1"})
    return list(plan(suite, target, samples=sample + 1))[sample]


def answer(text: str = "out", prompt_tokens: int = 10, completion_tokens: int = 7) -> Answer:
    return {
        "choices": [{"index": 0, "text": text, "finish_reason": "stop", "logprobs": None}],
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "system_fingerprint": "fp",
        "latency_s": 0.5,
        "ttft_s": None,
    }


def entry(case: str = "a", sample: int = 0, text: str = "out", **usage: int) -> dict[str, Any]:
    made = request_entry(request(case, sample), answer(text, **usage), Provenance(STARTED, 1))
    return dict(made)


def judged(case: str = "a", sample: int = 0, check: str = "judge", **more: Any) -> dict[str, Any]:
    return {
        "kind": "judge",
        "key": f"j-{case}-{sample}-{check}",
        "case_id": case,
        "variant": "",
        "model": MODEL,
        "sample": sample,
        "check": check,
        "passed": True,
        "score": 1.0,
        "reason": "",
        "cost_usd": 0.002,
        **more,
    }


# ----------------------------------------------------------------------------- constructors


def test_a_request_entry_holds_the_request_and_its_answer_or_its_error() -> None:
    req = request()
    made = request_entry(req, answer(), Provenance(STARTED, 2))
    assert (made["key"], made["case_id"], made["model"], made["sample"]) == (req.key, "a", MODEL, 0)
    assert made["attempts"] == 2 and made["started_at"] == STARTED and made["cached"] is False
    assert made["prompt"] == [{"role": "user", "content": "Q a"}] and made["cost_usd"]
    error = ProviderError("rate_limit", "slow down", status=429)
    failed = request_entry(req, error, Provenance(STARTED, 8))
    assert (failed["error_type"], failed["error"], failed["status"]) == (
        "rate_limit",
        "slow down",
        429,
    )
    assert "choices" not in failed and "cost_usd" not in failed


def test_a_cached_entry_costs_nothing_and_keeps_its_usage() -> None:
    made = request_entry(request(), answer(), Provenance(STARTED, 0, cached=True))
    assert made["cost_usd"] == 0.0 and made["prompt_tokens"] == 10 and made["cached"] is True


def test_usage_no_model_could_have_used_is_unknown_when_the_entry_is_built() -> None:
    made = request_entry(request(), answer(prompt_tokens=-5), Provenance(STARTED, 1))
    assert made["prompt_tokens"] is None and made["cost_usd"] is None


def test_the_entry_owns_its_choices() -> None:
    given = answer()
    made = request_entry(request(), given, Provenance(STARTED, 1))
    made["choices"][0]["checks"] = {"x": [True, 1.0, ""]}
    assert "checks" not in given["choices"][0]  # scoring never writes into the cached answer


# ----------------------------------------------------------------------------- fold


def test_a_later_entry_for_the_same_sample_replaces_the_earlier() -> None:
    first, again = entry(text="first"), entry(text="again")
    folded = fold([first, entry(sample=1), again])
    assert [e["choices"][0]["text"] for e in folded.requests.values()] == ["again", "out"]
    assert folded.prior.requests[again["key"]] is again


def test_a_failed_request_is_a_row_but_not_reused_nor_charged() -> None:
    failed = request_entry(request(), ProviderError("timeout", "slow"), Provenance(STARTED, 8))
    folded = fold([failed])
    assert list(folded.requests.values()) == [failed]
    assert folded.prior.requests == {} and folded.first_round == {} and folded.spent == 0.0


def test_retire_drops_what_came_before_for_its_slots_but_not_what_was_paid() -> None:
    kept, gone = entry("a"), entry("b")
    selection = select_entry(("b", "", MODEL), "first_stop", [0], [0], 1, None)
    before = [kept, gone, selection, judged("b")]
    folded = fold([*before, retire_entry([("b", "", MODEL)])])
    assert {k[0] for k in folded.requests} == {"a"}
    assert folded.selections == {} and folded.verdicts == {}
    assert set(folded.prior.requests) == {kept["key"]} and folded.prior.judged == {}
    assert set(folded.first_round) == {("a", "", MODEL)}
    assert folded.spent == pytest.approx(kept["cost_usd"] + gone["cost_usd"] + 0.002)
    again = fold([*before, retire_entry([("b", "", MODEL)]), entry("b", text="new")])
    assert again.requests[("b", "", MODEL, 0)]["choices"][0]["text"] == "new"


def test_selections_and_verdicts_are_kept_per_slot_and_check() -> None:
    slot = ("a", "", MODEL)
    old = select_entry(slot, "first_stop", [0, 1], [1], 1, 16)
    new = select_entry(slot, "first_stop", [0, 1], [0], 1, 16)
    folded = fold([entry(), old, judged(check="j1", passed=False), new, judged(check="j2")])
    assert folded.selections == {slot: new}
    assert set(folded.verdicts) == {(*slot, 0, "j1"), (*slot, 0, "j2")}
    assert set(folded.prior.judged) == {"j-a-0-j1", "j-a-0-j2"}


def test_a_reused_answer_journaled_twice_is_charged_once() -> None:
    first = entry()
    rescored = {**first, "check_meta": {"x": [1.0, True]}}
    unknown = {**entry("b"), "cost_usd": None, "charged_usd": 0.5}  # usage unknown: the most
    folded = fold([first, rescored, unknown])
    assert folded.spent == pytest.approx(first["cost_usd"] + 0.5)


@pytest.mark.parametrize(
    ("count", "cost"),
    [(-1, -0.5), (1.5, float("nan")), (10**12, float("inf")), (True, True), ("7", "0.1")],
)
def test_counts_and_costs_that_cannot_be_true_are_unknown(count: Any, cost: Any) -> None:
    request_line = {**entry(), "prompt_tokens": count, "cost_usd": cost}
    judge_line = judged(cost_usd=cost, charged_usd=cost)
    folded = fold([request_line, judge_line])
    (read,) = folded.requests.values()
    assert read["prompt_tokens"] is None and read["cost_usd"] is None
    assert read["completion_tokens"] == 7  # the believable part stays
    (verdict,) = folded.verdicts.values()
    assert verdict["cost_usd"] is None and verdict["charged_usd"] is None
    assert folded.spent == 0.0  # what cannot be a cost was not paid


def test_lines_an_older_evalkit_wrote_still_fold() -> None:
    old = {  # no variant, round, n, model_id, attempts or check_meta; an integer cost
        "key": "k0",
        "case_id": "a",
        "model": MODEL,
        "sample": 0,
        "choices": [{"index": 0, "text": "hi"}],
        "prompt_tokens": 3,
        "completion_tokens": 2,
        "cost_usd": 1,
    }
    selection = {"kind": "select", "case_id": "a", "model": MODEL, "samples": [0], "selected": [0]}
    folded = fold([old, selection, {"kind": "retire", "slots": [["b", "", MODEL]]}])
    assert folded.requests[("a", "", MODEL, 0)] is old and old["cost_usd"] == 1.0
    assert folded.first_round == {("a", "", MODEL): {"k0"}}
    assert folded.selections[("a", "", MODEL)] is selection and folded.spent == 1.0


def test_what_a_finished_session_recorded_spending() -> None:
    assert recorded_spent({"counts": {"spent_usd": 0.25}}) == 0.25
    assert recorded_spent({"counts": {"spent_usd": -3}}) == 0.0
    assert recorded_spent({}) == 0.0 and recorded_spent({"counts": "x"}) == 0.0


# ----------------------------------------------------------------------------- encoding


def test_a_journal_line_splices_the_encoded_choices_with_their_checks() -> None:
    made = request_entry(request(), answer(text='say "hi" 😀'), Provenance(STARTED, 1))
    texts = encode(answer(text='say "hi" 😀')).choices
    made["choices"][0]["checks"] = {"contains": [False, 0.0, "missing"]}
    made["round"], made["check_meta"] = 0, {"contains": [1.0, True]}
    line = journal_line(made, texts)
    assert line.isascii() and "\n" not in line
    assert json.loads(line) == json.loads(journal_line(made)) == json.loads(json.dumps(made))


def test_a_line_falls_back_to_encoding_when_the_texts_do_not_match() -> None:
    made = dict(request_entry(request(), answer(), Provenance(STARTED, 1)))
    assert journal_line(made, ["{}", "{}"]) == journal_line(made)  # two texts, one choice
    error = request_entry(request(), ProviderError("timeout", "t"), Provenance(STARTED, 1))
    assert json.loads(journal_line(error, [])) == error


def test_a_cache_row_is_built_from_the_choices_and_read_back_with_them() -> None:
    encoded = encode(answer(text="naïve\nline"))
    parsed, texts = decode(encoded.row())
    assert parsed == encoded.answer and texts == encoded.choices
    assert json.loads(encoded.row()) == encoded.answer


@pytest.mark.parametrize(
    "row",
    [
        json.dumps(answer()),  # as earlier releases wrote it
        json.dumps(answer(), separators=(",", ":"), indent=1),  # by hand, over several lines
        json.dumps({"choices": [{"index": 0, "checks": {}}]}, separators=(",", ":")),
        json.dumps(answer(), separators=(",", ":"), ensure_ascii=False).replace("out", "é"),
    ],
)
def test_a_row_evalkit_did_not_write_this_way_is_parsed_and_its_choices_encoded_anew(
    row: str,
) -> None:
    parsed, texts = decode(row)
    assert parsed == json.loads(row) and texts is None


def test_a_row_that_is_not_json_is_an_error() -> None:
    with pytest.raises(ValueError):
        decode('{"choices":[{"index":0}],"prompt_tokens":')


def test_slots_a_resume_retires_are_dropped_so_they_run_afresh() -> None:
    """The retire line a resume writes goes before anything it reuses: an entry of a retired
    slot reused unchanged (not journaled again) would vanish from the DataFrame."""
    kept, gone = entry("a"), entry("b")
    folded = fold([kept, gone, select_entry(("b", "", MODEL), "all", [0], [0], 1, None)])
    folded.retire([("b", "", MODEL)])
    assert set(folded.prior.requests) == {kept["key"]} and folded.selections == {}
    assert set(folded.first_round) == {("a", "", MODEL)}
    assert folded.spent == pytest.approx(kept["cost_usd"] + gone["cost_usd"])
