"""Journal entries: their types and the one constructor of each kind.

Every executor (the online sender today, the Batch API next) builds its entries here, so the
cache, `--resume`, the DataFrame and `cache explain` read one shape and never learn which
executor ran. Entries stay plain dicts (TypedDicts) because they are JSON lines; `fold.py`
reads a journal of them back, `encoding.py` writes each as one line.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, NotRequired, TypedDict, cast

from evalkit.models.catalog import believable
from evalkit.providers import Completion, ProviderError

if TYPE_CHECKING:
    from evalkit.planning.plan import Request
    from evalkit.scoring.checks import Verdict

Slot = tuple[str, str, str]  # case id, variant, model label
SampleKey = tuple[str, str, str, int]  # a slot and a request's sample number
VerdictKey = tuple[str, str, str, int, str]  # a slot, the graded sample and the check's name

# json.dumps(v, separators=(",", ":"), default=str), its encoder built once: ASCII, one line
_JSON = json.JSONEncoder(separators=(",", ":"), default=str)
_DECODER = json.JSONDecoder()
_ROW_HEAD = '{"choices":['  # how every cache row this module writes starts
_WIRE_KEYS = frozenset({"model", "messages", "prompt", "suffix", "input", "instructions"})


class ChoiceRecord(TypedDict, total=False):
    index: int
    text: str | None
    finish_reason: str | None
    logprobs: Any
    tool_calls: list[dict[str, Any]]
    checks: dict[str, list[Any]]  # {name: [passed, score, reason]}, added by scoring


class Answer(TypedDict):
    """What the cache keeps of an answer (never an error)."""

    choices: list[ChoiceRecord]
    prompt_tokens: int | None
    completion_tokens: int | None
    system_fingerprint: str | None
    latency_s: float | None
    ttft_s: float | None
    cached_tokens: NotRequired[int | None]  # absent in answers cached by earlier releases
    reasoning_tokens: NotRequired[int | None]


class RequestEntry(TypedDict, total=False):
    """The journal line of one finished request (no `kind`)."""

    key: str
    case_id: str
    variant: str
    model: str
    model_id: str
    endpoint: str
    sample: int
    n: int
    vars: dict[str, Any]
    must_pass: bool
    prompt: Any  # the messages (chat) or the prompt text
    suffix: str | None
    params: dict[str, Any]
    max_tokens: int | None
    seed: int | None
    started_at: str
    attempts: int
    cached: bool
    batch_id: str
    error_type: str
    error: str
    status: int | None
    choices: list[ChoiceRecord]
    prompt_tokens: int | None
    completion_tokens: int | None
    cached_tokens: int | None  # of prompt_tokens: read from the prompt cache, at its price
    reasoning_tokens: int | None  # of completion_tokens: hidden reasoning, billed as output
    system_fingerprint: str | None
    latency_s: float | None
    ttft_s: float | None
    cost_usd: float | None
    charged_usd: float  # what --max-cost counted when the usage was unknown
    round: int  # set by the dispatcher: the resampling round
    check_meta: dict[str, list[Any]]  # set by the dispatcher: {name: [weight, required]}


class JudgeEntry(RequestEntry, total=False):
    """A judge's or a moderation call's request entry, with the verdict it gave a sample."""

    kind: Literal["judge"]
    judge_model: str
    check: str
    passed: bool
    score: float
    reason: str | None


class SelectEntry(TypedDict, total=False):
    """Which samples of a slot the suite's select policy kept."""

    kind: Literal["select"]
    case_id: str
    variant: str
    model: str
    policy: str
    samples: list[int]
    selected: list[int]
    rounds: int
    max_tokens: int | None


class BatchEntry(TypedDict, total=False):
    """A Batch API batch file: `uploaded` (its keys in line order), `submitted` (its batch id),
    `ended` (its last status and counts); journaled before evalkit waits on it."""

    kind: Literal["batch"]
    event: Literal["uploaded", "submitted", "ended"]
    file_id: str
    model: str
    endpoint: str
    keys: list[str]
    batch_id: str
    status: str
    counts: dict[str, Any]


class RetireEntry(TypedDict):
    """Slots whose earlier entries no longer count (the suite changed before a resume)."""

    kind: Literal["retire"]
    slots: list[list[str]]


@dataclass(frozen=True, slots=True)
class Provenance:
    """How an entry's outcome was had, whichever executor had it."""

    started_at: str
    attempts: int
    cached: bool = False
    batch_id: str | None = None  # answered by this Batch API batch (at its price)


