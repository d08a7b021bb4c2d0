"""Which shard a case belongs to, so N CI jobs can each run 1/N of a suite.

The rule depends on the case id alone: inserting or removing a case moves no other case from
its shard (index ranges would shift every case after it). `evalkit merge` (records/merge.py)
puts the shards' run directories back together.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

from evalkit.errors import InputError, UsageError
from evalkit.suite.spec import Suite

_FORM = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")


def shard_of(case_id: str, count: int) -> int:
    """The shard (1..count) of a case: sha256 of its id's UTF-8, first 16 hex digits, mod N."""
    digest = hashlib.sha256(case_id.encode("utf-8")).hexdigest()
    return int(digest[:16], 16) % count + 1


@dataclass(frozen=True, order=True)
class Shard:
    """Shard `index` of `count` (1 ≤ index ≤ count), as `--shard I/N` writes it."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1:
            raise UsageError(f"shard {self}: the number of shards must be at least 1")
        if not 1 <= self.index <= self.count:
            raise UsageError(f"shard {self}: the shard index must be from 1 to {self.count}")

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    @classmethod
    def parse(cls, text: str) -> Shard:
        """`I/N` from `--shard` or `EVALKIT_SHARD`; a UsageError (exit 2) saying what is wrong."""
        found = _FORM.fullmatch(text)
        if found is None:
            raise UsageError(
                f"--shard {text!r} (or EVALKIT_SHARD): write I/N, shard I of N, e.g. 2/4"
            )
        index, count = int(found[1]), int(found[2])
        given = f"--shard {text!r} (or EVALKIT_SHARD)"
        if count < 1:
            raise UsageError(f"{given}: N, the number of shards, must be at least 1")
        if not 1 <= index <= count:
            raise UsageError(f"{given}: I must be from 1 to {count} (shard I of N)")
        return cls(index, count)

    @classmethod
    def of_manifest(cls, value: Any) -> Shard | None:
        """The shard a run's manifest records (None: the run covers the whole suite)."""
        if value is None:
            return None
        try:
            return cls(int(value["index"]), int(value["count"]))
        except (KeyError, TypeError, ValueError, UsageError):
            raise InputError(f"a manifest's shard {value!r} is not {{index, count}}") from None

    def as_manifest(self) -> dict[str, int]:
        return {"index": self.index, "count": self.count}

    def holds(self, case_id: str) -> bool:
        return shard_of(case_id, self.count) == self.index

    def cases(self, suite: Suite) -> list[int]:
        """The indices of the suite's cases in this shard, in the suite's order."""
        return [i for i, case in enumerate(suite.cases) if self.holds(case.key)]


@dataclass(frozen=True)
class ShardSize:
    """What one shard of a suite holds: its cases and its first-round requests."""

    shard: Shard
    cases: int
    requests: int


def shard_sizes(
    suite: Suite, count: int, models: int, samples: int | None = None
) -> list[ShardSize]:
    """Every shard's cases and requests (cases × variants × samples × models), 1 to `count`."""
    if count < 1:
        raise UsageError(f"{count} shards: the number of shards must be at least 1")
    cases = [0] * count
    for case in suite.cases:
        cases[shard_of(case.key, count) - 1] += 1
    per_case = len(suite.variant_prompts()) * (samples or suite.samples) * models
    return [ShardSize(Shard(i + 1, count), n, n * per_case) for i, n in enumerate(cases)]
