"""Report benchmark: `write_reports` and `compare_runs` on synthetic 100,000-row runs.

    python benchmarks/report_speed.py [--cases N] [--keep DIR]

Two run directories are generated without any server: manifest.json, a journal.jsonl in the
format dispatch.py writes (one entry per request, checks scored per choice, `check_meta`),
and results.parquet from `evalkit.records.frame.frame_of_journal`, as `evalkit run` leaves them.
The shape: N cases (default 25,000) × 2 models × 2 variants × 1 sample = 4N rows; varied
output lengths (a few of 6,000 characters), finish reasons (stop, length, content_filter),
1% failed requests, time to first token for one model. The second run is degraded: one
model fails 10% more of its cases.

Measured (wall time, this process): `write_reports` of the first run (HTML, Markdown,
JUnit; loading the Parquet file and `compare_models` included, the latter also timed on its
own), with the HTML's size;
then `compare_runs` of the two runs (loading both included, and without loading).
Targets: report < 30 s, HTML < 20 MB, comparison < 10 s.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MODELS = [("openai/gpt-4", 30.0, 60.0), ("openai/gpt-3.5-turbo", 0.5, 1.5)]  # $/1M in, out
VARIANTS = ["terse", "plain"]
QUEUES = ["billing", "technical", "account", "shipping", "other"]
WORDS = ["the", "a", "ticket", "customer", "refund", "order", "app", "crash", "login", "help"]


def entries(cases: int, seed: int, degraded: bool) -> Iterator[dict[str, Any]]:
    """Journal entries, one per request, as `dispatch._entry` and `dispatch._score` write them."""
    cases_rng = random.Random(seed)
    meta = {"equals": [1.0, True], "finish_reason": [1.0, True], "short": [0.5, False]}
    for index in range(cases):
        case_id = f"case-{index:06d}"
        queue = QUEUES[index % len(QUEUES)]
        ticket = " ".join(cases_rng.choices(WORDS, k=cases_rng.randint(4, 30)))
        difficulty = cases_rng.random()
        for model, price_in, price_out in MODELS:
            skill = 0.85 if model == "openai/gpt-4" else 0.7
            if degraded and model == "openai/gpt-3.5-turbo":
                skill -= 0.1
            for variant in VARIANTS:
                prompt: Any = (
                    [{"role": "user", "content": f"Ticket: {ticket}\nQueue?"}]
                    if variant == "terse"
                    else f"Route this ticket to a queue.\nTicket: {ticket}\nQueue:"
                )
                key = f"{seed}-{case_id}-{model}-{variant}"
                rng = random.Random(key)  # per row: the degraded run differs only where meant
                base = {
                    "key": key,
                    "case_id": case_id,
                    "variant": variant,
                    "model": model,
                    "model_id": model,
                    "endpoint": "chat",
                    "sample": 0,
                    "n": 1,
                    "vars": {"ticket": ticket, "queue": queue},
                    "must_pass": index % 500 == 0,
                    "prompt": prompt,
                    "suffix": None,
                    "params": {"temperature": 0, "max_tokens": 64},
                    "max_tokens": 64,
                    "seed": None,
                    "started_at": f"2024-05-01T12:{index % 60:02d}:00.000+00:00",
                    "attempts": 1,
                    "cached": False,
                    "round": 0,
                    "check_meta": meta,
                }
                if rng.random() < 0.01:
                    yield {
                        **base,
                        "error_type": "server_error",
                        "error": "HTTP 500: The server had an error while processing your request.",
                        "status": 500,
                    }
                    continue
                right = difficulty < skill
                text = queue if right else rng.choice(QUEUES)
                finish = "stop"
                roll = rng.random()
                if roll < 0.03:
                    text = " ".join(rng.choices(WORDS, k=1000))[:6000]  # rambling, cut off
                    finish = "length"
                elif roll < 0.04:
                    text, finish = "", "content_filter"
                elif roll < 0.2:
                    text = f"{text}. " + " ".join(rng.choices(WORDS, k=rng.randint(5, 60)))
                prompt_tokens = 12 + len(ticket.split())
                completion_tokens = max(1, len(text.split()))
                checks = {
                    "equals": [
                        text == queue,
                        float(text == queue),
                        "" if text == queue else f"expected {queue!r}, got {text[:40]!r}",
                    ],
                    "finish_reason": [
                        finish == "stop",
                        float(finish == "stop"),
                        "" if finish == "stop" else f"finish_reason {finish!r}, expected 'stop'",
                    ],
                    "short": [len(text) < 200, float(len(text) < 200), "longer than 200"],
                }
                latency = rng.lognormvariate(-0.7 if "3.5" in model else 0.2, 0.4)
                yield {
                    **base,
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "system_fingerprint": "fp_bench",
                    "latency_s": latency,
                    "ttft_s": latency * 0.3 if model == "openai/gpt-4" else None,
                    "choices": [
                        {
                            "index": 0,
                            "text": text,
                            "finish_reason": finish,
                            "logprobs": None,
                            "checks": checks,
                        }
                    ],
                    "cost_usd": (prompt_tokens * price_in + completion_tokens * price_out) / 1e6,
                }


def make_run(root: Path, run_id: str, cases: int, seed: int, degraded: bool) -> Path:
    """A complete run directory: manifest, journal, results.parquet."""
    from evalkit.records.frame import frame_of_journal
    from evalkit.records.store import JOURNAL, MANIFEST, RESULTS, SCHEMA_VERSION

    run_dir = root / run_id
    run_dir.mkdir(parents=True)
    requests = errors = 0
    with (run_dir / JOURNAL).open("w", encoding="utf-8") as journal:
        for entry in entries(cases, seed, degraded):
            requests += 1
            errors += "error_type" in entry
            journal.write(json.dumps(entry, separators=(",", ":")) + "\n")
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "run_id": run_id,
        "evalkit_version": "bench",
        "suite": {"name": "support-triage", "path": "bench.yaml"},
        "models": [{"id": m, "label": m} for m, _, _ in MODELS],
        "status": "complete",
        "started_at": "2024-05-01T12:00:00.000+00:00",
        "finished_at": "2024-05-01T12:40:00.000+00:00",
        "counts": {"planned": requests, "requests": requests, "errors": errors, "cached": 0},
    }
    (run_dir / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    frame = frame_of_journal(run_dir)
    frame.to_parquet(run_dir / RESULTS, index=False)
    return run_dir


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--cases", type=int, default=25_000, help="cases (rows = 4 × cases)")
    parser.add_argument("--keep", type=Path, help="write the runs here and keep them")
    args = parser.parse_args(argv)

    import warnings

    from evalkit.analysis.compare import compare_models, compare_runs
    from evalkit.records.frame import load_run
    from evalkit.report import write_reports

    warnings.simplefilter("ignore")  # pandas deprecations from compare.py are not measured
    results: list[bool] = []

    def show(name: str, value: str, target: str = "", ok: bool = True) -> None:
        mark = f"  {target}  {'ok' if ok else 'MISSED'}" if target else ""
        print(f"{name:<34} {value:>12}{mark}", flush=True)
        results.append(ok)

    with tempfile.TemporaryDirectory(prefix="evalkit-report-bench-") as scratch:
        root = args.keep or Path(scratch)
        started = time.perf_counter()
        base = make_run(root, "base", args.cases, seed=1, degraded=False)
        new = make_run(root, "new", args.cases, seed=1, degraded=True)
        built = time.perf_counter() - started
        rows = len(load_run(base))
        print(
            f"two runs of {rows:,} rows ({args.cases:,} cases × 2 models × 2 variants) "
            f"generated in {built:.1f} s under {root}\n",
            flush=True,
        )

        started = time.perf_counter()
        compare_models(load_run(base))
        models_s = time.perf_counter() - started

        started = time.perf_counter()
        paths = write_reports(base)
        report_s = time.perf_counter() - started
        sizes = {p.name: p.stat().st_size / 1e6 for p in paths}
        show("write_reports (html, md, junit)", f"{report_s:.1f} s", "< 30 s", report_s < 30)
        show("  of which compare_models", f"{models_s:.1f} s")
        html_mb = sizes["report.html"]
        show("report.html size", f"{html_mb:.1f} MB", "< 20 MB", html_mb < 20)
        show("report.md size", f"{sizes['report.md'] * 1000:.1f} kB")
        show("junit.xml size", f"{sizes['junit.xml']:.1f} MB")

        started = time.perf_counter()
        a, b = load_run(base), load_run(new)
        show("load_run of both runs", f"{time.perf_counter() - started:.1f} s")
        started = time.perf_counter()
        try:
            comparison = compare_runs(a, b)
        except MemoryError as exc:
            show("compare_runs", "MemoryError", "< 10 s", False)
            print(f"  {exc}", flush=True)
            return 1
        compare_s = time.perf_counter() - started
        show("compare_runs", f"{compare_s:.1f} s", "< 10 s", compare_s < 10)
        print(
            f"  {len(comparison.regressions):,} regressions, {len(comparison.fixes):,} fixes, "
            f"verdict: {comparison.verdict}",
            flush=True,
        )

        started = time.perf_counter()
        write_reports(new, root / "new-report", formats=["html"], comparison=comparison)
        show("html report with the comparison", f"{time.perf_counter() - started:.1f} s")
    return 0 if all(results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
