"""Journal entries: their types, the one constructor of each kind, and the one fold of a journal.

Every executor (the online sender today, the Batch API next) builds its entries here, so the
cache, `--resume`, the DataFrame and `cache explain` read one shape and never learn which
executor ran. Entries stay plain dicts (TypedDicts) because they are JSON lines.

`fold` reads a journal once, in order: a later entry for the same sample replaces an earlier
one, a `retire` line drops what came before for the slots it names, and token counts and
costs that cannot be true (see `catalog.believable`) become unknown. This is the only place
read-back counts are judged.

An answer is serialised once: each choice's JSON text is encoded when the answer arrives (or
kept as read from the cache row), the cache row is built from those texts, and the journal
line splices them in with each choice's check verdicts.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypedDict, cast

from evalkit.catalog import believable, believable_cost
from evalkit.providers import Completion, ProviderError

if TYPE_CHECKING:
    from evalkit.checks import Verdict
    from evalkit.plan import Request

Slot = tuple[str, str, str]  # case id, variant, model label
SampleKey = tuple[str, str, str, int]  # a slot and a request's sample number
VerdictKey = tuple[str, str, str, int, str]  # a slot, the graded sample and the check's name

# json.dumps(v, separators=(",", ":"), default=str), its encoder built once: ASCII, one line
_JSON = json.JSONEncoder(separators=(",", ":"), default=str)
_DECODER = json.JSONDecoder()
_ROW_HEAD = '{"choices":['  # how every cache row this module writes starts
_WIRE_KEYS = frozenset({"model", "messages", "prompt", "suffix"})


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
    error_type: str
    error: str
    status: int | None
    choices: list[ChoiceRecord]
    prompt_tokens: int | None
    completion_tokens: int | None
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
        "prompt": body.get("messages") if request.endpoint == "chat" else body.get("prompt"),
        "suffix": body.get("suffix"),
        "params": {k: v for k, v in body.items() if k not in _WIRE_KEYS},
        "max_tokens": request.max_tokens,
        "seed": body.get("seed"),
        "started_at": provenance.started_at,
        "attempts": provenance.attempts,
        "cached": provenance.cached,
    }
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
    entry["system_fingerprint"] = outcome.get("system_fingerprint")
    entry["latency_s"] = outcome.get("latency_s")
    entry["ttft_s"] = outcome.get("ttft_s")
    entry["choices"] = [cast(ChoiceRecord, dict(c)) for c in outcome.get("choices") or []]
    entry["cost_usd"] = 0.0 if provenance.cached else target.info.usage_cost(pt, ct)
    return entry


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


def retire_entry(slots: Iterable[Slot]) -> RetireEntry:
    return {"kind": "retire", "slots": [list(s) for s in slots]}


# ----------------------------------------------------------------------------- encoding


@dataclass(slots=True)
class Encoded:
    """An answer and its choices' JSON texts (None: they must be encoded with the entry)."""

    answer: Answer
    choices: list[str] | None

    def row(self) -> str:
        """The cache row's text, built from the choices' texts."""
        rest = _JSON.encode({k: v for k, v in self.answer.items() if k != "choices"})
        texts = self.choices
        if texts is None:
            texts = [_JSON.encode(c) for c in self.answer["choices"]]
        return f"{_ROW_HEAD}{','.join(texts)}]{',' if len(rest) > 2 else ''}{rest[1:]}"


def encode(answer: Answer) -> Encoded:
    """Encode each of the answer's choices once, for the cache row and the journal line."""
    return Encoded(answer, [_JSON.encode(c) for c in answer["choices"]])


def decode(text: str) -> tuple[Any, list[str] | None]:
    """A cache row parsed, with its choices' texts when the row is one this module wrote (one
    ASCII line): they go into the journal as read, not decoded and encoded again. Raises
    ValueError (or RecursionError) when the row is not JSON."""
    if not (text.startswith(_ROW_HEAD) and text.isascii()) or "\n" in text or "\r" in text:
        return json.loads(text), None
    try:
        texts, choices, position = [], [], len(_ROW_HEAD)
        while True:
            choice, end = _DECODER.raw_decode(text, position)
            if not isinstance(choice, dict) or "checks" in choice:
                raise ValueError("not a choice this module wrote")
            choices.append(choice)
            texts.append(text[position:end])
            if text.startswith(",", end):
                position = end + 1
            elif text.startswith("]", end):
                break
            else:
                raise ValueError("not a list of choices")
        tail = text[end + 1 :]
        rest = {} if tail == "}" else json.loads("{" + tail[1:]) if tail[:1] == "," else None
        if not isinstance(rest, dict) or "choices" in rest:
            raise ValueError("not an answer this module wrote")
    except (ValueError, RecursionError):
        return json.loads(text), None
    return {"choices": choices, **rest}, texts


