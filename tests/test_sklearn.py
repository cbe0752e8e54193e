"""scikit-learn's ``n_jobs`` on the gilfree joblib backend: the same results as a sequential run.

Each estimator runs once with ``n_jobs=1`` (joblib's sequential backend) and once with
``n_jobs=2`` inside ``parallel_config(backend="gilfree")``, on the same data and seeds.
"""

from __future__ import annotations

import textwrap

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")
joblib = pytest.importorskip("joblib")

from sklearn.datasets import make_classification  # noqa: E402
from sklearn.ensemble import RandomForestClassifier  # noqa: E402
from sklearn.experimental import enable_halving_search_cv  # noqa: E402, F401
from sklearn.linear_model import LogisticRegression, RidgeClassifier  # noqa: E402
from sklearn.model_selection import (  # noqa: E402
    GridSearchCV,
    HalvingGridSearchCV,
    cross_val_score,
)

import gilfree.joblib  # noqa: E402, F401 - registers the backend
from support.processes import run_script  # noqa: E402

pytestmark = [pytest.mark.gilfree_only, pytest.mark.process_only, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def data():
    return make_classification(n_samples=600, n_features=20, n_informative=8, random_state=0)


def on_gilfree(fit):
    """``fit()`` run sequentially, then on gilfree with 2 workers: both results."""
    sequential = fit(1)
    with joblib.parallel_config(backend="gilfree"):
        parallel = fit(2)
    return sequential, parallel


def test_grid_search(data):
    x, y = data

    def fit(n_jobs):
        search = GridSearchCV(RidgeClassifier(), {"alpha": [0.1, 1, 10, 100]}, cv=5, n_jobs=n_jobs)
        return search.fit(x, y)

    sequential, parallel = on_gilfree(fit)
    assert parallel.best_params_ == sequential.best_params_
    for key in ["mean_test_score", "std_test_score", "rank_test_score"]:
        np.testing.assert_array_equal(parallel.cv_results_[key], sequential.cv_results_[key])


def test_halving_grid_search_calls_parallel_several_times(data):
    x, y = data

    def fit(n_jobs):
        grid = {"max_depth": [2, 4, 8, None], "min_samples_leaf": [1, 5]}
        search = HalvingGridSearchCV(
            RandomForestClassifier(n_estimators=10, random_state=0),
            grid,
            cv=3,
            factor=2,
            random_state=0,
            n_jobs=n_jobs,
        )
        return search.fit(x, y)

    sequential, parallel = on_gilfree(fit)
    assert parallel.n_iterations_ == sequential.n_iterations_ > 1  # one Parallel call each
    assert parallel.best_params_ == sequential.best_params_
    np.testing.assert_array_equal(
        parallel.cv_results_["mean_test_score"], sequential.cv_results_["mean_test_score"]
    )


def test_cross_val_score(data):
    x, y = data
    sequential, parallel = on_gilfree(
        lambda n_jobs: cross_val_score(LogisticRegression(max_iter=500), x, y, cv=5, n_jobs=n_jobs)
    )
    np.testing.assert_array_equal(parallel, sequential)


def test_random_forest_fit_and_predict_proba(data):
    x, y = data

    def fit(n_jobs):
        forest = RandomForestClassifier(n_estimators=40, random_state=0, n_jobs=n_jobs)
        return forest.fit(x, y).predict_proba(x)

    sequential, parallel = on_gilfree(fit)
    np.testing.assert_array_equal(parallel, sequential)


PIPELINE_SCRIPT = textwrap.dedent(
    """
    import os
    import joblib
    import numpy as np
    import gilfree.joblib
    from sklearn.base import BaseEstimator, TransformerMixin
    from sklearn.datasets import make_classification
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import Pipeline


    class CenterAndLog(BaseEstimator, TransformerMixin):
        '''A transformer of this script's own: workers must get it from __main__.'''

        def fit(self, x, y=None):
            self.center_ = x.mean(axis=0)
            self.fitted_in_ = os.getpid()
            return self

        def transform(self, x):
            return np.log1p(np.abs(x - self.center_))


    def score(n_jobs):
        pipeline = Pipeline([("features", CenterAndLog()), ("model", LogisticRegression())])
        return cross_val_score(pipeline, x, y, cv=4, n_jobs=n_jobs)


    if __name__ == "__main__":
        x, y = make_classification(n_samples=400, n_features=10, random_state=1)
        sequential = score(1)
        with joblib.parallel_config(backend="gilfree"):
            parallel = score(2)
        assert np.array_equal(parallel, sequential), (parallel, sequential)
        print("same scores", len(parallel))
    """
)


def test_a_pipeline_with_a_transformer_of_the_main_script(tmp_path):
    returncode, stdout, stderr = run_script(tmp_path, PIPELINE_SCRIPT)
    assert returncode == 0, stderr
    assert stdout.strip() == "same scores 4"
