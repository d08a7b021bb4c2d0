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

from evalkit.planning.planner import Planner
from evalkit.records.entries import Slot
from evalkit.records.fold import Prior, fold, recorded_spent
from evalkit.records.store import MANIFEST, read_journal, read_manifest
from evalkit.suite.spec import Suite


@dataclass
class ResumePlan:
    prior: Prior
    retired: list[Slot] = field(default_factory=list)
    changed_cases: list[str] = field(default_factory=list)
    removed_cases: list[str] = field(default_factory=list)
    spent: float = 0.0  # dollars the earlier sessions spent, for --max-cost


def plan_resume(
    run_dir: Path,
    manifest: dict[str, Any],
    suite: Suite,
    planner: Planner,
) -> ResumePlan:
    """Read the journal and compare it with what the (possibly edited) suite plans now (the
    run's own planner, so no case is rendered again for it)."""
    folded = fold(read_journal(run_dir))
    prior, first_round = folded.prior, folded.first_round
    planned: dict[Slot, set[str]] = planner.first_round_keys()
    plan = ResumePlan(prior, spent=max(folded.spent, recorded_spent(manifest)))
    for slot, keys in first_round.items():
        if slot not in planned or not keys <= planned[slot]:
            plan.retired.append(slot)
    folded.retire(plan.retired)  # run afresh: the retire line goes before anything reused
    current_cases = {c.key for c in suite.cases}
    plan.changed_cases = sorted({s[0] for s in plan.retired if s[0] in current_cases})
    plan.removed_cases = sorted({s[0] for s in plan.retired if s[0] not in current_cases})
    return plan


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
