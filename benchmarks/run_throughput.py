"""Throughput benchmark: `evalkit run` end to end against the fake OpenAI server.

    python benchmarks/run_throughput.py [--quick] [--only A|B|C ...] [--repeats N] [--json PATH]

The fake server (`python -m fake_openai`, the package `fake_openai/`) runs in its own process
on 127.0.0.1, started and stopped by PID. Every client runs in a process of its own as well, so
that what is measured is that process alone:

* evalkit: `python -m evalkit run SUITE -m openai/gpt-3.5-turbo -j 100 --no-progress`; wall
  time from spawn to exit, CPU (user + sys) and peak RSS from `os.wait4` on its PID.
* baselines (bare aiohttp, plain httpx, httpx over `httpx_aiohttp.AiohttpTransport`): this
  script re-run with `--baseline-worker KIND`; wall and CPU (`getrusage(RUSAGE_SELF)` deltas)
  are measured in-process, around creating the client, sending every request with 100
  workers, and closing the client; interpreter start and imports are not counted there. The
  baseline process is also timed from spawn to exit (`process_wall_s`), which is what an
  `evalkit run` is timed as: the ratios are printed against both.

Workloads (see benchmarks/README.md for the targets):

* A: 2,000 chat requests, 100 in flight, 200 ms server latency; ideal wall 4.0 s.
* B: 5,000 chat requests, 100 in flight, 0 ms latency; requests per second.
* C: 100,000 chat requests, 100 in flight, 0 ms latency (skipped with --quick); peak RSS and
  the request rate of the first and last 10% of the journal.

A and B (and the fixed cost of a 1-request run) are repeated (3 times by default) and the
median is reported.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from bytecode import compile_evalkit

ROOT = Path(__file__).resolve().parent.parent
MODEL = "openai/gpt-3.5-turbo"
WIRE_MODEL = "gpt-3.5-turbo"
API_KEY = "sk-bench"
CONCURRENCY = 100
BASELINES = ("aiohttp", "httpx", "httpx+aiohttp")
CLK_TCK = os.sysconf("SC_CLK_TCK")
CHILD_TIMEOUT_S = 1800.0

SUITE_YAML = """\
name: throughput
prompt: [{role: user, content: "Question {{ i }}"}]
params: {max_tokens: 16, temperature: 0}
cases: cases.jsonl
"""


# --------------------------------------------------------------------------- the fake server


class FakeServer:
    """`python -m fake_openai` in a child process, on 127.0.0.1, stopped by its PID."""

    def __init__(self, latency_ms: float, workdir: Path) -> None:
        self.latency_ms = latency_ms
        self._log = (workdir / f"server-{latency_ms:g}ms.log").open("wb")
        self._proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fake_openai",
                "--port",
                "0",
                "--latency-ms",
                str(latency_ms),
                "--no-log",
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
        )
        self.pid = self._proc.pid
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline().strip()
        prefix = "listening on "
        if not line.startswith(prefix):
            self.stop()
            raise RuntimeError(f"fake server did not start: {line!r}")
        self.url = line[len(prefix) :]
        if not self.url.startswith("http://127.0.0.1:"):
            self.stop()
            raise RuntimeError(f"fake server is not on loopback: {self.url}")

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.url}/_stats", timeout=10) as response:
            return dict(json.loads(response.read()))

    def reset(self) -> None:
        post = urllib.request.Request(f"{self.url}/_reset", data=b"", method="POST")
        with urllib.request.urlopen(post, timeout=10) as response:
            response.read()

    def cpu_s(self) -> float:
        """The server's user + sys CPU so far, from /proc (it is still running)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime

    def stop(self) -> None:
        if self._proc.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            try:
                self._proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self._proc.wait()
        if self._proc.stdout is not None:
            self._proc.stdout.close()
        self._log.close()

    def __enter__(self) -> FakeServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --------------------------------------------------------------------------- child processes


@dataclass
class ChildRun:
    """One child process, measured from outside."""

    wall_s: float
    cpu_s: float  # user + sys, from wait4
    maxrss_mb: float  # ru_maxrss, from wait4
    exit_code: int
    spawned_at: float  # time.time() just before spawning
    exited_at: float  # time.time() just after it was reaped
    rss_samples: list[tuple[float, float]] = field(default_factory=list)  # (time, MB)