# ----------------------------------------------------------------------------- constructors


def answer_of(completion: Completion) -> Answer:
    """What the cache keeps of a server's answer."""
    return {
        "choices": [
            {
                "index": c.index,
                "text": c.text,
                "finish_reason": c.finish_reason,
                "logprobs": c.logprobs,
                **({"tool_calls": c.tool_calls} if c.tool_calls else {}),
            }
            for c in completion.choices
        ],
        "prompt_tokens": completion.prompt_tokens,
        "completion_tokens": completion.completion_tokens,
        "system_fingerprint": completion.system_fingerprint,
        "latency_s": completion.latency_s,
        "ttft_s": completion.ttft_s,
        "cached_tokens": completion.cached_tokens,
        "reasoning_tokens": completion.reasoning_tokens,
    }


def request_entry(
    request: Request, outcome: Answer | ProviderError, provenance: Provenance
) -> RequestEntry:
    """The journal line of one finished request: its answer (choices copied) or its error.

    Usage a server reported that cannot be true for the model is unknown
    (`ModelInfo.usage`); a cache hit costs nothing and keeps its original usage.
    """
    target = request.target
    body = request.body
    entry: RequestEntry = {
        "key": request.key,
        "case_id": request.case.key,
        "variant": request.variant,
        "model": target.label,
        "model_id": target.id,
        "endpoint": request.endpoint,
        "sample": request.sample,
        "n": request.choices,
        "vars": request.case.vars,
        "must_pass": request.case.must_pass,
        "prompt": request.prompt,
        "suffix": body.get("suffix"),
        "params": {k: v for k, v in body.items() if k not in _WIRE_KEYS},
        "max_tokens": request.max_tokens,
        "seed": body.get("seed"),
        "started_at": provenance.started_at,
        "attempts": provenance.attempts,
        "cached": provenance.cached,
    }
    if provenance.batch_id is not None:
        entry["batch_id"] = provenance.batch_id
    if isinstance(outcome, ProviderError):
        entry["error_type"] = outcome.error_type
        entry["error"] = outcome.message
        entry["status"] = outcome.status
        return entry
    pt, ct = target.info.usage(
        outcome.get("prompt_tokens"), outcome.get("completion_tokens"), request.choices
    )
    entry["prompt_tokens"] = pt
    entry["completion_tokens"] = ct
    cached = _part(outcome.get("cached_tokens"), pt)  # a part cannot exceed its whole
    entry["cached_tokens"] = cached
    entry["reasoning_tokens"] = _part(outcome.get("reasoning_tokens"), ct)
    entry["system_fingerprint"] = outcome.get("system_fingerprint")
    batch = provenance.batch_id is not None
    entry["latency_s"] = None if batch else outcome.get("latency_s")  # not measured per line
    entry["ttft_s"] = None if batch else outcome.get("ttft_s")
    entry["choices"] = [cast(ChoiceRecord, dict(c)) for c in outcome.get("choices") or []]
    entry["cost_usd"] = 0.0 if provenance.cached else target.info.usage_cost(pt, ct, cached, batch)
    return entry


def _part(count: object, whole: int | None) -> int | None:
    return None if whole is None else believable(count, whole)


def judge_entry(
    result: RequestEntry, slot: Slot, judge_model: str, sample: int, check: str, verdict: Verdict
) -> JudgeEntry:
    """The grading call's entry, linked to the sample (of `slot`) it graded."""
    entry = cast(JudgeEntry, dict(result))
    entry["kind"] = "judge"
    entry["case_id"], entry["variant"], entry["model"] = slot
    entry["judge_model"] = judge_model
    entry["sample"] = sample
    entry["check"] = check
    entry["passed"] = verdict.passed
    entry["score"] = verdict.score
    entry["reason"] = verdict.reason
    return entry


def select_entry(
    slot: Slot,
    policy: str,
    samples: list[int],
    selected: list[int],
    rounds: int,
    max_tokens: int | None,
) -> SelectEntry:
    return {
        "kind": "select",
        "case_id": slot[0],
        "variant": slot[1],
        "model": slot[2],
        "policy": policy,
        "samples": samples,
        "selected": selected,
        "rounds": rounds,
        "max_tokens": max_tokens,
    }


def batch_entry(event: str, file_id: str, **fields: Any) -> BatchEntry:
    return cast(BatchEntry, {"kind": "batch", "event": event, "file_id": file_id, **fields})


def retire_entry(slots: Iterable[Slot]) -> RetireEntry:
    return {"kind": "retire", "slots": [list(s) for s in slots]}
