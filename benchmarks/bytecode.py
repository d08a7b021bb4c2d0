"""Compile evalkit's bytecode before anything is timed.

A wheel pip installs has its modules compiled; an editable checkout compiles them on first
import and keeps them in `__pycache__`, unless `PYTHONDONTWRITEBYTECODE` is set (it is on the
machines these figures come from): then every `evalkit` process compiles its hundred modules
from source again, about 0.1 s that no installed evalkit pays and the baselines (libraries in
site-packages, compiled) never pay. `compileall` writes the files whatever that variable
says, and Python reads them either way.
"""

from __future__ import annotations

import compileall
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def compile_evalkit() -> str:
    """Compile `evalkit/` (quietly) and say so in one line for the benchmark's output."""
    compileall.compile_dir(ROOT / "evalkit", quiet=1)
    setting = os.environ.get("PYTHONDONTWRITEBYTECODE")
    return f"evalkit's bytecode compiled first (PYTHONDONTWRITEBYTECODE={setting or 'unset'})"