def run_child(
    cmd: Sequence[str],
    log_path: Path,
    env: dict[str, str] | None = None,
    sample_rss: bool = False,
) -> ChildRun:
    """Spawn `cmd`, reap it with wait4 and return its wall time, CPU and peak RSS."""
    samples: list[tuple[float, float]] = []
    with log_path.open("wb") as log:
        spawned_at = time.time()
        started = time.perf_counter()
        proc = subprocess.Popen(list(cmd), cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        done = threading.Event()
        watchdog = threading.Timer(CHILD_TIMEOUT_S, _kill, (proc.pid,))
        watchdog.start()
        sampler = None
        if sample_rss:
            sampler = threading.Thread(target=_sample_rss, args=(proc.pid, done, samples))
            sampler.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            done.set()
            watchdog.cancel()
        wall = time.perf_counter() - started
        exited_at = time.time()
        proc.returncode = os.waitstatus_to_exitcode(status)
        if sampler is not None:
            sampler.join()
    return ChildRun(
        wall_s=wall,
        cpu_s=usage.ru_utime + usage.ru_stime,
        maxrss_mb=usage.ru_maxrss / 1024,  # KiB on Linux
        exit_code=proc.returncode,
        spawned_at=spawned_at,
        exited_at=exited_at,
        rss_samples=samples,
    )


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _sample_rss(pid: int, done: threading.Event, out: list[tuple[float, float]]) -> None:
    """VmRSS of `pid` every 0.1 s until it exits (to tell where the peak happens)."""
    status = Path(f"/proc/{pid}/status")
    while not done.is_set():
        try:
            text = status.read_text()
        except OSError:
            return
        for line in text.splitlines():
            if line.startswith("VmRSS:"):
                out.append((time.time(), int(line.split()[1]) / 1024))
                break
        done.wait(0.1)


def child_env(server: FakeServer) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        OPENAI_BASE_URL=f"{server.url}/v1",
        OPENAI_API_KEY=API_KEY,
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
    )
    env.pop("CI", None)
    return env


# --------------------------------------------------------------------------- evalkit runs


def write_suite(directory: Path, cases: int) -> Path:
    """A chat suite of `cases` cases (`Question {{ i }}`) with its cases.jsonl beside it."""
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / "cases.jsonl").open("w", encoding="utf-8") as out:
        for i in range(cases):
            out.write(json.dumps({"id": f"q{i}", "vars": {"i": i}}) + "\n")
    suite = directory / "suite.yaml"
    suite.write_text(SUITE_YAML, encoding="utf-8")
    return suite


@dataclass
class EvalkitRun:
    requests: int
    child: ChildRun
    startup_s: float  # spawn → first request started
    send_s: float  # first request started → last response received (journal timestamps)
    finalize_s: float  # last response → exit (DataFrame, results.parquet, summary, exit)
    journal_started: list[float]  # started_at of every request entry, epoch seconds, sorted
    last_response_at: float  # epoch seconds: max(started_at + latency_s)

    @property
    def cpu_ms_per_request(self) -> float:
        return self.child.cpu_s / self.requests * 1000


