"""The executor's Future: a ``concurrent.futures.Future`` whose waits drive the pool.

A caller blocked in ``result()`` or ``exception()`` does not sleep on a condition variable while
another thread collects results: it collects the outcomes itself (``PumpRole.wait_until``),
which saves a thread hand-off per task. Waits that concurrent.futures performs on its own
(``wait``, ``as_completed``) and done-callbacks wake the engine's collector thread instead.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable
from concurrent.futures._base import CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from gilfree._engine.waiting import PumpRole


class _WakingList(list):  # type: ignore[type-arg]
    """``Future._waiters``: installing a waiter (``wait``/``as_completed``) wakes the collector."""

    __slots__ = ("_role",)

    def __init__(self, role: PumpRole) -> None:
        super().__init__()
        self._role = role

    def append(self, waiter: Any) -> None:
        super().append(waiter)
        self._role.wake_collector()


_T = TypeVar("_T")

#: The states of a future that will not change any more.
_SETTLED = frozenset((CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED))


class Future(concurrent.futures.Future[_T]):
    """A ``concurrent.futures.Future`` bound to a gilfree executor: through the waiting role of its
    engine, not the engine itself. Generic in its result, as the stdlib's."""

    def __init__(self, role: PumpRole) -> None:
        super().__init__()
        self._role = role
        self._waiters = _WakingList(role)

    def _settled(self) -> bool:
        """``done()`` without its lock: the waits poll it after every batch of replies. Reading
        one attribute is atomic; once true it stays true, and ``result`` then reads the value
        under the lock."""
        return self._state in _SETTLED

    def result(self, timeout: float | None = None) -> _T:
        """As ``concurrent.futures.Future.result``."""
        if self._state not in _SETTLED:
            self._role.wait_until(self._settled, timeout)
        return super().result(timeout=0)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """As ``concurrent.futures.Future.exception``."""
        if self._state not in _SETTLED:
            self._role.wait_until(self._settled, timeout)
        return super().exception(timeout=0)

    def add_done_callback(self, fn: Callable[[concurrent.futures.Future[_T]], object]) -> None:
        """As ``concurrent.futures.Future.add_done_callback``."""
        super().add_done_callback(fn)
        if not self.done():
            self._role.wake_collector()
