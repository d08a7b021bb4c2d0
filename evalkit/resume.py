"""Resuming a run: what its journal already holds, and what changed in the suite since.

A request finished before the process died is reused, never sent again; one that was in
flight has no journal line and is sent again (exactly once). When the suite changed, a case ×
variant × model whose first-round requests differ from the journal's (or that is gone) is
retired: a `retire` line makes the DataFrame drop its old rows, and it is run afresh.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evalkit.dispatch import Prior
from evalkit.plan import groups
from evalkit.render import Renderer
from evalkit.store import MANIFEST, read_journal, read_manifest
from evalkit.suite import Suite
from evalkit.targets import Target

Slot = tuple[str, str, str]  # case id, variant, model label


@dataclass
class ResumePlan:
    prior: Prior
    retired: list[Slot] = field(default_factory=list)
    changed_cases: list[str] = field(default_factory=list)
    removed_cases: list[str] = field(default_factory=list)


def prepare(run_dir: Path, suite: Suite, targets: list[Target], samples: int | None) -> ResumePlan:
    """Read the journal and compare it with what the (possibly edited) suite plans now."""
    prior = Prior()
    first_round: dict[Slot, set[str]] = {}
    for entry in read_journal(run_dir):
        kind = entry.get("kind")
        slot = (str(entry.get("case_id")), str(entry.get("variant", "")), str(entry.get("model")))
        if kind == "retire":
            for gone in entry.get("slots") or []:
                first_round.pop((str(gone[0]), str(gone[1]), str(gone[2])), None)
        elif kind == "select":
            prior.selections[slot] = entry
        elif kind == "judge":
            if not entry.get("error_type"):
                prior.judged[str(entry.get("key"))] = entry
        elif not entry.get("error_type"):
            prior.requests[str(entry["key"])] = entry
            if entry.get("round", 0) == 0:
                first_round.setdefault(slot, set()).add(str(entry["key"]))
    planned: dict[Slot, set[str]] = {}
    renderer = Renderer()
    for target in targets:
        for group in groups(suite, target, samples, renderer):
            slot = (group.case.key, group.variant, target.label)
            planned[slot] = {r.key for r in group.first_round()}
    plan = ResumePlan(prior)
    for slot, keys in first_round.items():
        if slot not in planned or not keys <= planned[slot]:
            plan.retired.append(slot)
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