def evalkit_run_options(no_cache: bool = False) -> list[str]:
    """Options beyond the measured command line that this evalkit needs to be measured.

    Every request must reach the server (its request count is checked after every run).
    When `evalkit run` has a response cache, each run gets a new, empty cache folder: what
    is measured is a first run with the cache on, as by default (misses and writes), never
    answers served from an earlier run; `no_cache` turns the cache off instead. `{out}`
    stands for the run's own output folder.
    """
    usage = subprocess.run(
        [sys.executable, "-m", "evalkit", "run", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    ).stdout
    if "--cache-dir" in usage and not no_cache:
        return ["--cache-dir", "{out}/cache"]
    return ["--no-cache"] if "--no-cache" in usage else []


EXTRA_OPTIONS: list[str] = []


def run_evalkit(
    server: FakeServer, suite: Path, requests: int, workdir: Path, sample_rss: bool = False
) -> EvalkitRun:
    out = Path(tempfile.mkdtemp(prefix="runs-", dir=workdir))
    server.reset()
    cmd = [
        sys.executable,
        "-m",
        "evalkit",
        "run",
        str(suite),
        "-m",
        MODEL,
        "-j",
        str(CONCURRENCY),
        "--out",
        str(out),
        "--no-progress",
        *(option.replace("{out}", str(out)) for option in EXTRA_OPTIONS),
    ]
    log = out / "evalkit.log"
    child = run_child(cmd, log, child_env(server), sample_rss)
    if child.exit_code != 0:
        raise RuntimeError(f"evalkit exited {child.exit_code}; see {log}:\n{log.read_text()}")
    [run_dir] = [p for p in out.iterdir() if (p / "manifest.json").is_file()]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    counts = manifest.get("counts", {})
    if manifest.get("status") != "complete" or counts.get("requests") != requests:
        raise RuntimeError(f"run not complete: {manifest.get('status')} {counts}")
    if counts.get("errors"):
        raise RuntimeError(f"run had errors: {counts}")
    served = server.stats().get("count")
    if served != requests:
        raise RuntimeError(f"server saw {served} requests, expected {requests}")
    spans = list(_journal_spans(run_dir / "journal.jsonl"))
    started = sorted(start for start, _ in spans)
    last_response = max(end for _, end in spans)
    return EvalkitRun(
        requests=requests,
        child=child,
        startup_s=started[0] - child.spawned_at,
        send_s=last_response - started[0],
        finalize_s=child.exited_at - last_response,
        journal_started=started,
        last_response_at=last_response,
    )


def _journal_spans(path: Path) -> Iterator[tuple[float, float]]:
    """(started, answered) of every request in the journal, epoch seconds.

    Only request entries count (they have `started_at`); `answered` is `started_at` plus the
    request's `latency_s`. `started_at` has millisecond resolution.
    """
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            entry = json.loads(line)
            if "started_at" not in entry or entry.get("kind") is not None:
                continue
            start = _epoch(entry["started_at"])
            yield start, start + float(entry.get("latency_s") or 0.0)


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def window_rate(times: Sequence[float], lo: float, hi: float) -> float:
    """Requests started per second between fractions `lo` and `hi` of the sorted start times."""
    first = int(len(times) * lo)
    last = max(int(len(times) * hi) - 1, first + 1)
    span = times[last] - times[first]
    return (last - first) / span if span > 0 else float("inf")


def import_cpu(workdir: Path, repeats: int) -> ChildRun:
    """Median (by CPU) of `python -c "import evalkit.cli"`: interpreter start + imports."""
    runs = [
        run_child([sys.executable, "-c", "import evalkit.cli"], workdir / "import.log")
        for _ in range(repeats)
    ]
    return sorted(runs, key=lambda r: r.cpu_s)[len(runs) // 2]


# --------------------------------------------------------------------------- baselines


@dataclass
class BaselineRun:
    kind: str
    requests: int
    wall_s: float
    cpu_s: float
    process_wall_s: float  # spawn to exit: interpreter start, imports and the run

    @property
    def cpu_ms_per_request(self) -> float:
        return self.cpu_s / self.requests * 1000


def run_baseline(server: FakeServer, kind: str, requests: int, workdir: Path) -> BaselineRun:
    server.reset()
    log = workdir / f"baseline-{kind}.log"
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--baseline-worker",
        kind,
        "--url",
        f"{server.url}/v1/chat/completions",
        "--requests",
        str(requests),
        "--result",
        str(workdir / "baseline.json"),
    ]
    child = run_child(cmd, log, child_env(server))
    if child.exit_code != 0:
        raise RuntimeError(f"baseline {kind} exited {child.exit_code}:\n{log.read_text()}")
    result = json.loads((workdir / "baseline.json").read_text())
    served = server.stats().get("count")
    if served != requests:
        raise RuntimeError(f"server saw {served} requests, expected {requests}")
    return BaselineRun(kind, requests, result["wall_s"], result["cpu_s"], child.wall_s)


def _body(i: int) -> bytes:
    body = {
        "model": WIRE_MODEL,
        "messages": [{"role": "user", "content": f"Question {i}"}],
        "temperature": 0,
        "max_tokens": 16,
    }
    return json.dumps(body, separators=(",", ":")).encode()


_HEADERS = {"content-type": "application/json", "authorization": f"Bearer {API_KEY}"}


async def _baseline_aiohttp(url: str, requests: int) -> None:
    import aiohttp

    numbers = iter(range(requests))
    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            for i in numbers:
                async with session.post(url, data=_body(i), headers=_HEADERS) as response:
                    raw = await response.read()
                    if response.status != 200:
                        raise RuntimeError(f"HTTP {response.status}")
                    json.loads(raw)

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))


