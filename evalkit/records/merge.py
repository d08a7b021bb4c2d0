"""`evalkit merge`: the run directories of a suite's shards put back together as one run.

A merge that silently dropped a shard would give a complete-looking table with wrong
numbers, so every input is checked before anything is written: one suite (its hash), the
same models, parameters and options, one split into N shards with each shard exactly once,
each case in one input only, and each shard complete (unless `allow_incomplete`, which the
manifest and so the reports then say).

The merged directory is an ordinary run directory: its journal is the shards' journals one
after the other (their cases are disjoint, so the fold of the whole is the folds of the
parts), `results.parquet` their rows, `images/` their thumbnails, and the manifest the
shards' own with the shard removed, so `load_run`, reports, `compare`, `--baseline` and
`--resume` read it like any run.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evalkit.errors import InputError, MergeError, RunError
from evalkit.planning.shard import Shard, shard_of
from evalkit.records.images import FOLDER as IMAGES
from evalkit.records.store import JOURNAL, MANIFEST, RunDir, read_manifest

if TYPE_CHECKING:
    import pandas as pd

    from evalkit.analysis.gates import GateOutcome

# what must be the same in every shard, as messages name it (read by `_facets`)
_SAME = ("models", "suite parameters", "--model", "--samples", "--allow-overflow")
_SUMMED = ("planned", "requests", "errors", "reused", "cached", "spent_usd")


@dataclass(frozen=True)
class _Input:
    path: Path
    manifest: dict[str, Any]
    shard: Shard | None

    @property
    def complete(self) -> bool:
        return self.manifest.get("status") == "complete"


@dataclass(frozen=True)
class Merged:
    """A merge written: its run directory, how many shards, cases and rows it holds, and the
    shards that had not completed (merged with `allow_incomplete`)."""

    run_dir: Path
    shards: int
    cases: int
    rows: int
    status: str
    incomplete: list[str]
    gates: list[GateOutcome] | None = None  # the suite's gate judged on the merged rows


def merge_runs(
    inputs: Sequence[str | Path], out: str | Path, allow_incomplete: bool = False
) -> Merged:
    """Merge the run directories of every shard of one run into the new run directory `out`.

    An input may also be a folder holding exactly one run directory (a downloaded CI
    artifact). A MergeError (exit 2) names the input that cannot be merged and why.
    """
    runs = [_read(Path(path)) for path in inputs]
    if not runs:
        raise MergeError("give the run directories of the shards to merge")
    _check_same_run(runs)
    ordered = _check_shards(runs, allow_incomplete)
    from evalkit.records.frame import load_run

    frames = [load_run(run.path) for run in ordered]
    cases = _check_cases(ordered, frames)
    return _write(ordered, frames, Path(out), allow_incomplete, cases)


def _read(path: Path) -> _Input:
    """An input's manifest; a folder with one run directory inside stands for that run."""
    if path.is_dir() and not (path / MANIFEST).exists():
        inside = sorted(p.parent for p in path.glob(f"*/{MANIFEST}"))
        if len(inside) > 1:
            names = ", ".join(p.name for p in inside[:5])
            raise MergeError(
                f"{path} holds {len(inside)} run directories ({names}): give the one to merge"
            )
        if inside:
            path = inside[0]
    manifest = read_manifest(path)  # an InputError for a folder that is not a run
    try:
        shard = Shard.of_manifest(manifest.get("shard"))
    except InputError as exc:
        raise MergeError(f"{path}: {exc}") from None
    return _Input(path, manifest, shard)


def _facets(manifest: dict[str, Any]) -> dict[str, Any]:
    options = manifest.get("options") or {}
    models = [
        {k: v for k, v in model.items() if k != "concurrency"}  # -j may differ per job
        for model in manifest.get("models") or []
    ]
    values = (
        models,
        manifest.get("params"),
        options.get("models"),
        options.get("samples"),
        options.get("allow_overflow"),
    )
    return dict(zip(_SAME, values, strict=True))


def _check_same_run(runs: list[_Input]) -> None:
    """One suite (by hash), the same models, parameters and options in every input."""
    first = runs[0]
    suite = first.manifest.get("suite") or {}
    facets = _facets(first.manifest)
    for run in runs[1:]:
        other = run.manifest.get("suite") or {}
        if (other.get("name"), other.get("sha256")) != (suite.get("name"), suite.get("sha256")):
            raise MergeError(
                f"{run.path} is a run of another suite than {first.path} (suite "
                f"{other.get('name')!r}, sha256 {str(other.get('sha256'))[:12]}, against "
                f"{suite.get('name')!r}, {str(suite.get('sha256'))[:12]}): merge the shards of "
                "one suite file, unchanged between them"
            )
        for name, value in _facets(run.manifest).items():
            if value != facets[name]:
                raise MergeError(
                    f"{run.path} ran with other {name} than {first.path} ({_short(value)} "
                    f"against {_short(facets[name])}): merge shards run with the same models, "
                    "parameters and options"
                )


