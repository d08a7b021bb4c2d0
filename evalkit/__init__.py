"""evalkit: batch prompt evaluation and model comparison for OpenAI-compatible APIs."""

from evalkit.catalog import CATALOG, ModelInfo
from evalkit.checkspec import Check
from evalkit.errors import ConfigError, EvalkitError, InputError, Problem, RunError, SuiteError
from evalkit.load import load_suite
from evalkit.render import Rendered, Renderer, TemplateError
from evalkit.suite import Case, Endpoint, Message, ModelSpec, Params, Suite, Variant
from evalkit.validate import check_suite

__version__ = "0.1.0"

__all__ = [
    "CATALOG",
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
    "Suite",
    "SuiteError",
    "TemplateError",
    "Variant",
    "__version__",
    "check_suite",
    "load_suite",
]
