"""evalkit: batch prompt evaluation and model comparison for OpenAI-compatible APIs."""

import typing as _typing
from importlib import import_module as _import_module
from importlib.metadata import version as _version

from evalkit.cache import cache_dir
from evalkit.cache import clear as clear_cache
from evalkit.cache import explain as explain_cache
from evalkit.cache import stats as cache_stats
from evalkit.catalog import CATALOG, ModelInfo
from evalkit.checkspec import Check
from evalkit.errors import (
    ConfigError,
    EvalkitError,
    InputError,
    Problem,
    RunError,
    SuiteError,
    TemplateError,
    UnknownModel,
    Unsendable,
)
from evalkit.estimate import DryRun, ModelEstimate
from evalkit.frame import COLUMNS, load_run
from evalkit.load import load_suite
from evalkit.render import Rendered, Renderer
from evalkit.runner import RunResult, RunSettings, dry_run, resume_run, run_suite
from evalkit.sampling import pass_at_k, pass_hat_k, reduce_samples
from evalkit.suite import Case, Endpoint, Message, ModelSpec, Params, Suite, Variant
from evalkit.summary import summarize
from evalkit.validate import check_suite

if _typing.TYPE_CHECKING:
    from evalkit.compare import Gate, RunComparison, compare_runs
    from evalkit.report import write_reports

__version__ = _version("evalkit")

# comparing and reporting load when first used (PEP 562): `import evalkit` stays light
_LAZY = {
    "Gate": "evalkit.compare",
    "RunComparison": "evalkit.compare",
    "compare_runs": "evalkit.compare",
    "write_reports": "evalkit.report",
}


def __getattr__(name: str) -> object:
    if name not in _LAZY:
        raise AttributeError(f"module 'evalkit' has no attribute {name!r}")
    value = getattr(_import_module(_LAZY[name]), name)
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
    "InputError",
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
    "Suite",
    "SuiteError",
    "TemplateError",
    "UnknownModel",
    "Unsendable",
    "Variant",
    "__version__",
    "cache_dir",
    "cache_stats",
    "check_suite",
    "clear_cache",
    "compare_runs",
    "dry_run",
    "explain_cache",
    "load_run",
    "load_suite",
    "pass_at_k",
    "pass_hat_k",
    "reduce_samples",
    "resume_run",
    "run_suite",
    "summarize",
    "write_reports",
]
