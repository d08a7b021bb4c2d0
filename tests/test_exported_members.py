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
