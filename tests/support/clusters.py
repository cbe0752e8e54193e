"""The clusters that ``GILFREE_TEST_IMPL=dask`` and ``GILFREE_TEST_IMPL=ray`` run the executor
conformance tests on: one per session, two single-threaded workers on this machine, started at
the first use and stopped at the end of the session (before the leak check).

A Dask cluster is started with ``allowed-failures`` 0, so a task whose worker dies is not handed
to another worker by the scheduler: ``retries=`` decides, as it does on gilfree's own workers.
"""

from __future__ import annotations

import os

from support.limits import TESTS_DIRECTORY

#: Workers (Dask worker processes, Ray CPUs) of the cluster under test.
WORKERS = 2

_running: dict[str, object] = {}


def dask_client():
    """The session's Dask client, its ``LocalCluster`` started at the first call."""
    if "dask" not in _running:
        import dask
        import distributed

        with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
            cluster = distributed.LocalCluster(
                n_workers=WORKERS, threads_per_worker=1, processes=True, dashboard_address=":0"
            )
        _running["dask"] = (distributed.Client(cluster), cluster)
    client, _cluster = _running["dask"]
    return client


def ray_session():
    """Connects this process to the session's Ray (a local one of ``WORKERS`` CPUs) once."""
    if "ray" not in _running:
        import ray

        # Ray's workers start afresh, from its raylet, which takes this process's environment:
        # the tests' folder on their path lets them import the tasks (``support.tasks``).
        previous = os.environ.get("PYTHONPATH")
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [TESTS_DIRECTORY, previous]))
        try:
            ray.init(num_cpus=WORKERS, include_dashboard=False, log_to_driver=False)
        finally:
            if previous is None:
                del os.environ["PYTHONPATH"]
            else:
                os.environ["PYTHONPATH"] = previous
        _running["ray"] = ray


def executor(impl, max_workers=None, **options):
    """A cluster executor of ``impl`` (``"dask"`` or ``"ray"``) on the session's cluster."""
    if impl == "dask":
        from gilfree.dask import DaskExecutor

        return DaskExecutor(dask_client(), max_workers=max_workers, **options)
    ray_session()
    from gilfree.ray import RayExecutor

    return RayExecutor(max_workers=max_workers, **options)


def pool(impl, processes=None, **options):
    """A cluster pool of ``impl`` on the session's cluster."""
    if impl == "dask":
        from gilfree.dask import Pool

        return Pool(dask_client(), processes, **options)
    ray_session()
    from gilfree.ray import Pool

    return Pool(None, processes, **options)


_EXIT_WITH_CALLS_OUT = """
import sys
import time

import gilfree


def slow(x):
    time.sleep(1)
    return x


if __name__ == "__main__":
    executor = gilfree.executor_at(sys.argv[1], **OPTIONS)
    executor.submit(slow, 0).result(60)
    futures = [executor.submit(slow, i) for i in range(2)]
    time.sleep(0.2)
    print("leaving with calls out", flush=True)  # no shutdown(): exit waits for them
"""


def check_exit_with_calls_out(tmp_path, address, options="{}"):
    """Runs a script that leaves calls out on the cluster executor at ``address`` (its options
    ``options``, Python source) and exits without ``shutdown()``: the executor must shut down
    at exit before the cluster's own exit handler closes the cluster, and the script must end
    cleanly (it once waited for ever for calls that could no longer end)."""
    from support.processes import run_script

    source = _EXIT_WITH_CALLS_OUT.replace("OPTIONS", options)
    returncode, stdout, stderr = run_script(tmp_path, source, address)
    assert returncode == 0, stderr
    assert stdout == "leaving with calls out\n"
    assert "Traceback" not in stderr, stderr


def stop():
    """Stops what the session started."""
    if "dask" in _running:
        client, cluster = _running.pop("dask")
        client.close()
        cluster.close()
    if "ray" in _running:
        _running.pop("ray").shutdown()
