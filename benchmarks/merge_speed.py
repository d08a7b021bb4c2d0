"""Merge benchmark: `evalkit merge` of 10 shard run directories of 10,000 rows each.

    python benchmarks/merge_speed.py [--shards N] [--rows R] [--keep DIR]

The shard run directories are written without any server, through evalkit's own writers:
`RunDir.create` (the manifest, with its shard), `RunDir.append` (one journal line per
request, shaped as `records.entries.request_entry` makes them, with check verdicts per
choice), `frame_of_journal` and `RunDir.write_results` (results.parquet), `RunDir.finish`.
Each case id is kept only by the shard the hash rule gives it, so the merge accepts them.

Measured (wall time, this process): `merge_runs` of all shards into a new run directory
(reading every manifest and results.parquet, the checks, the journals copied, the merged
results.parquet and manifest written), then `load_run` of the merged run. Printed with the
CPU model (/proc/cpuinfo) and the load average, since the machine decides the figure.
Target: the merge of 10 × 10,000 rows in under 5 s.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MODEL = "openai/gpt-4o-mini"
QUEUES = ["billing", "technical", "account", "shipping", "other"]
WORDS = ["the", "a", "ticket", "customer", "refund", "order", "app", "crash", "login", "help"]
META = {"equals": [1.0, True], "finish_reason": [1.0, True], "short": [0.5, False]}
TARGET_S = 5.0


def entry(case_id: str, index: int, rng: random.Random) -> dict[str, Any]:
    """One request's journal entry, as the sender writes an answered request."""
    queue = QUEUES[index % len(QUEUES)]
    ticket = " ".join(rng.choices(WORDS, k=rng.randint(4, 30)))
    text = queue if rng.random() < 0.8 else rng.choice(QUEUES)
    finish = "stop" if rng.random() < 0.97 else "length"
    cached = rng.random() < 0.3
    prompt_tokens, completion_tokens = 12 + len(ticket.split()), max(1, len(text.split()))
    return {
        "key": f"{case_id}-{MODEL}",
        "case_id": case_id,
        "variant": "",
        "model": MODEL,
        "model_id": MODEL,
        "endpoint": "chat",
        "sample": 0,
        "n": 1,
        "vars": {"ticket": ticket, "queue": queue},
        "must_pass": False,
        "prompt": [{"role": "user", "content": f"Ticket: {ticket}\nQueue?"}],
        "suffix": None,
        "params": {"temperature": 0, "max_tokens": 16},
        "max_tokens": 16,
        "seed": None,
        "started_at": f"2026-12-01T12:{index % 60:02d}:00.000+00:00",
        "attempts": 0 if cached else 1,
        "cached": cached,
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "cached_tokens": 0,
        "reasoning_tokens": 0,
        "system_fingerprint": "fp_bench",
        "latency_s": rng.lognormvariate(-0.7, 0.4),
        "ttft_s": None,
        "choices": [
            {
                "index": 0,
                "text": text,
                "finish_reason": finish,
                "logprobs": None,
                "checks": {
                    "equals": [text == queue, float(text == queue), f"expected {queue!r}"],
                    "finish_reason": [finish == "stop", float(finish == "stop"), "not stop"],
                    "short": [len(text) < 200, float(len(text) < 200), "longer than 200"],
                },
            }
        ],
        "cost_usd": 0.0 if cached else (prompt_tokens * 0.15 + completion_tokens * 0.6) / 1e6,
        "round": 0,
        "check_meta": META,
    }


def make_shards(root: Path, shards: int, rows: int) -> list[Path]:
    """`shards` complete shard run directories of `rows` rows each."""
    from evalkit.planning.shard import Shard, shard_of
    from evalkit.records.frame import frame_of_journal
    from evalkit.records.store import RunDir

    runs = []
    for index in range(1, shards + 1):
        manifest = {
            "evalkit_version": "bench",
            "suite": {"name": "bench", "path": "bench.yaml", "sha256": "0" * 64},
            "models": [{"id": MODEL, "label": MODEL, "params": {"max_tokens": 16}}],
            "options": {"models": None, "samples": None, "allow_overflow": False},
            "params": {"temperature": 0},
            "shard": Shard(index, shards).as_manifest(),
            "planned": {MODEL: rows},
        }
        runs.append(RunDir.create(root / "shards" / f"shard-{index}", f"run-{index}", manifest))
    for run in runs:
        run.open_journal()
    filled = [0] * shards
    rng = random.Random(1)
    number = 0
    while min(filled) < rows:
        case_id = f"case-{number:07d}"
        shard = shard_of(case_id, shards) - 1
        if filled[shard] < rows:
            runs[shard].append(entry(case_id, number, rng))
            filled[shard] += 1
        number += 1
    paths = []
    for run in runs:
        run.close_journal()
        frame = frame_of_journal(run.path, run.manifest)
        assert run.write_results(frame) is None
        counts = {"planned": rows, "requests": rows, "errors": 0, "samples": len(frame)}
        run.finish("complete", reason=None, counts=counts)
        paths.append(run.path)
    return paths


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--shards", type=int, default=10, help="shard run directories")
    parser.add_argument("--rows", type=int, default=10_000, help="rows per shard")
    parser.add_argument("--keep", type=Path, help="write the runs here and keep them")
    args = parser.parse_args(argv)

    from evalkit.records.frame import load_run
    from evalkit.records.merge import merge_runs

    print(f"CPU: {cpu_model()} ({os.cpu_count()} cores)", flush=True)
    print("load average at start: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()), flush=True)
    with tempfile.TemporaryDirectory(prefix="evalkit-merge-bench-") as scratch:
        root = args.keep or Path(scratch)
        started = time.perf_counter()
        shards = make_shards(root, args.shards, args.rows)
        built = time.perf_counter() - started
        total = args.shards * args.rows
        print(f"{args.shards} shards of {args.rows:,} rows built in {built:.1f} s under {root}")
        started = time.perf_counter()
        merged = merge_runs(shards, root / "merged")
        merge_s = time.perf_counter() - started
        started = time.perf_counter()
        frame = load_run(merged.run_dir)
        load_s = time.perf_counter() - started
        assert merged.rows == len(frame) == total and merged.status == "complete"
        ok = merge_s < TARGET_S or total != 100_000
        mark = f"  target < {TARGET_S:g} s for 10 × 10,000: {'ok' if ok else 'MISSED'}"
        print(f"merge of {total:,} rows: {merge_s:.2f} s ({total / merge_s:,.0f} rows/s){mark}")
        print(f"load_run of the merged run: {load_s:.2f} s")
    print("load average at end: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
