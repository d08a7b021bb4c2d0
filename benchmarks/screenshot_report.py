"""Screenshot of an HTML report in headless Chromium, to see what a reader sees.

    python benchmarks/screenshot_report.py [RUN_DIR] [--png OUT.png] [--size 1400,3000]

With RUN_DIR, its report is rendered; without, a small demo run is made first against the
fake OpenAI server (`python -m fake_openai`, a child process on 127.0.0.1 stopped by
its PID): two models, two prompt variants, a streamed model (for time to first token),
cases that pass, fail and split the models. The page is opened from a file:// URL with the
network features of Chromium turned off, so the screenshot also shows the report needs
nothing from outside. Needs Debian's `chromium` (`apt-get install -y chromium`).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEMO_SUITE = """\
name: support-triage
description: Route tickets to a queue
models:
  - {id: openai/gpt-4, params: {stream: true}}
  - {id: openai/gpt-3.5-turbo, params: {max_tokens: 3}}
params: {temperature: 0, max_tokens: 64}
variants:
  terse: [{role: user, content: "Ticket: {{ ticket }}\\nOne word.\\nANSWER: {{ queue }}"}]
  polite: "You route support tickets.\\nTicket: {{ ticket }}\\nANSWER: {{ queue }}"
checks: [{finish_reason: stop}]
cases:
  - id: refund
    vars: {ticket: I want my money back, queue: billing}
    expect: [{equals: billing}]
  - id: crash
    vars: {ticket: The app crashes on start, queue: technical}
    expect: [{contains: technical}]
  - id: login
    vars: {ticket: I cannot log in, queue: account}
    expect: [{equals: account}]
  - id: escalate
    vars: {ticket: "Third time asking, nothing works", queue: "escalate to a human supervisor"}
    expect: [{contains: supervisor}]
  - id: spam
    vars: {ticket: "WIN A PRIZE <script>alert(1)</script>", queue: spam}
    expect: [{equals: junk}]
  - id: essay
    vars: {ticket: Explain your refund policy, queue: "ESSAY"}
    expect: [{contains: refund}]
  - id: shipping
    vars: {ticket: Where is my parcel, queue: shipping}
    expect: [{equals: shipping}]
  - id: invoice
    vars: {ticket: I need an invoice copy, queue: billing}
    expect: [{equals: billing}]
""".replace("ESSAY", " ".join(["Our refund policy covers every order within thirty days."] * 40))
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]


def demo_run(workdir: Path) -> Path:
    """A small real run against the fake server; returns its run directory."""
    from evalkit import RunSettings, load_suite, run_suite

    server = subprocess.Popen(
        [sys.executable, "-m", "fake_openai", "--port", "0", "--no-log"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline().strip()
        if not line.startswith("listening on http://127.0.0.1:"):
            raise RuntimeError(f"the fake server did not start: {line!r}")
        url = line.removeprefix("listening on ") + "/v1"
        suite = workdir / "support-triage.yaml"
        suite.write_text(textwrap.dedent(DEMO_SUITE), encoding="utf-8")
        settings = RunSettings(
            out=workdir / "runs",
            progress=False,
            retry_initial_s=0.01,
            cache=False,
            environ={"OPENAI_BASE_URL": url, "OPENAI_API_KEY": "sk-demo"},
        )
        return run_suite(load_suite(suite), settings).run_dir
    finally:
        os.kill(server.pid, signal.SIGTERM)
        server.wait(timeout=15)
        if server.stdout is not None:
            server.stdout.close()


def screenshot(html: Path, png: Path, size: str) -> None:
    """`chromium --headless --screenshot` of the page, with a throwaway profile."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("chromium not found: install it with `apt-get install -y chromium`")
    png.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="evalkit-chromium-") as profile:
        command = [
            chromium,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            f"--screenshot={png}",
            f"--window-size={size}",
            html.resolve().as_uri(),
        ]
        result = subprocess.run(command, capture_output=True, text=True, timeout=180)
    if result.returncode != 0 or not png.exists():
        raise SystemExit(f"chromium failed ({result.returncode}):\n{result.stderr[-2000:]}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("run_dir", nargs="?", type=Path, help="a run directory (default: a demo)")
    parser.add_argument("--png", type=Path, default=Path(tempfile.gettempdir()) / "report.png")
    parser.add_argument("--size", default="1400,3000", help="window WIDTH,HEIGHT in pixels")
    args = parser.parse_args(argv)

    from evalkit.report import write_reports

    with tempfile.TemporaryDirectory(prefix="evalkit-screenshot-") as scratch:
        workdir = Path(scratch)
        run_dir = args.run_dir or demo_run(workdir)
        (html,) = write_reports(run_dir, workdir / "report", formats=["html"])
        screenshot(html, args.png, args.size)
    print(f"screenshot: {args.png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
