"""The bench's main scripts, and the task functions of the one this interpreter runs.

Each measurement runs in a fresh interpreter started on one of the scripts in
``gilfree/bench/scripts``: ``numpy_pandas`` (imports numpy and pandas, like a user's data script;
most rows), ``sklearn`` (numpy, pandas and scikit-learn's grid search: the grid-search rows) or
``stdlib`` (imports only ``concurrent.futures.ProcessPoolExecutor``). The
workloads take their task functions from that script, through `tasks`, so workers resolve them in
the main script they load, as they do for a user.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import ModuleType

SCRIPT_FILES = {
    "numpy_pandas": "bench_numpy_pandas.py",
    "sklearn": "bench_sklearn.py",
    "stdlib": "bench_stdlib.py",
}
#: The modules each script imports at its top (the rows on a script are skipped without them).
SCRIPT_REQUIRES = {
    "numpy_pandas": ("numpy", "pandas"),
    "sklearn": ("numpy", "pandas", "sklearn"),
    "stdlib": (),
}
#: What each script imports at its top, as the table's notes say it.
SCRIPT_IMPORTS = {
    "numpy_pandas": "numpy and pandas",
    "sklearn": "numpy, pandas and scikit-learn's GridSearchCV and RidgeClassifier",
    "stdlib": "only concurrent.futures' ProcessPoolExecutor",
}


def script_path(name: str) -> Path:
    """The path of the main script ``name`` (a key of `SCRIPT_FILES`)."""
    return Path(__file__).with_name("scripts") / SCRIPT_FILES[name]


def tasks() -> ModuleType:
    """The running main script, whose top-level functions are the tasks (``noop``, ``fib``...).

    Raises RuntimeError outside an interpreter started on one of the bench's scripts.
    """
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if main is None or path is None or Path(path).name not in SCRIPT_FILES.values():
        raise RuntimeError(
            "the bench's workloads run only in an interpreter started on one of "
            f"its main scripts ({', '.join(SCRIPT_FILES.values())})"
        )
    return main
