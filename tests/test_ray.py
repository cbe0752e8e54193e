"""``gilfree.ray.RayExecutor`` (issue #14): what is Ray's own (what every cluster executor does
is in ``test_clusters.py``, run on Dask and on Ray).

These run under ``GILFREE_TEST_IMPL=ray`` (``make test-clusters``), on the session's Ray of two
CPUs (``support.clusters``), beside the executor conformance tests run on the same session; the
executors here run on it and close nothing of it. One test lets an executor start and close a
Ray of its own, in a child interpreter.
"""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from conftest import IMPL
from support import clusters, tasks
from support.limits import EXIT_DEADLINE, RESULT_TIMEOUT

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(IMPL != "ray", reason="Ray's tests run with GILFREE_TEST_IMPL=ray"),
]

if IMPL == "ray":
    ray = pytest.importorskip("ray")
    import gilfree
    from gilfree.ray import RayExecutor


@pytest.fixture(scope="module")
def executor():
    clusters.ray_session()
    the_executor = RayExecutor()
    yield the_executor
    the_executor.shutdown(wait=True)


def _gone(pids, deadline=EXIT_DEADLINE):
    """Whether every pid in ``pids`` has ended within ``deadline`` seconds."""
    end = time.monotonic() + deadline
    while any(os.path.exists(f"/proc/{pid}") for pid in pids):
        if time.monotonic() > end:
            return False
        time.sleep(0.05)
    return True


def test_a_crash_gives_worker_crashed_error_and_retries_recover(executor, tmp_path):
    with pytest.raises(gilfree.WorkerCrashedError, match="Ray lost the worker running it"):
        executor.submit(tasks.crash, "exit3").result(RESULT_TIMEOUT)
    assert executor.submit(tasks.square, 5).result(RESULT_TIMEOUT) == 25
    marker = str(tmp_path / "crashed-once")
    with RayExecutor(retries=1) as retrying:
        future = retrying.submit(tasks.crash_the_first_time, marker, "second run", "exit3")
        assert future.result(RESULT_TIMEOUT) == "second run"


def test_a_task_past_its_timeout_is_stopped(executor, tmp_path):
    """Ray can stop a running task: its actor's process is killed, the call fails with
    ``TaskTimeoutError``, and the executor goes on."""
    pid_path, gate = tmp_path / "pid", tmp_path / "gate"
    started = time.monotonic()
    future = executor.submit_with(tasks.write_pid_and_block, (str(pid_path), str(gate)), timeout=1)
    with pytest.raises(gilfree.TaskTimeoutError, match="its worker was killed"):
        future.result(RESULT_TIMEOUT)
    assert time.monotonic() - started < 20
    assert _gone([int(pid_path.read_text())]), "the actor ran on past the timeout"
    assert executor.submit(tasks.square, 6).result(RESULT_TIMEOUT) == 36
    with RayExecutor(task_timeout=1) as limited, pytest.raises(gilfree.TaskTimeoutError):
        limited.submit(tasks.sleep_and_return, 30).result(RESULT_TIMEOUT)


def test_no_actor_outlives_its_executor():
    with RayExecutor() as own:
        pids = set(own.map(tasks.sleep_and_get_pid, [0.2] * 4, chunksize=1))
    assert pids and _gone(pids), f"actors left after shutdown: {pids}"


def test_a_large_argument_is_placed_once_and_arrives_writeable(executor, monkeypatch):
    np = pytest.importorskip("numpy")
    from gilfree._transports import ray as ray_transport

    array = np.arange(1_000_000, dtype=np.float64)
    placed = []
    real_put = ray_transport.ray.put

    def counting_put(value, **kwargs):
        placed.append(len(value))  # placed pickled: each unit loads a copy of its own
        return real_put(value, **kwargs)

    monkeypatch.setattr(ray_transport.ray, "put", counting_put)
    sums = list(executor.map(np.sum, [array] * 40, chunksize=4))
    assert sums == [float(array.sum())] * 40
    assert len(placed) == 1 and array.nbytes <= placed[0] < array.nbytes + 1024
    assert all(executor.map(lambda a: a.flags.writeable, [array] * 2))
    assert list(executor.map(tasks.square, range(50))) == [x * x for x in range(50)]
    assert len(placed) <= 2  # nothing small is placed


def test_a_pool_on_ray():
    from gilfree.ray import Pool

    with Pool() as pool:
        assert pool.map(tasks.square, range(100)) == [x * x for x in range(100)]
        assert list(pool.imap(tasks.square, (x for x in range(10)))) == [x * x for x in range(10)]
        assert pool.apply_async(tasks.add, (1, 2)).get(RESULT_TIMEOUT) == 3
        assert pool.starmap(tasks.add, [(1, 2), (3, 4)]) == [3, 7]
        assert asyncio.run(pool.run(tasks.square, 9)) == 81
    assert ray.is_initialized()


def test_one_string_picks_ray(executor):
    with gilfree.executor_at("ray://", retries=1) as on_ray:
        assert isinstance(on_ray, RayExecutor)
        assert on_ray.submit(tasks.square, 4).result(RESULT_TIMEOUT) == 16
    assert ray.is_initialized()  # the session was not the executor's to close
    with pytest.raises(ValueError, match="already connected to a Ray session"):
        gilfree.executor_at("ray://127.0.0.1:10001")
    with pytest.raises(ValueError, match="already connected to a Ray session"):
        RayExecutor(num_cpus=2)


OWN_SESSION_SCRIPT = """
import ray
from gilfree.ray import RayExecutor

if __name__ == "__main__":
    with RayExecutor(num_cpus=1, include_dashboard=False) as executor:
        print("result", executor.submit(lambda: 6 * 7).result(60))
        assert ray.is_initialized()
    print("after shutdown, connected:", ray.is_initialized())
"""


def test_an_executor_closes_the_ray_it_started(tmp_path):
    from support.processes import run_script

    code, out, err = run_script(tmp_path, OWN_SESSION_SCRIPT)
    assert code == 0, out + err
    assert "result 42" in out
    assert "after shutdown, connected: False" in out


def test_exit_with_calls_out_waits_for_them_and_ends(tmp_path):
    """The executor shuts down at exit before the cluster's own exit handler closes the
    cluster: it waited for ever for calls that could no longer end."""
    clusters.check_exit_with_calls_out(
        tmp_path, "ray://", "dict(num_cpus=2, include_dashboard=False, log_to_driver=False)"
    )
