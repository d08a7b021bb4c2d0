"""Start-up benchmark: how long evalkit takes before it does anything.

    python benchmarks/startup.py [--repeats N] [--cases N]

Each command runs as a child process, `--repeats` times (default 9), and the median wall time
from spawn to exit is printed beside the bare interpreter's (`python -c pass`, measured in the
same run), so the figures survive a change of machine better than absolute times:

* `python -c "import evalkit"`
* `evalkit --help`
* `evalkit validate` of a 20-case suite (YAML, cases inline, one model)
* `evalkit validate` of a 10,000-case JSONL suite (`--cases` to change the size)

Targets (issue 12): import and `--help` under 0.3 s, validate of 20 cases under 0.5 s, of
10,000 cases under 3 s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bytecode import compile_evalkit


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def median_wall(command: list[str], repeats: int, cwd: Path) -> float:
    walls = []
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "EVALKIT_"))}
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run(command, cwd=cwd, env=env, check=True, capture_output=True)
        walls.append(time.perf_counter() - started)
    return statistics.median(walls)


def write_suites(folder: Path, cases: int) -> tuple[Path, Path]:
    small = folder / "small.yaml"
    lines = [
        "name: small",
        "models: [openai/gpt-3.5-turbo]",
        "params: {max_tokens: 16, temperature: 0}",
        'prompt: [{role: user, content: "Question {{ i }}"}]',
        "cases:",
    ]
    case = "  - {{id: q{0}, vars: {{i: {0}}}, expect: [{{contains: '{0}'}}]}}"
    lines += [case.format(i) for i in range(20)]
    small.write_text("\n".join(lines) + "\n")
    large = folder / "large.jsonl"
    with large.open("w") as out:
        for i in range(cases):
            line = {"id": f"q{i}", "input": [{"role": "user", "content": f"Q {i}"}], "ideal": "x"}
            out.write(json.dumps(line) + "\n")
    return small, large


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeats", type=int, default=9, help="runs of each command (median)")
    parser.add_argument("--cases", type=int, default=10_000, help="cases of the large suite")
    args = parser.parse_args()
    evalkit = [sys.executable, "-m", "evalkit"]
    print(f"machine: {os.cpu_count()} cores, {cpu_model()}, Python {platform.python_version()}")
    print(f"load average at the start: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(compile_evalkit())
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        small, large = write_suites(folder, args.cases)
        model = ["-m", "openai/gpt-3.5-turbo"]
        commands = {
            "python -c pass (baseline)": [sys.executable, "-c", "pass"],
            'python -c "import evalkit"': [sys.executable, "-c", "import evalkit"],
            "evalkit --help": [*evalkit, "--help"],
            "evalkit validate, 20 cases": [*evalkit, "validate", str(small)],
            f"evalkit validate, {args.cases:,} JSONL cases": [
                *evalkit,
                "validate",
                str(large),
                *model,
            ],
        }
        baseline = None
        for label, command in commands.items():
            wall = median_wall(command, args.repeats, folder)
            baseline = baseline or wall
            print(f"{label:<40} {wall:6.3f} s  ({wall / baseline:5.1f}x the bare interpreter)")
    print(f"load average at the end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
