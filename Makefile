# gilfree: `make demo` (build, seed workloads, benchmark table) and `make test` (everything).
SHELL := /bin/bash
PYENV_ROOT ?= $(shell pyenv root 2>/dev/null || echo $(HOME)/.pyenv)
# The interpreters the test suite runs under.
TEST_PYTHONS ?= 3.11 3.13
DEMO_PYTHON ?= 3.11
python_for = $(or $(firstword $(wildcard $(PYENV_ROOT)/versions/$(1).*/bin/python3)),$(shell command -v python$(1)),$(error no CPython $(1) found (pyenv or python$(1) on PATH)))
SOURCES := pyproject.toml Cargo.toml $(shell find crates python -name '*.rs' -o -name '*.py' -o -name '*.toml' 2>/dev/null)

.PHONY: help demo test test-rust test-python test-joblib-suite test-clusters bench lint docs clean
help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

.venv-%/installed: $(SOURCES)
	rm -rf .venv-$*
	$(call python_for,$*) -m venv .venv-$*
	.venv-$*/bin/python -m pip install -q --upgrade pip
	.venv-$*/bin/python -m pip install -q '.[test]'
	touch $@

.venv-%/bench-installed: .venv-%/installed
	.venv-$*/bin/python -m pip install -q '.[bench]'
	touch $@

demo: .venv-$(DEMO_PYTHON)/bench-installed ## build, run the seed workloads, then the benchmark table (and bench.png) against the stdlib
	.venv-$(DEMO_PYTHON)/bin/python -m gilfree seed --stdlib-echo
	.venv-$(DEMO_PYTHON)/bin/python -m gilfree bench --plot bench.png

test: test-rust test-python test-joblib-suite test-clusters ## every test: cargo tests (with the multi-process stress test), pytest on each Python, joblib's own suite on gilfree, the executor's conformance on Dask and Ray

test-rust: ## cargo tests of the core crate, in release mode (the stress test is heavy)
	cargo test --release -p gilfree-core

test-python: $(foreach version,$(TEST_PYTHONS),.venv-$(version)/installed) ## pytest under each interpreter, against worker processes then threads
	@for version in $(TEST_PYTHONS); do \
		echo "== pytest under CPython $$version =="; \
		.venv-$$version/bin/python -m pytest -q -p no:cacheprovider || exit 1; \
		echo "== pytest under CPython $$version, backend=\"thread\" (GILFREE_TEST_IMPL=thread) =="; \
		GILFREE_TEST_IMPL=thread .venv-$$version/bin/python -m pytest -q -p no:cacheprovider || exit 1; \
	done

test-joblib-suite: $(foreach version,$(TEST_PYTHONS),.venv-$(version)/installed) ## joblib's own test_parallel.py against the gilfree backend (tests/joblib_suite)
	@for version in $(TEST_PYTHONS); do \
		echo "== joblib's test_parallel on the gilfree backend, CPython $$version =="; \
		PYTHONPATH=tests/joblib_suite .venv-$$version/bin/python -m pytest -p gilfree_joblib_plugin \
			--gilfree-only --pyargs joblib.test.test_parallel -p no:cacheprovider -q --timeout 60 -rxs \
			|| exit 1; \
	done

# The executor's conformance tests, run on a cluster of two workers of each engine (see
# tests/support/clusters.py), and Ray's own tests, which need a Ray session of their own.
CLUSTER_TESTS := tests/test_executor_api.py tests/test_value_types.py tests/test_clusters.py

test-clusters: $(foreach version,$(TEST_PYTHONS),.venv-$(version)/installed) ## the executor conformance tests on Dask and on Ray (GILFREE_TEST_IMPL=dask, ray), then Ray's own tests
	@for version in $(TEST_PYTHONS); do \
		echo "== executor conformance on Dask, CPython $$version (GILFREE_TEST_IMPL=dask) =="; \
		GILFREE_TEST_IMPL=dask .venv-$$version/bin/python -m pytest -q -p no:cacheprovider $(CLUSTER_TESTS) || exit 1; \
		echo "== executor conformance and Ray's tests on Ray, CPython $$version (GILFREE_TEST_IMPL=ray) =="; \
		GILFREE_TEST_IMPL=ray .venv-$$version/bin/python -m pytest -q -p no:cacheprovider $(CLUSTER_TESTS) tests/test_ray.py || exit 1; \
	done

bench: .venv-$(DEMO_PYTHON)/bench-installed ## only the benchmark table, with loky and mpire too
	.venv-$(DEMO_PYTHON)/bin/python -m gilfree bench --contenders gilfree,ppe,pool,loky,mpire --plot bench.png

.venv-%/lint-installed: .venv-%/installed
	.venv-$*/bin/python -m pip install -q --group lint
	touch $@

LINT_VENV := .venv-$(DEMO_PYTHON)

.venv-%/docs-installed: .venv-%/installed
	.venv-$*/bin/python -m pip install -q --group docs
	touch $@

docs: $(LINT_VENV)/docs-installed ## the documentation site (mkdocs-material, API reference from the docstrings) into site/, strictly: any warning fails
	NO_MKDOCS_2_WARNING=1 $(LINT_VENV)/bin/mkdocs build --strict --site-dir site

lint: $(LINT_VENV)/lint-installed docs ## rustfmt, clippy (pedantic; warnings are errors), the crates' docs (warnings are errors), ruff, mypy --strict (and the API's typing checks, tests/typing), stubtest of _core, the import layers, the docs site built strictly
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --document-private-items
	$(LINT_VENV)/bin/ruff check python tests
	$(LINT_VENV)/bin/ruff format --check python tests
	$(LINT_VENV)/bin/mypy
	$(LINT_VENV)/bin/mypy --strict --warn-unused-ignores tests/typing
	$(LINT_VENV)/bin/python -m mypy.stubtest gilfree._core --mypy-config-file pyproject.toml
	cd python && ../$(LINT_VENV)/bin/lint-imports ../pyproject.toml

clean: ## remove build outputs and virtual environments
	rm -rf target .venv-* python/gilfree/*.so site