def journal_line(entry: Mapping[str, Any], choices: Sequence[str] | None = None) -> str:
    """The entry as one JSON line (without its newline); `choices`: its choices' texts as
    encoded before scoring, spliced in with each choice's verdicts, not encoded again."""
    listed = entry.get("choices")
    if choices is None or not isinstance(listed, list) or len(listed) != len(choices):
        return _JSON.encode(entry)
    head = _JSON.encode({k: v for k, v in entry.items() if k != "choices"})
    parts = ",".join(_with_checks(t, c) for t, c in zip(choices, listed, strict=True))
    return f'{head[:-1]}{"," if len(head) > 2 else ""}"choices":[{parts}]}}'


def _with_checks(text: str, choice: Mapping[str, Any]) -> str:
    if "checks" not in choice:
        return text
    checks = _JSON.encode(choice["checks"])
    return f'{text[:-1]}{"," if len(text) > 2 else ""}"checks":{checks}}}'


# ----------------------------------------------------------------------------- the fold


@dataclass
class Prior:
    """What an earlier (killed or interrupted) session of this run already journaled."""

    requests: dict[str, RequestEntry] = field(default_factory=dict)  # by key, answered
    selections: dict[Slot, SelectEntry] = field(default_factory=dict)
    judged: dict[str, JudgeEntry] = field(default_factory=dict)  # by key, answered


@dataclass
class Folded:
    """A journal read in order, retire lines applied."""

    prior: Prior = field(default_factory=Prior)
    requests: dict[SampleKey, RequestEntry] = field(default_factory=dict)  # the latest
    verdicts: dict[VerdictKey, JudgeEntry] = field(default_factory=dict)  # the latest
    first_round: dict[Slot, set[str]] = field(default_factory=dict)  # answered round-0 keys
    # what --max-cost counted, once per (kind, key, check): a reused answer re-journaled
    # after rescoring was paid for once; retire lines do not give money back
    charges: dict[tuple[str, str, str], float] = field(default_factory=dict)

    @property
    def selections(self) -> dict[Slot, SelectEntry]:
        return self.prior.selections

    @property
    def spent(self) -> float:
        return sum(self.charges.values())

    def retire(self, slots: Iterable[Slot]) -> None:
        """Drop what was read for `slots`, as a `retire` line does (what was paid stays)."""
        gone = set(slots)
        prior = self.prior
        self.requests = {k: v for k, v in self.requests.items() if k[:3] not in gone}
        self.verdicts = {k: v for k, v in self.verdicts.items() if k[:3] not in gone}
        prior.selections = {k: v for k, v in prior.selections.items() if k not in gone}
        prior.requests = {k: v for k, v in prior.requests.items() if _slot(v) not in gone}
        prior.judged = {k: v for k, v in prior.judged.items() if _slot(v) not in gone}
        for slot in gone:
            self.first_round.pop(slot, None)


def fold(entries: Iterable[Mapping[str, Any]]) -> Folded:
    """Entries (validated journal lines, see entries.py) folded in order; their counts and
    costs are made believable in place."""
    out = Folded()
    prior = out.prior
    for line in entries:
        kind = line.get("kind")
        if kind == "retire":
            out.retire((s[0], s[1], s[2]) for s in line.get("slots") or [])
            continue
        slot = _slot(line)
        if kind == "select":
            prior.selections[slot] = cast(SelectEntry, line)
            continue
        _believe(line)
        key = line.get("key")
        answered = line.get("error_type") is None and isinstance(key, str)
        if answered:
            out.charges[(str(kind), str(key), str(line.get("check")))] = _charge(line)
        if kind == "judge":
            judged = cast(JudgeEntry, line)
            out.verdicts[(*slot, line.get("sample", 0), line.get("check", ""))] = judged
            if answered:
                prior.judged[str(key)] = judged
            continue
        entry = cast(RequestEntry, line)
        out.requests[(*slot, line.get("sample", 0))] = entry
        if answered:  # a failed request is sent again
            prior.requests[str(key)] = entry
            if line.get("round", 0) == 0:
                out.first_round.setdefault(slot, set()).add(str(key))
    return out


def _slot(entry: Mapping[str, Any]) -> Slot:
    return entry.get("case_id", ""), entry.get("variant", ""), entry.get("model", "")


def _believe(entry: Any) -> None:
    """Token counts and costs as read back: unknown (None) when they cannot be true."""
    for name in ("prompt_tokens", "completion_tokens"):
        if name in entry and believable(entry[name]) is None:
            entry[name] = None
    for name in ("cost_usd", "charged_usd"):
        if name in entry:
            cost = believable_cost(entry[name])
            if cost is None or type(entry[name]) is not float:
                entry[name] = cost


def _charge(entry: Mapping[str, Any]) -> float:
    """What `--max-cost` counted for an answered request: its cost, or the most it could have
    cost when its usage was unknown (`charged_usd`); no cost counts as 0."""
    charged = entry["charged_usd"] if "charged_usd" in entry else entry.get("cost_usd")
    return float(charged or 0.0)


def recorded_spent(manifest: Mapping[str, Any]) -> float:
    """`counts.spent_usd` of a session that finished (a killed one has none)."""
    counts = manifest.get("counts")
    return (believable_cost(counts.get("spent_usd")) or 0.0) if isinstance(counts, dict) else 0.0
