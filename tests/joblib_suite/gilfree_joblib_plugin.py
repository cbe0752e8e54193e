"""A pytest plugin that runs joblib's own test suite against the gilfree backend (issue 12).

joblib ships its tests in its wheel (``joblib.test``). Importing ``gilfree.joblib`` here, when
pytest loads the plugin and before any test module is collected, registers the ``"gilfree"``
backend. ``joblib/test/test_parallel.py`` builds its backend lists from
``joblib.parallel.BACKENDS`` when it is imported, so its parametrized tests pick gilfree up:

* ``ALL_VALID_BACKENDS``: ``None``, every registered name, then an instance of every backend
  class, so gilfree appears as ``gilfree`` and as an instance (id ``backend10`` in joblib 1.6);
* ``RETURN_GENERATOR_BACKENDS``: every registered backend except ``multiprocessing``;
* ``BACKENDS`` itself (``test_nested_loop``'s parent and child, ``test_dispatch_one_job``,
  ``test_error_in_task_iterator``).

``PROCESS_BACKENDS`` and ``PARALLEL_BACKENDS`` are hard-coded lists (``["multiprocessing",
"loky"]``, plus ``"threading"``). The ``@parametrize`` decorators read them while the module
is imported, so gilfree can be added only by rewriting the module. The tests parametrized over
those lists do not run against gilfree.

Besides registering the backend, the plugin:

* adds ``--gilfree-only``, which deselects every test that does not run on gilfree (tests with
  no parameter equal to ``"gilfree"`` and no ``GilfreeBackend`` instance). ``-k gilfree`` would
  miss the instances;
* registers joblib's markers (``thread_unsafe``, ``no_cover``) and shows warnings instead of
  raising them. gilfree's ``filterwarnings = ["error"]`` would fail the tests where joblib
  warns on purpose: a generator closed early warns "... tasks ... have been cancelled". Those
  tests fail under loky too. joblib does not run its suite with that setting;
* marks by test id, in ``EXPECTED``, the tests that cannot pass on gilfree, each
  ``xfail(strict=True)`` with its reason (so one that starts passing fails the run, and the
  list stays true).

Run it from the repository root with the interpreter of a virtual environment that has
gilfree, joblib, numpy and pytest-timeout::

    PYTHONPATH=tests/joblib_suite .venv-3.11/bin/python -m pytest -p gilfree_joblib_plugin \\
        --gilfree-only --pyargs joblib.test.test_parallel -p no:cacheprovider -q --timeout 60
"""

from __future__ import annotations

from typing import Any

import pytest

import gilfree.joblib  # registers the "gilfree" backend, before joblib's tests are collected

_NOT_REGISTERED_IN_LOKY = (
    "needs 'gilfree' registered inside loky's workers, which are fresh interpreters. joblib's "
    "registry is per process: only joblib's own backends, and the test module's "
    "back_compat_backend (registered when the module is imported), are known there. This is "
    "true of every third-party backend; Parallel(backend=GilfreeBackend()) works there"
)
_COMPAT = " (back_compat_backend is a LokyBackend subclass)"

#: ``module::test[id]`` -> why it cannot pass on gilfree.
EXPECTED: dict[str, str] = {
    "joblib.test.test_parallel::test_nested_loop[loky-gilfree]": _NOT_REGISTERED_IN_LOKY,
    "joblib.test.test_parallel::test_nested_loop[back_compat_backend-gilfree]": (
        _NOT_REGISTERED_IN_LOKY + _COMPAT
    ),
}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--gilfree-only",
        action="store_true",
        help="run only the tests parametrized with the gilfree backend (its name or instance)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "thread_unsafe: joblib's marker (not thread-safe)")
    config.addinivalue_line("markers", "no_cover: joblib's marker (not under coverage)")
    # Appended after the ini file's "error", so it wins: joblib's suite runs without errors.
    config.addinivalue_line("filterwarnings", "default")


def _is_gilfree(value: Any) -> bool:
    if isinstance(value, str):
        return value == gilfree.joblib.BACKEND_NAME
    return isinstance(value, gilfree.joblib.GilfreeBackend)


def _runs_on_gilfree(item: pytest.Item) -> bool:
    callspec = getattr(item, "callspec", None)
    return callspec is not None and any(_is_gilfree(v) for v in callspec.params.values())


def _test_id(item: pytest.Item) -> str:
    """``module::name[params]``: the same whichever virtual environment joblib is in."""
    module = getattr(item, "module", None)
    return f"{getattr(module, '__name__', '?')}::{item.name}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--gilfree-only"):
        deselected = [item for item in items if not _runs_on_gilfree(item)]
        if deselected:
            config.hook.pytest_deselected(items=deselected)
            items[:] = [item for item in items if _runs_on_gilfree(item)]
    for item in items:
        reason = EXPECTED.get(_test_id(item))
        if reason is not None:
            item.add_marker(pytest.mark.xfail(strict=True, reason=reason))