def _short(value: Any) -> str:
    if isinstance(value, list) and all(isinstance(m, dict) and "id" in m for m in value):
        value = [m["id"] for m in value]  # models: their ids say enough
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def _check_shards(runs: list[_Input], allow_incomplete: bool) -> list[_Input]:
    """Every shard of one split exactly once, each complete (or allowed not to be); the
    inputs in shard order."""
    whole = [run for run in runs if run.shard is None]
    if whole and len(whole) == len(runs):
        raise MergeError(
            f"{whole[0].path} is not a shard (it ran without --shard): merge puts together "
            "the runs of `evalkit run SUITE --shard I/N`, one for each I"
        )
    if whole:
        raise MergeError(
            f"{whole[0].path} ran the whole suite (no --shard), so it cannot be merged with "
            "shards: give only the shards' run directories"
        )
    count = _shard(runs[0]).count
    by_index: dict[int, _Input] = {}
    for run in runs:
        shard = _shard(run)
        if shard.count != count:
            raise MergeError(
                f"{run.path} is shard {shard} but {runs[0].path} is shard "
                f"{_shard(runs[0])}: merge the shards of one split into N"
            )
        if shard.index in by_index:
            raise MergeError(
                f"{by_index[shard.index].path} and {run.path} are both shard {shard}: give each "
                "shard once"
            )
        by_index[shard.index] = run
    missing = [f"{i}/{count}" for i in range(1, count + 1) if i not in by_index]
    if missing:
        which = (
            f"shard {missing[0]} is" if len(missing) == 1 else f"shards {', '.join(missing)} are"
        )
        raise MergeError(f"{which} missing: give the run directories of all {count} shards")
    ordered = [by_index[i] for i in range(1, count + 1)]
    unfinished = [run for run in ordered if not run.complete]
    if unfinished and not allow_incomplete:
        run = unfinished[0]
        reason = run.manifest.get("reason")
        why = f"status {run.manifest.get('status')!r}" + (f": {reason}" if reason else "")
        more = f" (and {len(unfinished) - 1} other shard(s))" if len(unfinished) > 1 else ""
        raise MergeError(
            f"{run.path}: shard {run.shard} did not complete ({why}){more}; finish it with "
            f"`evalkit run --resume {run.path}`, or merge with --allow-incomplete to merge "
            "what it finished"
        )
    return ordered


def _shard(run: _Input) -> Shard:
    assert run.shard is not None  # _check_shards refused inputs without one
    return run.shard


def _check_cases(ordered: list[_Input], frames: list[pd.DataFrame]) -> int:
    """Each case in one input only, and in the shard the rule puts it in; the cases."""
    seen: dict[str, Path] = {}
    for run, frame in zip(ordered, frames, strict=True):
        shard = _shard(run)
        for case_id in frame["case_id"].dropna().unique():
            case = str(case_id)
            if case in seen:
                raise MergeError(
                    f"case {case!r} is in both {seen[case]} and {run.path}: a case belongs to "
                    "one shard, so these are not the shards of one run"
                )
            seen[case] = run.path
            if not shard.holds(case):
                raise MergeError(
                    f"{run.path}: case {case!r} belongs to shard "
                    f"{shard_of(case, shard.count)}/{shard.count}, not {shard}: this directory "
                    f"was not written by `evalkit run --shard {shard}`"
                )
    return len(seen)


