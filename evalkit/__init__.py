"""evalkit: batch prompt evaluation and model comparison for OpenAI-compatible APIs."""

from importlib.metadata import version as _version

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
from evalkit.frame import COLUMNS, load_run
from evalkit.load import load_suite
from evalkit.render import Rendered, Renderer
from evalkit.runner import RunResult, RunSettings, run_suite
from evalkit.sampling import pass_at_k, pass_hat_k, reduce_samples
from evalkit.suite import Case, Endpoint, Message, ModelSpec, Params, Suite, Variant
from evalkit.summary import summarize
from evalkit.validate import check_suite

__version__ = _version("evalkit")

__all__ = [
    "CATALOG",
    "COLUMNS",
    "Case",
    "Check",
    "ConfigError",
    "Endpoint",
    "EvalkitError",
    "InputError",
    "Message",
    "ModelInfo",
    "ModelSpec",
    "Params",
    "Problem",
    "Rendered",
    "Renderer",
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
    "check_suite",
    "load_run",
    "load_suite",
    "pass_at_k",
    "pass_hat_k",
    "reduce_samples",
    "run_suite",
    "summarize",
]
