"""``gilfree.ray.RayExecutor``: the executor's API and semantics on Ray.

Ray has no ``concurrent.futures`` executor, and ``ObjectRef.future()`` cannot cancel. This is
the same front end as ``gilfree.ProcessPoolExecutor`` (futures, ``map`` cut into chunks sized
from measured durations, retries, timeouts, ``shutdown(cancel_futures=True)``,
``run``/``amap``, progress), over a transport that runs each unit as a Ray task
(``gilfree._transports.ray``):

* futures are ``concurrent.futures.Future``: ``wait``, ``as_completed`` and
  ``asyncio.wrap_future`` work; ``cancel()`` cancels a call that has not started and returns
  False for a running one; ``shutdown(cancel_futures=True)`` cancels what has not started;
* ``map`` cuts its input into chunks (aiming at 0.2 s of work each, so Ray's per-task cost of
  a millisecond or two is hidden), reads it lazily with at most 4 chunks per worker ahead of
  the reader (generators, even endless ones, work), and keeps the order;
* an exception arrives with its own type and the remote traceback as ``__cause__``; a call
  whose Ray worker died fails with ``WorkerCrashedError`` (Ray's own retries are off), and
  ``retries=`` runs it again;
* Ray can stop a running task (killing the lane's actor kills its worker process), so
  ``task_timeout=``, ``submit_with(timeout=)`` and ``run_with(kill_on_cancel=True)`` work as
  on gilfree's own workers;
* values travel pickled by gilfree, as through the stdlib's executor (arrays writeable), and
  an argument of 1 MiB or more is put in Ray's object store once, pickled (``ray.put``), and
  reused by identity while the calls that use it are out; each call loads a copy of its own.

What a cluster does not offer: ``initializer`` (Ray's ``runtime_env`` prepares workers), and
``executor._processes`` is empty (the workers are Ray's).

The executor closes only the Ray session it started: if this process is already connected
(``ray.init`` was called), it runs there and leaves the session open; otherwise it calls
``ray.init(address, **ray_options)`` and ``ray.shutdown()`` at shutdown. ``pip install
gilfree[ray]`` installs Ray; ``import gilfree`` never imports it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

try:
    import ray
except ImportError as missing:  # pragma: no cover - the extra is what brings it
    raise ImportError("gilfree.ray needs Ray: pip install gilfree[ray]") from missing

from gilfree._cluster import ClusterExecutor, ClusterPool
from gilfree._transports.ray import BrokenRayExecutor, RayTransport

__all__ = ["BrokenRayExecutor", "Pool", "RayExecutor"]


class RayExecutor(ClusterExecutor):
    """Runs calls as Ray tasks with ``concurrent.futures``' semantics (see the module
    docstring).

    Args:
        address: a Ray cluster to connect to (``"ray://host:10001"``, ``"auto"``, ...), or
            None: the session this process is connected to, else a local Ray of its own.
        max_workers: how many units run at once; default: the session's CPUs, counted now.
        task_timeout: seconds a call may run before its Ray worker is killed and the call
            fails with ``TimeoutError`` (default None: no limit).
        retries: times a call whose Ray worker died is run again before it fails with
            ``WorkerCrashedError`` (default 0).
        ray_options: given to ``ray.init`` when this executor starts or connects the session
            (``num_cpus=``, ``runtime_env=``...); refused if one is already connected.
    """

    _cluster_name = "Ray"
    _can_kill = True

    def __init__(
        self,
        address: str | None = None,
        *,
        max_workers: int | None = None,
        task_timeout: float | None = None,
        retries: int = 0,
        **ray_options: Any,
    ) -> None:
        limits = self._cluster_limits(max_workers, task_timeout, retries)
        if address is not None and not isinstance(address, str):
            raise TypeError(f"address must be a Ray address (a string) or None, got {address!r}")
        owned: list[Callable[[], object]] = []
        if ray.is_initialized():
            if address is not None or ray_options:
                raise ValueError(
                    "this process is already connected to a Ray session: leave out address and"
                    " ray options to run on it, or call ray.shutdown() first"
                )
        else:
            ray.init(address=address, **ray_options)
            owned = [ray.shutdown]
        if max_workers is None:
            max_workers = max(1, int(ray.cluster_resources().get("CPU", 1)))
        self.address = address
        self._run_on_cluster(RayTransport(owned), max_workers, limits)

    def __repr__(self) -> str:
        where = "the current Ray session" if self.address is None else repr(self.address)
        return f"<gilfree.ray.RayExecutor on {where} max_workers={self._max_workers}>"


class Pool(ClusterPool):
    """``multiprocessing.Pool``'s API on Ray: ``gilfree.Pool``'s methods and result objects
    (``map``, ``imap``, ``apply_async``, ``run``, ``amap``, ``terminate``...) over a
    ``RayExecutor`` (see the module docstring).

    Args:
        address: as for ``RayExecutor``: a Ray address, or None.
        processes: how many units run at once; default: the session's CPUs.
        retries: times a call whose Ray worker died is run again (default 0).
        ray_options: given to ``ray.init`` when the pool starts or connects the session.
    """

    def __init__(
        self,
        address: str | None = None,
        processes: int | None = None,
        *,
        retries: int = 0,
        **ray_options: Any,
    ) -> None:
        self._run_on_executor(
            lambda: RayExecutor(address, max_workers=processes, retries=retries, **ray_options)
        )