async def _baseline_httpx(url: str, requests: int, aiohttp_transport: bool) -> None:
    import httpx

    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    timeout = httpx.Timeout(120.0)
    transport: httpx.AsyncBaseTransport | None = None
    if aiohttp_transport:
        from httpx_aiohttp import AiohttpTransport

        transport = AiohttpTransport(limits=limits)
    numbers = iter(range(requests))
    async with httpx.AsyncClient(transport=transport, limits=limits, timeout=timeout) as client:

        async def worker() -> None:
            for i in numbers:
                response = await client.post(url, content=_body(i), headers=_HEADERS)
                if response.status_code != 200:
                    raise RuntimeError(f"HTTP {response.status_code}")
                json.loads(response.content)

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))


def baseline_worker(kind: str, url: str, requests: int, result: Path) -> None:
    """The in-process measurement of one baseline client (runs in its own process)."""
    import aiohttp  # noqa: F401  imports are not part of the measurement
    import httpx  # noqa: F401
    import httpx_aiohttp  # noqa: F401

    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    if kind == "aiohttp":
        asyncio.run(_baseline_aiohttp(url, requests))
    else:
        asyncio.run(_baseline_httpx(url, requests, aiohttp_transport=kind == "httpx+aiohttp"))
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    result.write_text(json.dumps({"wall_s": wall, "cpu_s": cpu}))


# --------------------------------------------------------------------------- the benchmark


@dataclass
class Row:
    workload: str
    client: str
    requests: int
    wall_s: float
    ideal_s: float | None
    cpu_ms: float  # CPU per request, raw
    cpu_ms_net: float | None  # CPU per request without interpreter start + imports
    server_cpu_ms: float | None  # the fake server's CPU per request
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        return self.wall_s / self.ideal_s if self.ideal_s else None

    @property
    def rate(self) -> float:
        return self.requests / self.wall_s


def median_row(rows: list[Row]) -> Row:
    """Field-wise medians of repeated measurements of one workload and client."""

    def med(values: list[float | None]) -> float | None:
        present = [v for v in values if v is not None]
        return statistics.median(present) if present else None

    first = rows[0]
    extra: dict[str, Any] = {
        key: med([r.extra.get(key) for r in rows])
        for key in first.extra
        if all(isinstance(r.extra.get(key), (int, float)) for r in rows)
    }
    extra["runs_wall_s"] = [round(r.wall_s, 3) for r in rows]
    return Row(
        workload=first.workload,
        client=first.client,
        requests=first.requests,
        wall_s=statistics.median(r.wall_s for r in rows),
        ideal_s=first.ideal_s,
        cpu_ms=statistics.median(r.cpu_ms for r in rows),
        cpu_ms_net=med([r.cpu_ms_net for r in rows]),
        server_cpu_ms=med([r.server_cpu_ms for r in rows]),
        extra=extra,
    )


def measure_evalkit(
    name: str,
    server: FakeServer,
    suite: Path,
    requests: int,
    ideal_s: float | None,
    startup_cpu_s: float,
    workdir: Path,
    sample_rss: bool = False,
) -> tuple[Row, EvalkitRun]:
    server_before = server.cpu_s()
    run = run_evalkit(server, suite, requests, workdir, sample_rss)
    server_cpu = server.cpu_s() - server_before
    row = Row(
        workload=name,
        client="evalkit run",
        requests=requests,
        wall_s=run.child.wall_s,
        ideal_s=ideal_s,
        cpu_ms=run.cpu_ms_per_request,
        cpu_ms_net=(run.child.cpu_s - startup_cpu_s) / requests * 1000,
        server_cpu_ms=server_cpu / requests * 1000,
        extra={
            "startup_s": run.startup_s,
            "send_s": run.send_s,
            "finalize_s": run.finalize_s,
            "maxrss_mb": run.child.maxrss_mb,
            "cpu_s": run.child.cpu_s,
        },
    )
    return row, run


def measure_baseline(
    name: str, server: FakeServer, kind: str, requests: int, ideal_s: float | None, workdir: Path
) -> Row:
    server_before = server.cpu_s()
    run = run_baseline(server, kind, requests, workdir)
    server_cpu = server.cpu_s() - server_before
    return Row(
        workload=name,
        client=kind,
        requests=requests,
        wall_s=run.wall_s,
        ideal_s=ideal_s,
        cpu_ms=run.cpu_ms_per_request,
        cpu_ms_net=None,
        server_cpu_ms=server_cpu / requests * 1000,
        extra={"process_wall_s": run.process_wall_s},
    )


