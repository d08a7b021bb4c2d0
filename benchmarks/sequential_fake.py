"""The sequential gate against the loopback fake (issue 16): counts cases, not seconds.

    nice python benchmarks/sequential_fake.py [--cases 1000] [--broken 0.3] [--keep DIR]

A synthetic suite of `--cases` cases (case i must answer `a<i>`) is written to a temporary
folder and run twice with the `evalkit` command, as CI would:

1. the baseline: `evalkit run suite.yaml` against the fake (`fake_openai`, in this process),
   which answers every case right;
2. the degraded run: `evalkit run suite.yaml --baseline BASELINE --sequential --no-cache`
   against a degraded server, a small proxy in front of the same fake that breaks the answer
   of `--broken` of the prompts (those whose sha256 falls in that share; the same prompts on
   every run). `--no-cache` because the cache would otherwise answer the unchanged prompts
   from the baseline's answers: a degraded server is exactly what a cache hides.

Printed: the requests the degraded server answered, the cases sent of the suite, the
decision line and exit code, and the CPU model and load average. Target (issue 16): the gate
stops with "regression" having sent at most half the suite.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from aiohttp import ClientSession, web

from fake_openai import FakeOpenAI

ROOT = Path(__file__).resolve().parent.parent
KEY = "sk-benchmark-0123456789abcdef"


def write_suite(folder: Path, cases: int) -> Path:
    lines = [
        "name: sequential-fake",
        "models: [openai/gpt-4o-mini]",
        "prompt: [{role: user, content: 'ANSWER: {{ want }}'}]",
        "checks: [{equals: '{{ want }}'}]",
        "cases:",
        *(f"  - {{id: c{i}, vars: {{want: a{i}}}}}" for i in range(cases)),
    ]
    path = folder / "suite.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def broken(body: dict[str, object], share: float) -> bool:
    """Whether the degraded server breaks this prompt: a fixed share, by the prompt's hash."""
    text = json.dumps(body.get("messages"), sort_keys=True).encode("utf-8")
    return int(hashlib.sha256(text).hexdigest()[:8], 16) / 16**8 < share


@contextmanager
def degraded(upstream: str, share: float) -> Iterator[tuple[str, list[int]]]:
    """A proxy in front of the fake that answers `share` of the prompts wrong; yields its
    base URL and a one-item list counting the requests it answered."""
    answered = [0]
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    state: dict[str, object] = {}

    async def chat(request: web.Request) -> web.Response:
        body = await request.json()
        async with ClientSession() as session:
            upstream_url = f"{upstream}/chat/completions"
            async with session.post(upstream_url, json=body, headers=_auth(request)) as got:
                answer = await got.json()
        if broken(body, share):
            for choice in answer.get("choices", []):
                choice["message"]["content"] = "broken"
        answered[0] += 1
        return web.json_response(answer)

    async def start() -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", chat)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        state["runner"] = runner
        state["port"] = runner.addresses[0][1]
        ready.set()

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(start(), loop)
    ready.wait(10)
    try:
        yield f"http://127.0.0.1:{state['port']}/v1", answered
    finally:
        runner = state["runner"]
        assert isinstance(runner, web.AppRunner)
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def _auth(request: web.Request) -> dict[str, str]:
    return {"Authorization": request.headers.get("Authorization", "")}


def evalkit(folder: Path, base_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "EVALKIT_"))}
    env.update(OPENAI_BASE_URL=base_url, OPENAI_API_KEY=KEY, PYTHONPATH=str(ROOT))
    env["EVALKIT_CACHE_DIR"] = str(folder / "cache")
    command = [sys.executable, "-m", "evalkit", "run", *args, "--out", str(folder / "runs")]
    return subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True)


def run_directory(stdout: str) -> Path:
    line = next(x for x in stdout.splitlines() if x.startswith("run directory: "))
    return Path(line.removeprefix("run directory: "))


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=1000)
    parser.add_argument("--broken", type=float, default=0.3)
    parser.add_argument("--keep", type=Path, help="write the runs here instead of a temp dir")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temp:
        folder = args.keep or Path(temp)
        folder.mkdir(parents=True, exist_ok=True)
        suite = write_suite(folder, args.cases)
        with FakeOpenAI(record=False) as fake:
            base = evalkit(folder, fake.url, str(suite), "--no-progress")
            if base.returncode != 0:
                sys.exit(f"the baseline run failed ({base.returncode}):\n{base.stderr}")
            baseline = run_directory(base.stdout)
            with degraded(fake.url, args.broken) as (url, answered):
                gate = ("--baseline", str(baseline), "--sequential", "--no-cache")
                done = evalkit(folder, url, str(suite), *gate, "--no-progress")
        record = json.loads((run_directory(done.stdout) / "manifest.json").read_text())
        decided = record["sequential"]
        line = next(x for x in done.stdout.splitlines() if x.startswith("sequential "))
        sent, total = decided["cases_sent"], decided["suite_cases"]
        print(f"suite: {total} cases; degraded server: {args.broken:.0%} of prompts broken")
        print(f"decision: {decided['verdict']} (exit {done.returncode})")
        print(
            f"cases sent: {sent} of {total} ({sent / total:.1%}); requests answered by the "
            f"degraded server: {answered[0]}; rounds: {[r['sent'] for r in decided['rounds']]}"
        )
        print(line)
        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
        print(f"machine: {os.cpu_count()} cores, {cpu_model()}; load average {load}")


if __name__ == "__main__":
    main()
