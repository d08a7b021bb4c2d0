"""The public API is what we mean it to be, and nothing leaks into it by accident."""

import ast
import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import evalkit
import evalkit.errors

EXPORTED = {
    "batch_states",
    # suites: load, validate, render
    *("Case", "Check", "Endpoint", "Message", "ModelSpec", "Params", "Suite", "Variant"),
    *("load_suite", "check_suite", "Rendered", "Renderer", "CATALOG", "ModelInfo"),
    # runs: run, resume, dry run, the run's DataFrame
    *("RunSettings", "RunResult", "run_suite", "resume_run", "dry_run", "DryRun"),
    "SequentialSettings",
    *("ModelEstimate", "COLUMNS", "load_run", "summarize"),
    *("pass_at_k", "pass_hat_k", "reduce_samples"),
    # comparing, gating, reporting
    *("compare_runs", "RunComparison", "Gate", "write_reports"),
    *("GateRule", "GateOutcome", "parse_gate", "judge_gates"),
    # shards and merging them
    *("Shard", "ShardSize", "shard_of", "shard_sizes", "merge_runs", "Merged", "MergeError"),
    # the response cache
    *("cache_dir", "cache_stats", "clear_cache", "explain_cache"),
    # the error tree
    *("EvalkitError", "InputError", "SuiteError", "Problem", "TemplateError", "Unsendable"),
    *("ConfigError", "UnknownModel", "RunError"),
    "__version__",
}


def test_all_is_sorted() -> None:
    assert evalkit.__all__ == sorted(evalkit.__all__)


def test_all_is_what_we_mean_to_export() -> None:
    assert set(evalkit.__all__) == EXPORTED


def test_every_public_name_is_exported_and_exists() -> None:
    public = {name for name in dir(evalkit) if not name.startswith("_")}
    modules = {name for name in public if type(getattr(evalkit, name)).__name__ == "module"}
    assert public - modules == set(evalkit.__all__) - {"__version__"}
    for name in evalkit.__all__:
        assert hasattr(evalkit, name), name


def test_the_cli_uses_only_the_public_api_and_the_console() -> None:
    """`cli.py` imports `evalkit`, `evalkit.console` and `evalkit.errors`, nothing deeper,
    and every `evalkit.NAME` it uses is exported."""
    import evalkit.cli

    tree = ast.parse(Path(evalkit.cli.__file__).read_text(encoding="utf-8"))
    allowed = {"evalkit", "evalkit.console", "evalkit.errors"}
    used = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            used |= {a.name for a in node.names if a.name.split(".")[0] == "evalkit"}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "evalkit":
            if node.module == "evalkit":
                for alias in node.names:
                    submodule = f"evalkit.{alias.name}"
                    assert submodule in allowed or alias.name in evalkit.__all__, alias.name
                    used.add(submodule if submodule in allowed else "evalkit")
            else:
                used.add(str(node.module))
        elif (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "evalkit"
        ):
            assert node.attr in evalkit.__all__, f"evalkit.{node.attr} is not public"
    assert used <= allowed, used - allowed
    assert "evalkit" in used and "evalkit.console" in used


# exceptions that never reach the user: each is caught where it is raised and becomes a
# journal record, a run status, a TemplateError or a failed check (errors.py says which)
INTERNAL = {
    "ProviderError",
    "BudgetReached",
    "RenderLimit",
    "TooSlow",
    "TimedOut",
    "TooManyStuck",
    "NotAnImage",
}


def test_every_user_facing_error_is_in_the_drawn_tree() -> None:
    tree_doc = evalkit.errors.__doc__ or ""
    for info in pkgutil.walk_packages(evalkit.__path__, "evalkit."):
        if info.name == "evalkit.__main__":
            continue  # importing it runs the command
        module = importlib.import_module(info.name)
        for name, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ != info.name or not issubclass(cls, BaseException):
                continue
            if name.startswith("_"):
                continue  # private control flow inside one module
            if info.name == "evalkit.errors":
                assert issubclass(cls, evalkit.EvalkitError), name
                drawn = re.search(rf"^    (.*── )?{name} ", tree_doc, re.MULTILINE)
                assert drawn, f"{name} is not drawn in errors.py"
                assert cls.__dict__.get("__doc__"), f"{name} has no docstring of its own"
            else:
                assert name in INTERNAL, f"{info.name}.{name} belongs in errors.py"
                assert f"`{info.name.removeprefix('evalkit.')}.{name}`" in tree_doc or (
                    f"`{name}`" in tree_doc
                ), f"errors.py does not say why {name} stays internal"


HEAVY = ("httpx", "aiohttp", "pandas", "pyarrow", "matplotlib", "jsonschema", "tiktoken", "regex")


def test_import_and_help_load_no_heavy_library() -> None:
    """`import evalkit` and `evalkit --help` start fast: HTTP, data and chart libraries load
    when a command uses them."""
    import subprocess
    import sys

    probe = f"import sys\n{{}}\nprint('loaded:', *(m for m in {HEAVY!r} if m in sys.modules))"
    for code in (
        "import evalkit",
        "from evalkit.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass",
    ):
        out = subprocess.run(
            [sys.executable, "-c", probe.format(code)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert out.splitlines()[-1] == "loaded:", f"{code!r} imported {out.splitlines()[-1]}"