def workload(
    name: str,
    latency_ms: float,
    requests: int,
    repeats: int,
    startup_cpu_s: float,
    workdir: Path,
) -> list[Row]:
    """evalkit and the three baselines, each `repeats` times, interleaved; medians."""
    ideal = requests / CONCURRENCY * latency_ms / 1000 if latency_ms else None
    suite = write_suite(workdir / f"suite-{name}", requests)
    measured: dict[str, list[Row]] = {}
    with FakeServer(latency_ms, workdir) as server:
        run_baseline(server, "aiohttp", min(requests, 500), workdir)  # warm the server up
        for repeat in range(repeats):
            row, _ = measure_evalkit(name, server, suite, requests, ideal, startup_cpu_s, workdir)
            measured.setdefault(row.client, []).append(row)
            _progress(f"{name} #{repeat + 1}", row)
            for kind in BASELINES:
                row = measure_baseline(name, server, kind, requests, ideal, workdir)
                measured.setdefault(kind, []).append(row)
                _progress(f"{name} #{repeat + 1}", row)
    return [median_row(rows) for rows in measured.values()]


def fixed_cost(repeats: int, startup_cpu_s: float, workdir: Path) -> Row:
    """A 1-request run at 0 ms latency: what every `evalkit run` costs besides requests."""
    suite = write_suite(workdir / "suite-one", 1)
    rows = []
    with FakeServer(0, workdir) as server:
        for _ in range(repeats):
            row, _ = measure_evalkit("1 request", server, suite, 1, None, startup_cpu_s, workdir)
            rows.append(row)
    return median_row(rows)


def workload_c(requests: int, startup_cpu_s: float, workdir: Path) -> tuple[Row, dict[str, Any]]:
    suite = write_suite(workdir / "suite-C", requests)
    with FakeServer(0, workdir) as server:
        row, run = measure_evalkit(
            "C", server, suite, requests, None, startup_cpu_s, workdir, sample_rss=True
        )
    times = run.journal_started
    deciles = [window_rate(times, d / 10, (d + 1) / 10) for d in range(10)]
    send_rss = [mb for t, mb in run.child.rss_samples if t <= run.last_response_at]
    details = {
        "first_10pct_rate": deciles[0],
        "last_10pct_rate": deciles[-1],
        "decile_rates": [round(r, 1) for r in deciles],
        "maxrss_mb": run.child.maxrss_mb,
        "peak_rss_while_sending_mb": max(send_rss) if send_rss else None,
        "rss_at_last_response_mb": send_rss[-1] if send_rss else None,
    }
    row.extra.update(details)
    return row, details


def _progress(label: str, row: Row) -> None:
    ratio = f" ({row.ratio:.2f}x ideal)" if row.ratio else ""
    print(
        f"  {label:<6} {row.client:<14} {row.wall_s:7.2f} s{ratio}, "
        f"{row.cpu_ms:.2f} ms CPU/request",
        file=sys.stderr,
        flush=True,
    )


def ratios(rows: list[Row]) -> list[str]:
    """The figures the targets are set in: evalkit against httpx+aiohttp of the same run."""
    found = {(r.workload, r.client): r for r in rows}
    lines = []
    for name in ("A", "B"):
        ours, base = found.get((name, "evalkit run")), found.get((name, "httpx+aiohttp"))
        if ours is None or base is None:
            continue
        process = base.extra["process_wall_s"]
        lines.append(
            f"{name}: evalkit / httpx+aiohttp wall: {ours.wall_s / base.wall_s:.3f}x against the "
            f"baseline's sending ({base.wall_s:.2f} s), {ours.wall_s / process:.3f}x against its "
            f"whole process ({process:.2f} s, start-up and imports included); sending phase "
            f"alone {ours.extra['send_s'] / base.wall_s:.3f}x; req/s "
            f"{base.wall_s / ours.wall_s:.0%} and {process / ours.wall_s:.0%} of the baseline's"
        )
    return lines


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def table(rows: list[Row]) -> str:
    header = (
        f"{'workload':<10} {'client':<14} {'requests':>8} {'wall s':>7} {'x ideal':>7} "
        f"{'req/s':>7} {'CPU ms/req':>10} {'excl. start':>11} {'server ms/req':>13}"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r.workload:<10} {r.client:<14} {r.requests:>8} {r.wall_s:>7.2f} "
            f"{_fmt(r.ratio, '.2f'):>7} {r.rate:>7.0f} {r.cpu_ms:>10.2f} "
            f"{_fmt(r.cpu_ms_net, '.2f'):>11} {_fmt(r.server_cpu_ms, '.2f'):>13}"
        )
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d"),
        "evalkit": _git_revision(),
    }


