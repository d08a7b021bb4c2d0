"""``python -m fake_openai``: serve the fake from its own process (benchmarks, manual runs).

Why a process: a benchmark must not share an interpreter (or a GIL) with the client it times.
The first stdout line is ``listening on http://127.0.0.1:PORT``; SIGTERM or SIGINT stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence

from fake_openai.server import FakeOpenAI


def _model_latency(spec: str) -> tuple[str, float]:
    model, sep, ms = spec.rpartition("=")
    if not sep or not model:
        raise argparse.ArgumentTypeError(f"expected MODEL=MS, got {spec!r}")
    try:
        return model, float(ms)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MODEL=MS, got {spec!r}") from None


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m fake_openai",
        description="Fake OpenAI-compatible server on 127.0.0.1 for tests and benchmarks.",
    )
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="delay before each answer")
    parser.add_argument(
        "--model-latency",
        type=_model_latency,
        action="append",
        default=[],
        metavar="MODEL=MS",
        help="per-model latency override (repeatable)",
    )
    parser.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY'")
    parser.add_argument("--rate-429", type=float, default=0.0, help="fraction answered with 429")
    parser.add_argument("--seed", type=int, default=0, help="seed for --rate-429")
    parser.add_argument(
        "--no-log", action="store_true", help="do not store requests, only count them"
    )
    parser.add_argument(
        "--model", action="append", default=None, help="id listed by /v1/models (repeatable)"
    )
    parser.add_argument(
        "--batch-seconds",
        type=float,
        default=0.5,
        help="how long a batch takes from validating to completed (default 0.5)",
    )
    return parser.parse_args(argv)


async def _serve_cli(args: argparse.Namespace) -> None:
    server = FakeOpenAI(
        latency_ms=args.latency_ms,
        model_latency_ms=dict(args.model_latency),
        api_key=args.api_key,
        rate_429=args.rate_429,
        seed=args.seed,
        record=not args.no_log,
        port=args.port,
        models=args.model or ("fake-model",),
        batch_seconds=args.batch_seconds,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await server.start_async()
    try:
        print(f"listening on {server.base_url}", flush=True)
        await stop.wait()
    finally:
        await server.stop_async()


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until SIGTERM/SIGINT; the first stdout line tells the port."""
    args = _parse_args(argv)
    if not 0.0 <= args.rate_429 <= 1.0:
        print("--rate-429 must be in [0, 1]", file=sys.stderr)
        return 2
    if args.batch_seconds <= 0:
        print("--batch-seconds must be > 0", file=sys.stderr)
        return 2
    asyncio.run(_serve_cli(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
