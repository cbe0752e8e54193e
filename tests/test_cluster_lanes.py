"""The machinery the cluster transports share (``gilfree._transports.cluster``), alone: a fake
cluster whose tasks end at once, and placements dropped from inside ``place``. No cluster runs
here; ``test_dask`` and ``test_ray`` run the real ones."""

from __future__ import annotations

import concurrent.futures

import pytest

from gilfree._engine.units import Call
from gilfree._transports.cluster import PLACE_BYTES, ClusterTransport
from gilfree._wire import protocol
from gilfree._workers.cluster import run_unit

pytestmark = [pytest.mark.gilfree_only, pytest.mark.timeout(10)]


class InstantCluster(ClusterTransport):
    """Runs each task as it is submitted: its end is known before ``when_done`` is called, so
    the callback runs at once, in the submitting thread (as Ray's does for a task already
    done)."""

    in_order = True

    def __init__(self) -> None:
        super().__init__([])
        self.placed: list[object] = []
        self.on_place = lambda: None

    def place(self, value):
        self.placed.append(value)
        self.on_place()
        return ("stand-in", len(self.placed))

    def submit(self, target, kind, fn, payload, timeout):
        done: concurrent.futures.Future = concurrent.futures.Future()
        done.set_result(run_unit(kind, fn, payload))
        return done

    def when_done(self, task, callback):
        task.add_done_callback(lambda _done: callback())

    def cancel(self, task):
        pass

    def settle(self, task):
        return task.result()


def test_a_task_that_has_ended_already_is_reported_without_deadlock():
    transport = InstantCluster()
    lane = transport.start(0, 1)
    for task_id in (1, 2):
        call = Call(concurrent.futures.Future(), pow, (0, b""), ((2, 10), {}), [])
        lane.send(task_id, call)
    outcomes = transport.pump(0)
    replies = [(kind, task_id, value) for _slot, kind, _epoch, task_id, _busy, value in outcomes]
    assert replies == [
        (protocol.READY, 0, None),
        (protocol.RESULT, 1, 1024),
        (protocol.RESULT, 2, 1024),
    ]
    lane.retire()
    assert lane.poll() == 0


def test_a_placement_dropped_while_placing_is_undone_in_the_same_thread():
    """Placing allocates, so it may collect a unit that held another placed value: its
    ``unplace`` then runs inside ``_placed``, in the same thread, and must not deadlock."""
    transport = InstantCluster()
    first, second = bytes(PLACE_BYTES), bytearray(PLACE_BYTES)
    first_shared: list[object] = []
    transport.pack(((first,), {}), first_shared)
    assert id(first) in transport._placements
    transport.on_place = first_shared.clear  # the first unit goes while the second places
    second_shared: list[object] = []
    (stand_in,), _kwargs = transport.pack(((second,), {}), second_shared)
    assert stand_in == ("stand-in", 2)
    assert id(first) not in transport._placements
    assert transport._placements[id(second)].users == 1
    second_shared.clear()
    assert not transport._placements


def test_a_value_is_placed_once_while_units_use_it():
    transport = InstantCluster()
    value = bytes(PLACE_BYTES)
    units = [[] for _ in range(3)]
    for unit in units:
        transport.pack(([(value,), (1,)], True), unit)  # a chunk of two starred items
    del unit
    assert len(transport.placed) == 1
    assert transport._placements[id(value)].users == 3
    units.clear()
    assert not transport._placements
    transport.pack(((value,), {}), [])
    assert len(transport.placed) == 2  # placed again: no unit was using it any more


class RefusingCluster(InstantCluster):
    """Refuses the units whose first argument is ``"refuse"``, as a cluster refuses an argument
    it cannot send; runs the others at once, or later where ``hold`` (a lane whose head waits)."""

    in_order = False

    def __init__(self) -> None:
        super().__init__()
        self.held: list[tuple[concurrent.futures.Future, tuple]] = []

    def submit(self, target, kind, fn, payload, timeout):
        (first, *_rest), _kwargs = payload
        if first == "refuse":
            raise TypeError("cannot send this")
        done: concurrent.futures.Future = concurrent.futures.Future()
        if first == "hold":
            self.held.append((done, (kind, fn, payload)))
        else:
            done.set_result(run_unit(kind, fn, payload))
        return done


def _call(*args):
    return Call(concurrent.futures.Future(), repr, (0, b""), (args, {}), [])


def test_a_unit_the_cluster_refuses_fails_alone_and_the_lane_goes_on():
    transport = RefusingCluster()
    lane = transport.start(0, 1)
    lane.send(1, _call("hold"))  # runs until released: the next two wait behind it
    lane.send(2, _call("refuse"))
    lane.send(3, _call("after"))
    done, unit = transport.held.pop()
    done.set_result(run_unit(*unit))  # the lane submits 2 (refused), then 3
    lane.send(4, _call("refuse"))  # refused at once: nothing was ahead of it
    replies = {task_id: (kind, value) for _s, kind, _e, task_id, _b, value in transport.pump(0)}
    assert replies[1] == (protocol.RESULT, "'hold'")
    assert replies[2][0] == protocol.ERROR and isinstance(replies[2][1], TypeError)
    assert replies[3] == (protocol.RESULT, "'after'")
    assert replies[4][0] == protocol.ERROR
    lane.retire()
    assert lane.poll() == 0
