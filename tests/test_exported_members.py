"""The public API is what we mean it to be, and nothing leaks into it by accident."""

import evalkit


def test_all_is_sorted() -> None:
    assert evalkit.__all__ == sorted(evalkit.__all__)


def test_every_public_name_is_exported_and_exists() -> None:
    public = {name for name in dir(evalkit) if not name.startswith("_")}
    modules = {name for name in public if type(getattr(evalkit, name)).__name__ == "module"}
    assert public - modules == set(evalkit.__all__) - {"__version__"}
    for name in evalkit.__all__:
        assert hasattr(evalkit, name), name


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
