"""The command that starts a fresh interpreter like this one: the same executable and the same
interpreter flags (``-O``, ``-W``, ``-X``, ``-E``...), as multiprocessing's spawn gives its
children, so that a worker runs asserts, filters warnings and honours ``-X`` options as the
script that started it does."""

from __future__ import annotations

import sys


def python_command(code: str, *args: str) -> list[str]:
    """``python <this interpreter's flags> -c code args...``."""
    import subprocess  # here: importing gilfree does not need it

    flags: list[str] = subprocess._args_from_interpreter_flags()  # type: ignore[attr-defined]  # noqa: SLF001 - multiprocessing's own
    return [sys.executable, *flags, "-c", code, *args]
