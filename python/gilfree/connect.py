"""``gilfree.executor_at(where)``: one string picks where work runs.

* ``"local"``: gilfree's ``ProcessPoolExecutor`` on this machine.
* ``"dask://host:port"``: a ``gilfree.dask.DaskExecutor`` on the Dask scheduler at that
  address (``tcp://``, or the scheme given: ``"dask://tls://host:port"``; it opens a client,
  and closes it at shutdown); ``"dask://"``: a ``DaskExecutor`` on a ``LocalCluster`` of its
  own.
* ``"ray://host:port"``: a ``gilfree.ray.RayExecutor`` connected to that Ray cluster through
  Ray Client (the address goes to ``ray.init`` as it is; the executor disconnects at shutdown);
  ``"ray://"``: a ``RayExecutor`` on the Ray session this process is connected to, or else on
  a local Ray of its own.

Every one is an executor with the same API and semantics, so moving a script from one machine
to a cluster changes that string alone. Keyword options go to the executor's constructor.
"""

from __future__ import annotations

from typing import Any

from gilfree.executor import ProcessPoolExecutor

#: The forms ``where`` takes, for error messages.
FORMS = (
    '"local", "dask://host:port", "dask://" (a local Dask cluster), "ray://host:port" or'
    ' "ray://" (the current or a local Ray session)'
)


def executor_at(where: str = "local", **options: Any) -> ProcessPoolExecutor:
    """An executor running work where ``where`` says (see the module docstring)."""
    if not isinstance(where, str):
        raise TypeError(f"where must be a string: {FORMS}; got {where!r}")
    if where == "local":
        return ProcessPoolExecutor(**options)
    scheme, separator, address = where.partition("://")
    if separator and scheme == "dask":
        from gilfree.dask import DaskExecutor

        if address and "://" not in address:
            address = f"tcp://{address}"  # else the scheduler's own: "dask://tls://host:8786"
        return DaskExecutor(address or None, **options)
    if separator and scheme == "ray":
        from gilfree.ray import RayExecutor

        return RayExecutor(where if address else None, **options)
    raise ValueError(f"where must be {FORMS}; got {where!r}")