def _git_revision() -> str:
    """The commit evalkit was measured at, with '+changes' when evalkit/ has local edits."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "evalkit"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head}+changes" if dirty else head


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="skip workload C (100,000 cases)")
    parser.add_argument(
        "--only", choices=("A", "B", "C"), action="append", help="run only these workloads"
    )
    parser.add_argument("--repeats", type=int, default=3, help="runs of A and B (median)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument(
        "--no-cache",
        action="store_true",
        help="run evalkit with --no-cache (default: with its cache on, in a new empty folder)",
    )
    parser.add_argument("--baseline-worker", choices=BASELINES, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--requests", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.baseline_worker:
        baseline_worker(args.baseline_worker, args.url, args.requests, args.result)
        return 0

    info = machine()
    EXTRA_OPTIONS[:] = evalkit_run_options(args.no_cache)
    print(
        f"machine: {info['nproc']} cores, {info['cpu']}, Python {info['python']}, "
        f"{info['date']}; evalkit at {info['evalkit']}",
        flush=True,
    )
    command = f"python -m evalkit run SUITE -m {MODEL} -j {CONCURRENCY} --out DIR --no-progress"
    extra = " ".join(o.replace("{out}", "DIR") for o in EXTRA_OPTIONS)
    print(f"measured: {command} {extra}".rstrip(), flush=True)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"load average at the start: {load}", flush=True)
    print(compile_evalkit(), flush=True)
    with tempfile.TemporaryDirectory(prefix="evalkit-bench-") as tmp:
        workdir = Path(tmp)
        startup = import_cpu(workdir, args.repeats)
        print(
            f"interpreter start + `import evalkit.cli`: {startup.cpu_s * 1000:.0f} ms CPU, "
            f"{startup.wall_s * 1000:.0f} ms wall",
            flush=True,
        )
        only = set(args.only or (("A", "B") if args.quick else ("A", "B", "C")))
        one = fixed_cost(args.repeats, startup.cpu_s, workdir)
        print(
            f"1-request `evalkit run`: {one.cpu_ms:.0f} ms CPU, {one.wall_s * 1000:.0f} ms wall "
            f"(start {one.extra['startup_s'] * 1000:.0f} ms, finish "
            f"{one.extra['finalize_s'] * 1000:.0f} ms)",
            flush=True,
        )
        rows = []
        if "A" in only:
            rows += workload("A", 200, 2000, args.repeats, startup.cpu_s, workdir)
        if "B" in only:
            rows += workload("B", 0, 5000, args.repeats, startup.cpu_s, workdir)
        c_details: dict[str, Any] | None = None
        if "C" in only:
            c_row, c_details = workload_c(100_000, startup.cpu_s, workdir)
            rows.append(c_row)

    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"\nload average at the end: {load} (the machine should be otherwise idle)")
    print()
    print(table(rows))
    print()
    for r in rows:
        if r.client == "evalkit run":
            print(
                f"{r.workload}: evalkit phases (median): start {r.extra['startup_s']:.2f} s, "
                f"sending {r.extra['send_s']:.2f} s, finishing {r.extra['finalize_s']:.2f} s; "
                f"peak RSS {r.extra['maxrss_mb']:.0f} MB; walls {r.extra.get('runs_wall_s', '')}"
            )
    print()
    for line in ratios(rows):
        print(line)
    if c_details is not None:
        print(
            f"C: first 10% {c_details['first_10pct_rate']:.0f} req/s, last 10% "
            f"{c_details['last_10pct_rate']:.0f} req/s; per decile {c_details['decile_rates']}; "
            f"peak RSS {c_details['maxrss_mb']:.0f} MB (while sending "
            f"{_fmt(c_details['peak_rss_while_sending_mb'], '.0f')} MB)"
        )
    if args.json:
        payload = {
            "machine": info,
            "startup": {"cpu_s": startup.cpu_s, "wall_s": startup.wall_s},
            "one_request": asdict(one),
            "rows": [{**asdict(r), "ratio": r.ratio, "rate": r.rate} for r in rows],
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
