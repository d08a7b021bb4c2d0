"""The one fold of a journal, shared by the DataFrame, `--resume` and `cache explain`.

`fold` reads a journal once, in order: a later entry for the same sample replaces an earlier
one, a `retire` line drops what came before for the slots it names, and token counts and
costs that cannot be true (see `catalog.believable`) become unknown. This is the only place
read-back counts are judged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar, cast

from evalkit.models.catalog import believable, believable_cost
from evalkit.records.entries import (
    BatchEntry,
    JudgeEntry,
    RequestEntry,
    SampleKey,
    SelectEntry,
    Slot,
    VerdictKey,
)

T = TypeVar("T")


@dataclass
class Prior:
    """What an earlier (killed or interrupted) session of this run already journaled."""

    requests: dict[str, RequestEntry] = field(default_factory=dict)  # by key, answered
    selections: dict[Slot, SelectEntry] = field(default_factory=dict)
    judged: dict[str, JudgeEntry] = field(default_factory=dict)  # by key, answered
    batches: list[BatchEntry] = field(default_factory=list)  # Batch API files, in order


@dataclass
class Folded(Generic[T]):
    """A journal read in order, retire lines applied; `requests` holds the latest request
    entry per sample, or what `fold_as` made of it."""

    prior: Prior = field(default_factory=Prior)
    requests: dict[SampleKey, T] = field(default_factory=dict)  # the latest
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


def fold(entries: Iterable[Mapping[str, Any]]) -> Folded[RequestEntry]:
    """Entries (validated journal lines, see readback.py) folded in order; their counts and
    costs are made believable in place."""
    return _fold(entries, lambda entry: entry, True)


def fold_as(
    entries: Iterable[Mapping[str, Any]], convert: Callable[[RequestEntry], T]
) -> Folded[T]:
    """The same fold, each request entry kept only as `convert` makes it (the DataFrame's
    rows): a 100,000-request journal never sits in memory twice. `prior` stays empty."""
    return _fold(entries, convert, False)


def _fold(
    entries: Iterable[Mapping[str, Any]], convert: Callable[[RequestEntry], T], reuse: bool
) -> Folded[T]:
    out: Folded[T] = Folded()
    prior = out.prior
    for line in entries:
        kind = line.get("kind")
        if kind == "retire":
            out.retire((s[0], s[1], s[2]) for s in line.get("slots") or [])
            continue
        if kind == "batch":
            prior.batches.append(cast(BatchEntry, line))
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
        out.requests[(*slot, line.get("sample", 0))] = convert(entry)
        if answered:  # a failed request is sent again
            if reuse:
                prior.requests[str(key)] = entry
            if line.get("round", 0) == 0:
                out.first_round.setdefault(slot, set()).add(str(key))
    return out


def _slot(entry: Mapping[str, Any]) -> Slot:
    return entry.get("case_id", ""), entry.get("variant", ""), entry.get("model", "")


def _believe(entry: Any) -> None:
    """Token counts and costs as read back: unknown (None) when they cannot be true."""
    for name in ("prompt_tokens", "completion_tokens", "cached_tokens", "reasoning_tokens"):
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
