"""What a run is asked to do (`RunSettings`) and what it gives back (`RunResult`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evalkit.errors import exit_code

if TYPE_CHECKING:
    import pandas as pd

    from evalkit.analysis.compare import RunComparison
    from evalkit.analysis.gates import GateOutcome
    from evalkit.execution.sequential import SequentialSettings
    from evalkit.planning.shard import Shard


@dataclass
class RunSettings:
    """What `evalkit run` was asked to do, beyond the suite itself."""

    models: list[str] | None = None  # replaces the suite's models
    concurrency: int | None = None  # -j: requests in flight per model
    samples: int | None = None
    out: Path = Path("reports/runs")
    max_retries: int = 8
    max_error_rate: float = 0.02
    timeout_s: float = 120.0
    retry_initial_s: float = 0.5
    progress: bool | None = None  # None: a live bar on a terminal, plain lines otherwise
    environ: Mapping[str, str] | None = None
    allow_outside_cases: bool = False  # asked for on each command line, never kept in a manifest
    max_cost: float | None = None  # USD ceiling
    cache: bool = True  # --no-cache: neither read nor write
    refresh: bool = False  # --refresh: write without reading
    cache_dir: Path | None = None
    allow_overflow: bool = False
    gates: list[str] | None = None  # --gate expressions: replace the suite's gate
    alpha: float = 0.05  # significance level of the gate's comparisons
    shard: Shard | None = None  # --shard I/N: only the cases of shard I (see planning/shard.py)
    batch: bool = False  # --batch: every model's requests through the Batch API
    poll_interval_s: float | None = None  # --poll-interval (None: the run's own, else 60 s)
    batch_topup: str = "batch"  # --batch-topup: a raised-max_tokens round in "batch" or "online"
    # --sequential: send in rounds until decided (see execution/sequential.py)
    sequential: SequentialSettings | None = None
    # called with the run directory once it exists, before anything is sent
    on_start: Callable[[Path], None] | None = field(default=None, repr=False)
    # asked whether to resume the latest unfinished run of the same suite and models (True)
    # instead of starting a new one; None: always start a new one
    offer_resume: Callable[[Path], bool] | None = field(default=None, repr=False)


@dataclass
class RunResult:
    """A finished run: its directory, status, counts and DataFrame; `Gate.judge` adds the
    comparison with a baseline."""

    run_dir: Path
    status: str  # complete, failed, interrupted, budget
    requests: int
    errors: int
    reason: str | None = None
    per_model: dict[str, dict[str, Any]] = field(default_factory=dict)
    failed_samples: int = 0  # kept samples that failed a required check
    summary: list[dict[str, Any]] = field(default_factory=list, repr=False)  # summarize's lines
    comparison: RunComparison | None = None  # with a baseline (`Gate.judge`), once complete
    gates: list[GateOutcome] | None = None  # the gate's outcomes, when one was declared
    sequential: dict[str, Any] | None = None  # --sequential: the manifest's decision record
    # the DataFrame once read, shared by the copies `Gate.judge` and the gate make
    _frame: list[pd.DataFrame] = field(default_factory=list, repr=False, compare=False)

    @property
    def frame(self) -> pd.DataFrame:
        """The run's DataFrame, as `load_run` returns it, read when first asked for: a run
        ends without pandas (a fifth of a 5,000-request run's time), so one that nobody asks
        for its DataFrame never imports it."""
        if not self._frame:
            from evalkit.records.frame import load_run

            self._frame.append(load_run(self.run_dir))
        return self._frame[0]

    @property
    def exit_code(self) -> int:
        """3: the run could not complete; with a gate (the suite's, `--gate`, `--baseline`)
        1 when a rule failed and 0 when all held, whatever samples failed; without one, 1
        when a kept sample failed a required check, 0 when none did. With `--sequential` the
        decision is the result: 1 on a regression, 5 when inconclusive, else 0."""
        if self.sequential is not None:  # docs/sequential.md
            verdict = self.sequential.get("verdict")
            return exit_code(
                complete=self.status in ("complete", "budget"),
                inconclusive=verdict == "inconclusive",
                gates=[verdict != "regression"],
            )
        verdicts = [not self.comparison.failed] if self.comparison else []
        verdicts += [g.held for g in self.gates or []]
        gated = self.comparison is not None or self.gates is not None
        return exit_code(
            complete=self.status == "complete",
            failed=bool(self.failed_samples),
            gates=verdicts if gated else None,
        )
