"""Batch benchmark: a 50,000-request `evalkit run --batch` against the fake's Batch API.

    python benchmarks/batch_speed.py [--requests N] [--batch-seconds S] [--json PATH]

The fake server (`python -m fake_openai --batch-seconds S`) runs in its own process, and so
does each evalkit run (`python -m evalkit run ... --no-progress`), timed from spawn to exit,
its CPU and peak RSS from `os.wait4`. The run prints each batch's status as it changes; the
benchmark watches its stderr (every 20 ms) and notes the wall time since spawn at which each
status line appeared:

* build + upload: spawn → the batch's first status (`validating`), printed once the batch is
  created: the process's start, loading and validating the suite, writing every request's
  line and uploading the file; and the peak RSS by then (`VmHWM`). Target: under 10 s, at
  most 300 MB.
* join: the status `completed` → the process's exit: downloading the output file, joining
  its lines (shuffled) to their requests, scoring and journaling every entry, and the run's
  end (the DataFrame, `results.parquet`, the summary). Target: under 10 s.

Baseline, in the same run: the same suite run online (`evalkit run` with `-j 100`) against the
same server at 0 ms latency; its wall time and peak RSS are printed beside, as ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MODEL = "openai/gpt-4o-mini"


def cpu_model() -> str:
    with open("/proc/cpuinfo", encoding="utf-8") as info:
        for line in info:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def write_suite(folder: Path, requests: int) -> Path:
    path = folder / "big.jsonl"
    with path.open("w", encoding="utf-8") as out:
        for i in range(requests):
            line = {
                "id": f"c{i:06d}",
                "prompt": f"Question {i}: ANSWER: yes",
                "expect": [{"icontains": "yes"}],
            }
            out.write(json.dumps(line) + "\n")
    return path


def start_server(batch_seconds: float) -> tuple[subprocess.Popen[str], str]:
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fake_openai",
            "--port",
            "0",
            "--no-log",
            "--batch-seconds",
            str(batch_seconds),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert server.stdout is not None
    line = server.stdout.readline()
    match = re.search(r"http://127\.0\.0\.1:\d+", line)
    if not match:
        server.kill()
        raise SystemExit(f"the fake server did not start: {line!r}")
    return server, match.group(0) + "/v1"


def timed(args: list[str], env: dict[str, str], cwd: Path) -> dict[str, Any]:
    """`evalkit ARGS`: wall, CPU and peak RSS of that process alone (`os.wait4`), and when
    (seconds since spawn) its first `validating` and `completed` status lines appeared."""
    err_path = cwd / "stderr.txt"
    started = time.perf_counter()
    with err_path.open("w") as err:
        child = subprocess.Popen(
            [sys.executable, "-m", "evalkit", *args],
            cwd=cwd,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
            stdin=subprocess.DEVNULL,
        )
        marks, uploaded_rss, (_, status, usage) = _watch(child.pid, err_path, started)
    wall = time.perf_counter() - started
    text = err_path.read_text()
    if os.waitstatus_to_exitcode(status) not in (0, 1):
        raise SystemExit(f"evalkit exited {status}:\n{text[-3000:]}")
    return {
        "wall_s": wall,
        "stderr": text,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "rss_mb": usage.ru_maxrss / 1024,
        "uploaded_rss_mb": uploaded_rss,
        **marks,
    }


def _watch(
    pid: int, err_path: Path, started: float
) -> tuple[dict[str, float], float | None, tuple[int, int, Any]]:
    """Until the process exits: the seconds since spawn at which its first `validating` and
    `completed` lines appeared, its peak RSS so far (VmHWM) at the first of them (what
    building and uploading the input file took, before any answer is read), and what
    `os.wait4` gave. An online run prints neither line."""
    marks: dict[str, float] = {}
    uploaded_rss = None
    while True:
        waited = os.wait4(pid, os.WNOHANG)
        if waited[0] != 0:
            return marks, uploaded_rss, waited
        text = err_path.read_text()
        now = time.perf_counter() - started
        if "validating_s" not in marks and ": validating," in text:
            marks["validating_s"] = now
            with open(f"/proc/{pid}/status", encoding="utf-8") as status:
                for line in status:
                    if line.startswith("VmHWM:"):
                        uploaded_rss = int(line.split()[1]) / 1024
        if "completed_s" not in marks and ": completed," in text:
            marks["completed_s"] = now
        time.sleep(0.02)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=50_000)
    parser.add_argument("--batch-seconds", type=float, default=2.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    server, url = start_server(args.batch_seconds)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            suite = write_suite(folder, args.requests)
            env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "EVALKIT_"))}
            env.update(
                OPENAI_BASE_URL=url,
                OPENAI_API_KEY="sk-bench",
                EVALKIT_CACHE_DIR=str(folder / "cache"),
            )
            common = ["run", str(suite), "-m", MODEL, "--no-cache", "--no-progress"]
            # the batch run first, alone in the process table: its RSS is the children's peak
            batch = timed([*common, "--batch", "--poll-interval", "0.2", "--out", "b"], env, folder)
            online = timed([*common, "-j", "100", "--out", "o"], env, folder)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)

    build_upload = batch["validating_s"]
    join = batch["wall_s"] - batch["completed_s"]
    figures = {
        "cpu": cpu_model(),
        "load_average": os.getloadavg(),
        "requests": args.requests,
        "batch_seconds": args.batch_seconds,
        "batch_wall_s": round(batch["wall_s"], 2),
        "batch_cpu_s": round(batch["cpu_s"], 2),
        "build_upload_s": round(build_upload, 2),
        "join_s": round(join, 2),
        "batch_peak_rss_mb": round(batch["rss_mb"], 1),
        "batch_rss_when_uploaded_mb": batch["uploaded_rss_mb"],
        "online_peak_rss_mb": round(online["rss_mb"], 1),
        "online_wall_s": round(online["wall_s"], 2),
        "online_cpu_s": round(online["cpu_s"], 2),
        "batch_cpu_vs_online": round(batch["cpu_s"] / online["cpu_s"], 2),
        "build_upload_vs_online_wall": round(build_upload / online["wall_s"], 2),
        "join_vs_online_wall": round(join / online["wall_s"], 2),
    }
    for key, value in figures.items():
        print(f"{key}: {value}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