def _write(
    ordered: list[_Input],
    frames: list[pd.DataFrame],
    out: Path,
    allow_incomplete: bool,
    cases: int,
) -> Merged:
    import pandas as pd

    from evalkit.records.rows import COLUMNS

    first = ordered[0].manifest
    incomplete = [run for run in ordered if not run.complete]
    manifest: dict[str, Any] = {
        key: first[key] for key in ("evalkit_version", "suite", "models") if key in first
    }
    manifest["options"] = {**(first.get("options") or {}), "max_cost": _max_cost(ordered)}
    manifest["params"] = first.get("params")
    manifest["shard"] = None  # the merged run covers the whole suite
    manifest["planned"] = _summed([run.manifest.get("planned") for run in ordered])
    manifest["merge"] = {
        "shards": len(ordered),
        "allow_incomplete": allow_incomplete,
        "incomplete": [str(run.shard) for run in incomplete],
        "inputs": [
            {
                "path": str(run.path),
                "run_id": run.manifest.get("run_id"),
                "shard": run.manifest.get("shard"),
                "status": run.manifest.get("status"),
                "reason": run.manifest.get("reason"),
            }
            for run in ordered
        ],
    }
    run = RunDir.create(out.parent, out.name, manifest)
    try:
        _copy_journals([r.path / JOURNAL for r in ordered], run.path / JOURNAL)
        _copy_images([r.path / IMAGES for r in ordered], run.path / IMAGES)
    except OSError as exc:
        shutil.rmtree(run.path, ignore_errors=True)
        raise RunError(f"cannot write {run.path} ({exc.strerror}); nothing was merged") from None
    merged = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    checks = sorted(c for c in merged.columns if str(c).startswith("check."))
    merged = merged.reindex(columns=[*COLUMNS, *checks])
    merged["run_id"] = pd.array([run.path.name] * len(merged), dtype="string")
    unwritten = run.write_results(merged)
    kept = merged[merged["selected"].fillna(True).astype(bool)]
    counts: dict[str, Any] = _summed([r.manifest.get("counts") for r in ordered], _SUMMED)
    counts["samples"] = len(merged)
    counts["failed_samples"] = int((~kept["passed"].fillna(False).astype(bool)).sum())
    status, reason = "complete", None
    if incomplete:
        status = "incomplete"
        reason = "merged with --allow-incomplete: " + "; ".join(
            f"shard {r.shard} ({r.path}) {r.manifest.get('status')}" for r in incomplete
        )
    if unwritten is not None:
        status, reason = "failed", "; ".join(filter(None, [reason, unwritten]))
    gates = None
    if status == "complete" and first.get("gate"):
        from evalkit.analysis.gates import judge_merged

        run.manifest["gate"] = {**first["gate"], "held": None, "outcomes": []}
        gates = judge_merged(merged, run.manifest) or None
    run.manifest["started_at"] = min(
        (str(r.manifest["started_at"]) for r in ordered if r.manifest.get("started_at")),
        default=run.manifest["started_at"],
    )
    per_model = _nested_sums([r.manifest.get("per_model") for r in ordered])
    run.finish(status, reason=reason, counts=counts, per_model=per_model)
    labels = [str(r.shard) for r in incomplete]
    return Merged(run.path, len(ordered), cases, len(merged), status, labels, gates)


def _copy_journals(sources: list[Path], target: Path) -> None:
    """The journals one after the other, each up to its last complete line (a killed shard
    may have left a torn one), flushed to disk."""
    with target.open("wb") as out:
        for source in sources:
            with contextlib.suppress(FileNotFoundError):  # a shard that journaled nothing
                data = source.read_bytes()
                out.write(data[: data.rfind(b"\n") + 1])
        out.flush()
        os.fsync(out.fileno())


def _copy_images(sources: list[Path], target: Path) -> None:
    """The shards' thumbnails (named by their picture's hash) in one folder, each once."""
    for source in sources:
        if not source.is_dir():
            continue
        target.mkdir(exist_ok=True)
        for picture in source.iterdir():
            if picture.is_file() and not (target / picture.name).exists():
                shutil.copyfile(picture, target / picture.name)


def _max_cost(ordered: list[_Input]) -> float | None:
    """Each shard's `--max-cost` was its own: the merged run's ceiling is their sum."""
    ceilings = [(r.manifest.get("options") or {}).get("max_cost") for r in ordered]
    numbers = [float(c) for c in ceilings if isinstance(c, int | float)]
    return sum(numbers) if len(numbers) == len(ceilings) else None


def _summed(parts: list[Any], keys: Sequence[str] | None = None) -> dict[str, Any]:
    """Numbers summed by key over the parts (dicts; anything else counts as empty)."""
    out: dict[str, Any] = {}
    for part in parts:
        if not isinstance(part, dict):
            continue
        for key, value in part.items():
            if (keys is None or key in keys) and isinstance(value, int | float):
                out[key] = out.get(key, 0) + value
    return out


def _nested_sums(parts: list[Any]) -> dict[str, dict[str, Any]]:
    """`per_model` summed model by model."""
    labels: dict[str, list[Any]] = {}
    for part in parts:
        for label, stats in (part if isinstance(part, dict) else {}).items():
            labels.setdefault(label, []).append(stats)
    return {label: _summed(stats) for label, stats in labels.items()}
