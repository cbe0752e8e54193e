"""``gilfree.dask.DaskExecutor`` (issue #14): what is Dask's own (what every cluster executor
does is in ``test_clusters.py``, run on Dask and on Ray).

One ``LocalCluster`` of two single-threaded worker processes serves the module (started with
``allowed-failures`` 0, so a task whose worker dies is not handed to another worker by the
scheduler: ``retries=`` decides). The executor is given the cluster's client, so it closes
nothing of it; one test lets an executor start and close a cluster of its own.
"""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from conftest import IMPL
from support import clusters, tasks
from support.limits import RESULT_TIMEOUT

distributed = pytest.importorskip("distributed")
dask = pytest.importorskip("dask")

import gilfree  # noqa: E402
from gilfree.dask import DaskExecutor  # noqa: E402

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(IMPL != "gilfree", reason="a cluster's executor: run once, not per IMPL"),
    # distributed's own threads and sockets end with the cluster; its warnings are its own.
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]


@pytest.fixture(scope="module")
def client():
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        cluster = distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
        )
    the_client = distributed.Client(cluster)
    yield the_client
    the_client.close()
    cluster.close()


@pytest.fixture(scope="module")
def executor(client):
    the_executor = DaskExecutor(client)
    yield the_executor
    the_executor.shutdown(wait=True)


def test_a_crash_gives_worker_crashed_error_and_retries_recover(client, tmp_path):
    with DaskExecutor(client) as crashing:
        with pytest.raises(gilfree.WorkerCrashedError, match="Dask cluster lost the worker"):
            crashing.submit(tasks.crash, "exit3").result(RESULT_TIMEOUT)
        assert crashing.submit(tasks.square, 5).result(RESULT_TIMEOUT) == 25
    marker = str(tmp_path / "crashed-once")
    with DaskExecutor(client, retries=1) as retrying:
        future = retrying.submit(tasks.crash_the_first_time, marker, "second run", "exit3")
        assert future.result(RESULT_TIMEOUT) == "second run"
    client.wait_for_workers(2, timeout=RESULT_TIMEOUT)


def test_what_a_cluster_cannot_do_is_refused(executor):
    with pytest.raises(ValueError, match="Dask cannot stop a task.*register gilfree.dask.Worker"):
        executor.submit_with(tasks.square, (2,), timeout=1)
    with pytest.raises(ValueError, match="Dask cannot stop a task.*no kill on cancel"):
        executor.run_with(tasks.square, (2,), kill_on_cancel=True)
    with pytest.raises(TypeError, match="client must be a distributed.Client"):
        DaskExecutor(42)


def test_an_executor_closes_only_what_it_started(client):
    DaskExecutor(client).shutdown()
    assert client.status == "running"
    own = DaskExecutor()
    own_client = own.client
    assert own.submit(tasks.square, 6).result(RESULT_TIMEOUT) == 36
    own.shutdown()
    assert own_client.status == "closed"


def test_importing_gilfree_never_imports_dask(tmp_path):
    from support.processes import run_script

    code, out, err = run_script(
        tmp_path,
        "import sys\nimport gilfree, gilfree.executor, gilfree.pool\n"
        "print(sorted(name for name in ('dask', 'distributed', 'ray') if name in sys.modules))\n",
    )
    assert (code, out.strip()) == (0, "[]"), err


def test_a_pool_on_the_cluster(client):
    """``gilfree.dask.Pool``: multiprocessing.Pool's API on the cluster."""
    from gilfree.dask import Pool

    with Pool(client) as pool:
        assert pool.map(tasks.square, range(100)) == [x * x for x in range(100)]
        assert list(pool.imap(tasks.square, (x for x in range(10)))) == [x * x for x in range(10)]
        assert pool.apply_async(tasks.add, (1, 2)).get(RESULT_TIMEOUT) == 3
        assert pool.starmap(tasks.add, [(1, 2), (3, 4)]) == [3, 7]
        with pytest.raises(ValueError, match="bad value 2"):
            pool.starmap(tasks.raise_if_equal, [(x, 2) for x in range(4)])
        assert asyncio.run(pool.run(tasks.square, 9)) == 81
    assert client.status == "running"


PLUGIN_SCRIPT = """
import os, sys, time
import dask
import distributed
import gilfree
from gilfree.dask import WorkerPlugin

def where(_=None):
    return os.getpid()

def crash():
    os._exit(3)

if __name__ == "__main__":
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        cluster = distributed.LocalCluster(
            n_workers=1, threads_per_worker=2, processes=True, dashboard_address=":0"
        )
    client = distributed.Client(cluster)
    client.register_plugin(WorkerPlugin(max_workers=2))
    (dask_pid,) = client.run(os.getpid).values()
    assert dask.config.get("distributed.worker.daemon"), "daemon workers are the default"
    with dask.annotate(executor="gilfree"):
        pids = set(client.gather(client.map(where, range(8), pure=False)))
        lambda_result = client.submit(lambda x: x * 2, 21, pure=False).result()
    assert dask_pid not in pids, (dask_pid, pids)
    assert lambda_result == 42
    scattered = client.scatter(list(range(1000)))
    with dask.annotate(executor="gilfree"):
        crashed = client.submit(crash, pure=False)
        try:
            crashed.result()
        except gilfree.WorkerCrashedError as error:
            print("crashed:", type(error).__name__)
        survivor = client.submit(where, pure=False).result()
    assert sum(client.gather(scattered)) == sum(range(1000)), "the scattered data was lost"
    assert list(client.run(os.getpid).values()) == [dask_pid], "the Dask worker was replaced"
    client.close()
    cluster.close()
    deadline = time.monotonic() + 10
    left = {pid for pid in pids | {survivor} if os.path.exists(f"/proc/{pid}")}
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = {pid for pid in left if os.path.exists(f"/proc/{pid}")}
    assert not left, f"gilfree workers left after the cluster closed: {left}"
    print("plugin ok", len(pids))
"""


