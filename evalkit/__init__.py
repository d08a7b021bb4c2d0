"""evalkit: batch prompt evaluation and model comparison for OpenAI-compatible APIs.

Every name below loads its module when first used (PEP 562), so `import evalkit` and
`evalkit --help` import no suite models, HTTP client, pandas or plotting library.
"""

import typing as _typing
from importlib import import_module as _import_module

from evalkit.errors import (
    ConfigError,
    EvalkitError,
    InputError,
    MergeError,
    Problem,
    RunError,
    SuiteError,
    TemplateError,
    UnknownModel,
    Unsendable,
)

if _typing.TYPE_CHECKING:
    from evalkit.analysis.compare import Gate, RunComparison, compare_runs
    from evalkit.analysis.gates import GateOutcome, judge_gates
    from evalkit.analysis.summary import summarize
    from evalkit.batch.status import batch_states
    from evalkit.execution.runner import dry_run, resume_run, run_suite
    from evalkit.execution.sampling import pass_at_k, pass_hat_k, reduce_samples
    from evalkit.execution.sequential import SequentialSettings
    from evalkit.execution.settings import RunResult, RunSettings
    from evalkit.models.catalog import CATALOG, ModelInfo
    from evalkit.planning.estimate import DryRun, ModelEstimate
    from evalkit.planning.shard import Shard, ShardSize, shard_of, shard_sizes
    from evalkit.planning.validate import check_suite
    from evalkit.records.cache import cache_dir
    from evalkit.records.cache import clear as clear_cache
    from evalkit.records.cache import explain as explain_cache
    from evalkit.records.cache import stats as cache_stats
    from evalkit.records.frame import load_run
    from evalkit.records.merge import Merged, merge_runs
    from evalkit.records.rows import COLUMNS
    from evalkit.report import write_reports
    from evalkit.suite.checkspec import Check
    from evalkit.suite.endpoints import Endpoint, ModelSpec
    from evalkit.suite.gates import GateRule, parse_gate
    from evalkit.suite.load import load_suite
    from evalkit.suite.params import Params
    from evalkit.suite.render import Rendered, Renderer
    from evalkit.suite.spec import Case, Message, Suite, Variant

    __version__: str

# public name -> (module, name in it)
_LAZY: dict[str, tuple[str, str]] = {
    **{n: ("evalkit.analysis.compare", n) for n in ("Gate", "RunComparison", "compare_runs")},
    **{n: ("evalkit.analysis.gates", n) for n in ("GateOutcome", "judge_gates")},
    "summarize": ("evalkit.analysis.summary", "summarize"),
    **{n: ("evalkit.execution.runner", n) for n in ("dry_run", "resume_run", "run_suite")},
    **{n: ("evalkit.execution.sampling", n) for n in ("pass_at_k", "pass_hat_k", "reduce_samples")},
    **{n: ("evalkit.execution.settings", n) for n in ("RunResult", "RunSettings")},
    "SequentialSettings": ("evalkit.execution.sequential", "SequentialSettings"),
    **{n: ("evalkit.models.catalog", n) for n in ("CATALOG", "ModelInfo")},
    **{n: ("evalkit.planning.estimate", n) for n in ("DryRun", "ModelEstimate")},
    **{n: ("evalkit.planning.shard", n) for n in ("Shard", "ShardSize", "shard_of", "shard_sizes")},
    "check_suite": ("evalkit.planning.validate", "check_suite"),
    "cache_dir": ("evalkit.records.cache", "cache_dir"),
    "clear_cache": ("evalkit.records.cache", "clear"),
    "explain_cache": ("evalkit.records.cache", "explain"),
    "cache_stats": ("evalkit.records.cache", "stats"),
    "load_run": ("evalkit.records.frame", "load_run"),
    "COLUMNS": ("evalkit.records.rows", "COLUMNS"),
    **{n: ("evalkit.records.merge", n) for n in ("Merged", "merge_runs")},
    "batch_states": ("evalkit.batch.status", "batch_states"),
    "write_reports": ("evalkit.report", "write_reports"),
    "Check": ("evalkit.suite.checkspec", "Check"),
    **{n: ("evalkit.suite.endpoints", n) for n in ("Endpoint", "ModelSpec")},
    **{n: ("evalkit.suite.gates", n) for n in ("GateRule", "parse_gate")},
    "Params": ("evalkit.suite.params", "Params"),
    "load_suite": ("evalkit.suite.load", "load_suite"),
    **{n: ("evalkit.suite.render", n) for n in ("Rendered", "Renderer")},
    **{n: ("evalkit.suite.spec", n) for n in ("Case", "Message", "Suite", "Variant")},
}


def __getattr__(name: str) -> object:
    if name == "__version__":
        from importlib.metadata import version

        value: object = version("evalkit")
    elif name in _LAZY:
        module, attribute = _LAZY[name]
        value = getattr(_import_module(module), attribute)
    else:
        raise AttributeError(f"module 'evalkit' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = [
    "CATALOG",
    "COLUMNS",
    "Case",
    "Check",
    "ConfigError",
    "DryRun",
    "Endpoint",
    "EvalkitError",
    "Gate",
    "GateOutcome",
    "GateRule",
    "InputError",
    "MergeError",
    "Merged",
    "Message",
    "ModelEstimate",
    "ModelInfo",
    "ModelSpec",
    "Params",
    "Problem",
    "Rendered",
    "Renderer",
    "RunComparison",
    "RunError",
    "RunResult",
    "RunSettings",
    "SequentialSettings",
    "Shard",
    "ShardSize",
    "Suite",
    "SuiteError",
    "TemplateError",
    "UnknownModel",
    "Unsendable",
    "Variant",
    "__version__",
    "batch_states",
    "cache_dir",
    "cache_stats",
    "check_suite",
    "clear_cache",
    "compare_runs",
    "dry_run",
    "explain_cache",
    "judge_gates",
    "load_run",
    "load_suite",
    "merge_runs",
    "parse_gate",
    "pass_at_k",
    "pass_hat_k",
    "reduce_samples",
    "resume_run",
    "run_suite",
    "shard_of",
    "shard_sizes",
    "summarize",
    "write_reports",
]
