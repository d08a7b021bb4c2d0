"""One batch's state, the faults it can be scripted with, and the shapes the API shows.

Why apart from the lifecycle (``batches``): these are plain data with their JSON forms, the
``Batch`` object and the output-file line, which a reader checks against the official
description without reading how time moves a batch on.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fake_openai.batch_input import InputLine

DAY = 24 * 3600
_FAULT_KEYS = frozenset(
    {
        "seconds",
        "fail_validation",
        "invalid_lines",
        "expire_after",
        "stuck_after",
        "error_rate",
        "truncate_output",
        "extra_custom_id",
    }
)


@dataclass(frozen=True)
class BatchFault:
    """How one batch misbehaves (module docstring); the default behaves."""

    seconds: float | None = None
    fail_validation: bool = False
    expire_after: float | None = None
    stuck_after: float | None = None
    error_rate: float = 0.0
    truncate_output: bool = False
    extra_custom_id: str | None = None
    invalid_lines: tuple[int, ...] = ()  # fail validation naming these 1-based lines

    @classmethod
    def parse(cls, spec: Any) -> BatchFault:
        """Validate eagerly, so a typo fails at scripting time, not mid-batch."""
        if spec == "ok":
            return cls()
        if not isinstance(spec, Mapping):
            raise ValueError(f"invalid batch fault: {spec!r}")
        unknown = set(spec) - _FAULT_KEYS
        if unknown:
            raise ValueError(f"unknown batch fault keys {sorted(unknown)} in {spec!r}")
        for key in ("expire_after", "stuck_after", "error_rate", "seconds"):
            value = spec.get(key)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"invalid {key} in {spec!r}")
            if key != "seconds" and value > 1:
                raise ValueError(f"{key} is a fraction in [0, 1] in {spec!r}")
        if spec.get("expire_after") is not None and spec.get("stuck_after") is not None:
            raise ValueError(f"give expire_after or stuck_after, not both: {spec!r}")
        extra = spec.get("extra_custom_id")
        invalid = spec.get("invalid_lines", [])
        if not isinstance(invalid, list) or not all(
            isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in invalid
        ):
            raise ValueError(f"invalid_lines is a list of line numbers (from 1) in {spec!r}")
        return cls(
            invalid_lines=tuple(invalid),
            seconds=spec.get("seconds"),
            fail_validation=bool(spec.get("fail_validation", False)),
            expire_after=spec.get("expire_after"),
            stuck_after=spec.get("stuck_after"),
            error_rate=float(spec.get("error_rate", 0.0)),
            truncate_output=bool(spec.get("truncate_output", False)),
            extra_custom_id=None if extra is None else str(extra),
        )


@dataclass
class Done:
    """One line that ran: its output-file line, and whether it answered 200."""

    ok: bool
    record: dict[str, Any]


@dataclass
class Batch:
    """One batch's state; ``advance`` moves it to the present."""

    id: str
    request: dict[str, Any]
    lines: list[InputLine]
    model: str | None
    errors: list[Any]
    fault: BatchFault
    seconds: float
    started: float = field(default_factory=time.monotonic)
    created: float = field(default_factory=time.time)
    status: str = "validating"
    stamps: dict[str, int] = field(default_factory=dict)
    done: list[Done] = field(default_factory=list)
    failing: frozenset[int] = frozenset()
    cancel_offset: float | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    usage: dict[str, int] = field(default_factory=lambda: {"input": 0, "output": 0})

    def _stamp(self, name: str, offset: float) -> None:
        self.stamps.setdefault(name, int(self.created + offset))

    def object(self) -> dict[str, Any]:
        """The ``Batch`` object the API returns."""
        running = self.status not in ("validating", "failed")
        ok = sum(d.ok for d in self.done)
        failed = len(self.done) - ok
        if self.status in ("expired", "cancelled"):
            failed = len(self.lines) - ok
        return {
            "id": self.id,
            "object": "batch",
            "endpoint": self.request["endpoint"],
            "model": self.model,
            "errors": {"object": "list", "data": self.errors} if self.status == "failed" else None,
            "input_file_id": self.request["input_file_id"],
            "completion_window": self.request["completion_window"],
            "status": self.status,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": int(self.created),
            "in_progress_at": self.stamps.get("in_progress"),
            "expires_at": int(self.created) + DAY,
            **{
                f"{name}_at": self.stamps.get(name)
                for name in (
                    "finalizing",
                    "completed",
                    "failed",
                    "expired",
                    "cancelling",
                    "cancelled",
                )
            },
            "request_counts": {
                "total": len(self.lines) if running else 0,
                "completed": ok,
                "failed": failed,
            },
            "usage": {
                "input_tokens": self.usage["input"],
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": self.usage["output"],
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": self.usage["input"] + self.usage["output"],
            },
            "metadata": self.request.get("metadata"),
        }


def line_id() -> str:
    return f"batch_req_{uuid.uuid4().hex[:24]}"


def output_line(custom_id: str, status: int, request_id: str, body: Any) -> dict[str, Any]:
    """One output-file line: the HTTP answer the request got, ``error`` null."""
    response = {"status_code": status, "request_id": request_id, "body": body}
    return {"id": line_id(), "custom_id": custom_id, "response": response, "error": None}
