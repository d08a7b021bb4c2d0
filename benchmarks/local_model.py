"""The embedded local model: load time, generation speed, and the quickstart's wall time.

    python benchmarks/local_model.py

Needs the `local` extra. Prints one line per figure; benchmarks/README.md records them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    from evalkit.providers.local import LocalProvider, gguf_path

    path = gguf_path("gemma-3-270m", None)
    provider = LocalProvider(path, 2048)
    started = time.perf_counter()
    llm = provider.model()
    size_mb = path.stat().st_size / 1e6
    print(f"model load: {time.perf_counter() - started:.2f} s ({size_mb:.0f} MB GGUF)")
    prompt = "Once upon a time, in a small village by the sea,"
    llm.create_completion(prompt=prompt, max_tokens=8, temperature=0)  # warm up
    started = time.perf_counter()
    result = llm.create_completion(prompt=prompt, max_tokens=128, temperature=0, seed=1)
    elapsed = time.perf_counter() - started
    tokens = result["usage"]["completion_tokens"]
    print(f"generation: {tokens} tokens in {elapsed:.2f} s = {tokens / elapsed:.1f} tokens/s")
    with tempfile.TemporaryDirectory() as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
        env["EVALKIT_CACHE_DIR"] = str(Path(tmp) / "cache")
        started = time.perf_counter()
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "evalkit",
                "run",
                str(ROOT / "suites" / "quickstart.yaml"),
                "--report",
                "--out",
                str(Path(tmp) / "runs"),
                "--no-progress",
            ],
            capture_output=True,
            text=True,
            env=env,
        )
        wall = time.perf_counter() - started
    print(f"quickstart (60 requests, report included): {wall:.1f} s wall, exit {run.returncode}")
    summary = [line for line in run.stdout.splitlines() if line.startswith("local/")]
    for line in summary:
        print(f"  {line}")


if __name__ == "__main__":
    main()
