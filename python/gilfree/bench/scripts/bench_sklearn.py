"""The main script of the bench's scikit-learn rows: numpy, pandas and the scikit-learn modules a
grid-search script imports, at its top, as users' scripts do.

The grid-search rows of issue 12 run in interpreters started on this script, so a worker that
loads the user's main script (gilfree's template process) loads scikit-learn there once, and
one that does not (loky) imports it when its first batch arrives: each pays what it pays for a
user. The measuring code is imported only under the ``__main__`` guard.

Run by the bench: ``python bench_sklearn.py REQUEST.json`` (see ``gilfree.bench.child``).
"""

import numpy as np  # noqa: F401 - what the script's users import
import pandas as pd  # noqa: F401
from sklearn.linear_model import RidgeClassifier  # noqa: F401
from sklearn.model_selection import GridSearchCV  # noqa: F401

if __name__ == "__main__":
    from gilfree.bench.child import main

    raise SystemExit(main())
