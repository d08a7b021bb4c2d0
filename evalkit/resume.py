"""Resuming a run: what its journal already holds, and what changed in the suite since.

A request finished before the process died is reused, never sent again; one that was in
flight has no journal line and is sent again (exactly once). When the suite changed, a case ×
variant × model whose first-round requests differ from the journal's (or that is gone) is
retired: a `retire` line makes the DataFrame drop its old rows, and it is run afresh.

What the run already spent is summed from the journal, since a killed run's manifest never
recorded it, so `--max-cost` holds across the whole run however it stopped.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evalkit.catalog import believable, believable_cost
from evalkit.dispatch import Prior
from evalkit.planner import Planner
from evalkit.store import MANIFEST, read_journal, read_manifest
from evalkit.suite import Suite

Slot = tuple[str, str, str]  # case id, variant, model label


@dataclass
class ResumePlan:
    prior: Prior
    retired: list[Slot] = field(default_factory=list)
    changed_cases: list[str] = field(default_factory=list)
    removed_cases: list[str] = field(default_factory=list)
    spent: float = 0.0  # dollars the earlier sessions spent, for --max-cost


def prepare(
    run_dir: Path,
    manifest: dict[str, Any],
    suite: Suite,
    planner: Planner,
) -> ResumePlan:
    """Read the journal and compare it with what the (possibly edited) suite plans now (the
    run's own planner, so no case is rendered again for it)."""
    prior = Prior()
    first_round: dict[Slot, set[str]] = {}
    charges: dict[tuple[str, ...], float] = {}
    for entry in read_journal(run_dir):
        kind = entry.get("kind")
        if kind == "retire":
            for gone in entry["slots"]:
                first_round.pop((gone[0], gone[1], gone[2]), None)
        elif kind == "select":
            prior.selections[_slot(entry)] = entry
        elif entry.get("error_type"):
            continue  # a failed request or judge call is sent again
        else:
            _believe(entry)
            # a reused answer re-journaled after rescoring was paid for once: one per key
            charges[(str(kind), entry["key"], str(entry.get("check")))] = _charge(entry)
            if kind == "judge":
                prior.judged[entry["key"]] = entry
            else:
                prior.requests[entry["key"]] = entry
                if entry.get("round", 0) == 0:
                    first_round.setdefault(_slot(entry), set()).add(entry["key"])
    planned: dict[Slot, set[str]] = planner.first_round_keys()
    plan = ResumePlan(prior, spent=max(sum(charges.values()), _recorded_spent(manifest)))
    for slot, keys in first_round.items():
        if slot not in planned or not keys <= planned[slot]:
            plan.retired.append(slot)
    current_cases = {c.key for c in suite.cases}
    plan.changed_cases = sorted({s[0] for s in plan.retired if s[0] in current_cases})
    plan.removed_cases = sorted({s[0] for s in plan.retired if s[0] not in current_cases})
    return plan


def _slot(entry: dict[str, Any]) -> Slot:
    return entry["case_id"], entry.get("variant", ""), entry["model"]


def _believe(entry: dict[str, Any]) -> None:
    """Counts and costs a reused entry is accounted with: unknown when they cannot be true."""
    for name in ("prompt_tokens", "completion_tokens"):
        if name in entry:
            entry[name] = believable(entry[name])
    if "cost_usd" in entry:
        entry["cost_usd"] = believable_cost(entry["cost_usd"])


def _charge(entry: dict[str, Any]) -> float:
    """What `--max-cost` counted for a journaled request: its cost, or the most it could have
    cost when its usage was unknown (`charged_usd`); what cannot be a cost counts as 0."""
    return believable_cost(entry.get("charged_usd", entry.get("cost_usd"))) or 0.0


def _recorded_spent(manifest: dict[str, Any]) -> float:
    """`counts.spent_usd` of a session that finished (a killed one has none)."""
    counts = manifest.get("counts")
    return (believable_cost(counts.get("spent_usd")) or 0.0) if isinstance(counts, dict) else 0.0


def unfinished_runs(root: Path, suite_path: str, model_ids: Iterable[str]) -> list[Path]:
    """Run directories under `root` for the same suite and models that did not complete."""
    wanted_models = sorted(model_ids)
    wanted_suite = str(Path(suite_path).resolve())
    found = []
    if not root.is_dir():
        return []
    for manifest_path in sorted(root.glob(f"*/{MANIFEST}")):
        try:
            manifest: dict[str, Any] = read_manifest(manifest_path.parent)
        except Exception:
            continue
        same_suite = manifest.get("suite", {}).get("abspath") == wanted_suite
        models = sorted(m.get("id") for m in manifest.get("models", []))
        if (
            same_suite
            and models == wanted_models
            and manifest.get("status") in ("running", "interrupted", "budget")
        ):
            found.append(manifest_path.parent)
    return found