def test_the_worker_plugin_runs_tasks_in_gilfree_workers_of_daemon_dask_workers(tmp_path):
    """``WorkerPlugin``: tasks under ``dask.annotate(executor="gilfree")`` run in gilfree's
    worker processes (other pids than the Dask worker's; a ``__main__`` function and a lambda),
    with Dask's default daemon workers; a task that crashes its process fails with
    ``WorkerCrashedError`` and the Dask worker keeps its scattered data; no gilfree process is
    left once the cluster has closed."""
    from support.processes import run_script

    code, out, err = run_script(tmp_path, PLUGIN_SCRIPT)
    assert code == 0, out + err
    assert "crashed: WorkerCrashedError" in out
    assert "plugin ok" in out


def test_one_string_picks_where_work_runs(client):
    local = gilfree.executor_at("local", max_workers=1)
    with local:
        assert type(local) is gilfree.ProcessPoolExecutor
        assert local.submit(tasks.square, 3).result(RESULT_TIMEOUT) == 9
    address = client.scheduler.address.removeprefix("tcp://")
    # host:port, and the scheduler's address with its scheme (tls:// schedulers need it)
    for where in (f"dask://{address}", f"dask://{client.scheduler.address}"):
        with gilfree.executor_at(where, retries=1) as remote:
            assert isinstance(remote, DaskExecutor)
            assert remote.submit(tasks.square, 4).result(RESULT_TIMEOUT) == 16
        assert remote.client.status == "closed" and client.status == "running"
    for wrong in ("dask:/x", "tcp://host:1", "ray:", ""):
        with pytest.raises(ValueError, match='"local", "dask://host:port"'):
            gilfree.executor_at(wrong)


def test_a_large_argument_is_placed_on_the_cluster_once(executor, monkeypatch):
    """An 8 MB array given to 40 calls of a map (and to 3 submits in flight together) is
    scattered once, and each call loads a copy of its own."""
    np = pytest.importorskip("numpy")
    array = np.arange(1_000_000, dtype=np.float64)
    scattered = []
    real_scatter = executor.client.scatter

    def counting_scatter(data, **kwargs):
        scattered.append(len(data))
        return real_scatter(data, **kwargs)

    monkeypatch.setattr(executor.client, "scatter", counting_scatter)
    sums = list(executor.map(np.sum, [array] * 40, chunksize=4))
    assert sums == [float(array.sum())] * 40
    assert len(scattered) == 1
    small = list(executor.map(tasks.square, range(50)))  # nothing small is scattered
    assert small == [x * x for x in range(50)] and len(scattered) == 1
    futures = [executor.submit(np.sum, array) for _ in range(3)]
    assert [f.result(RESULT_TIMEOUT) for f in futures] == [float(array.sum())] * 3
    assert len(scattered) <= 2  # once more at most: the map's units had all ended


@pytest.mark.parametrize("default", [False, True])
def test_timeouts_are_kept_by_the_worker_plugin(client, tmp_path, default):
    """With gilfree's ``WorkerPlugin`` on the cluster, a call with a timeout runs in the gilfree
    pool of its Dask worker, which kills the process running it past the timeout: the call
    fails with ``TaskTimeoutError``, and the executor goes on. Without the plugin, the timeout
    is refused at construction. With ``default=True`` too (the task handing the call to the
    pool ran in the pool itself, away from its Dask worker, and every call failed)."""
    from gilfree.dask import WorkerPlugin

    with pytest.raises(ValueError, match="register gilfree.dask.WorkerPlugin"):
        DaskExecutor(client, task_timeout=1)
    client.register_plugin(WorkerPlugin(max_workers=1, default=default))
    try:
        with DaskExecutor(client, task_timeout=2) as limited:
            pid_path, gate = tmp_path / "pid", tmp_path / "gate"
            started = time.monotonic()
            future = limited.submit(tasks.write_pid_and_block, str(pid_path), str(gate))
            with pytest.raises(gilfree.TaskTimeoutError):
                future.result(RESULT_TIMEOUT)
            assert time.monotonic() - started < 20
            tasks.wait_for_file(str(pid_path), RESULT_TIMEOUT)
            pid = int(pid_path.read_text())
            deadline = time.monotonic() + 10
            while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not os.path.exists(f"/proc/{pid}"), "the call ran on past its timeout"
            assert limited.submit(tasks.square, 6).result(RESULT_TIMEOUT) == 36
            fast = limited.submit_with(tasks.square, (7,), timeout=30)
            assert fast.result(RESULT_TIMEOUT) == 49
    finally:
        client.unregister_worker_plugin("gilfree")


def test_exit_with_calls_out_waits_for_them_and_ends(tmp_path):
    """The executor shuts down at exit before the cluster's own exit handler closes the
    cluster: it waited for ever for calls that could no longer end."""
    clusters.check_exit_with_calls_out(tmp_path, "dask://")
