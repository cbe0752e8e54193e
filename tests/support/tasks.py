"""Module-level task functions and classes used by the test suite.

Everything here is importable by reference (``tasks.<name>``), so the same
tasks run under gilfree and under the stdlib executor, whatever the start
method. Tasks that must block never sleep blindly: they poll for a "gate" file
that the test creates, and give up after a deadline so nothing hangs forever.
"""

from __future__ import annotations

import os
import threading
import time

from support.limits import GATE_TIMEOUT

_POLL_INTERVAL = 0.005

# State set by the initializers below; each worker process has its own copy.
_init_value = None
_init_calls = 0


# --- plain tasks -----------------------------------------------------------


def square(x):
    return x * x


def add(a, b):
    return a + b


def echo(*args, **kwargs):
    return args, kwargs


def echo_kwargs(**kwargs):
    return dict(kwargs)


def get_pid(_=None):
    return os.getpid()


def make_bytes(size):
    return b"\xab" * size


def byte_len(data):
    return len(data)


class Multiplier:
    """A picklable object whose bound method is used as a task."""

    def __init__(self, factor):
        self.factor = factor

    def apply(self, x):
        return x * self.factor


# --- gates: blocking without sleeping blindly ----------------------------------


def wait_for(condition, timeout):
    """Polls ``condition()`` until it holds (True) or ``timeout`` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def wait_for_file(path, timeout=GATE_TIMEOUT):
    """Poll until ``path`` exists; return True if it did before ``timeout``."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            return False
        time.sleep(_POLL_INTERVAL)
    return True


def _touch(path):
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as handle:
        handle.write(str(os.getpid()))
    os.replace(tmp, path)


def block_until_released(gate_path, value=None, started_path=None):
    """Mark ``started_path`` (if given), wait for the gate, return ``value``.

    Returns the string ``"gate-timeout"`` instead of ``value`` when the gate
    was never opened, so a test that forgot to open it fails visibly.
    """
    if started_path is not None:
        _touch(started_path)
    if not wait_for_file(gate_path):
        return "gate-timeout"
    return value


def start_child_and_block(pid_path, gate_path):
    """Start a ``sleep`` process that outlives the task unless killed, publish its pid in
    ``pid_path``, then wait for the gate."""
    import subprocess

    child = subprocess.Popen(["sleep", "120"])
    temporary = f"{pid_path}.tmp"
    with open(temporary, "w") as handle:
        handle.write(str(child.pid))
    os.replace(temporary, pid_path)  # whole when seen
    wait_for_file(gate_path)
    child.kill()
    child.wait()
    return child.pid


def write_pid_and_block(pid_path, gate_path):
    """Publish this worker's pid in ``pid_path``, then wait for the gate."""
    _touch(pid_path)
    wait_for_file(gate_path)
    return os.getpid()


# --- exceptions --------------------------------------------------------------


class CustomError(Exception):
    """A user-defined exception that pickles by reference."""


class UnpicklableError(Exception):
    """An exception that cannot be pickled: it holds a lock."""

    def __init__(self, message):
        super().__init__(message)
        self.lock = threading.Lock()


class MismatchedInitError(Exception):
    """Pickles fine but fails to unpickle: ``__init__`` needs two arguments."""

    def __init__(self, first, second):
        super().__init__(f"{first}-{second}")


def raise_value_error(*args):
    raise ValueError(*args)


def raise_custom_error(*args):
    raise CustomError(*args)


def raise_key_error(key):
    raise KeyError(key)


def raise_unpicklable_error():
    raise UnpicklableError("cannot travel back")


def raise_mismatched_init_error():
    raise MismatchedInitError("a", "b")


def raise_mismatched_init_error_if(condition):
    if condition:
        raise_mismatched_init_error()


def raise_if_equal(x, bad):
    if x == bad:
        raise ValueError(f"bad value {x}")
    return x


def lock_at(x, at):
    """``x``, except a dict holding a lock (which cannot be sent back) when ``x == at``."""
    return {"lock": threading.Lock()} if x == at else x


def return_lock():
    """Return a result that no pickler can serialize."""
    return threading.Lock()


# --- initializers --------------------------------------------------------------


def record_init(value):
    global _init_value, _init_calls
    _init_value = value
    _init_calls += 1


def get_init_state(_=None):
    return os.getpid(), _init_value, _init_calls


def failing_initializer():
    raise RuntimeError("initializer failed on purpose")


def exiting_initializer():
    """Ends its worker (``os._exit(3)``) before the worker is ready."""
    _refuse_in_test_process()
    os._exit(3)


def sigkilled_initializer():
    """Ends its worker by SIGKILL (as the OOM killer would) before the worker is ready."""
    import signal

    _refuse_in_test_process()
    os.kill(os.getpid(), signal.SIGKILL)


# --- probes of gilfree's machinery ----------------------------------------------

#: How many times this process has unpickled a ``CountedCallable``.
_unpickle_count = 0


class CountedCallable:
    """A callable that counts, per process, how often it was unpickled: its state travels by
    value, so every delivery of the function body to a worker shows up in the count."""

    def __init__(self):
        self.tag = "probe"  # a non-empty state, so unpickling calls __setstate__

    def __setstate__(self, state):
        global _unpickle_count
        _unpickle_count += 1
        self.__dict__.update(state)

    def __call__(self, _=None):
        return _unpickle_count


def _refuse_in_test_process():
    """Fails a task that would end the test process itself: under the thread backend it runs
    there (such a test is ``process_only``)."""
    if str(os.getpid()) == os.environ.get("GILFREE_TEST_PID"):
        raise AssertionError("this task ends its process: the test is process_only")


def kill_self(signal_number):
    """Ends the worker with a signal, as a crash would."""
    _refuse_in_test_process()
    os.kill(os.getpid(), signal_number)
    time.sleep(5)


def put_in_queue(queue, value):
    """An initializer that reports through a multiprocessing queue (a logging-queue pattern)."""
    queue.put(value)


class BreaksWhenUnpickled:
    """An argument that pickles fine but fails to unpickle in the worker."""

    def __reduce__(self):
        return (_refuse_to_unpickle, ())


def _refuse_to_unpickle():
    raise ValueError("refusing to unpickle")


class Holder:
    """An object whose bound method is submitted; tests check it is not kept alive."""

    def method(self):
        return 42


def fib(n):
    """Naive Fibonacci: a task whose cost rises steeply with its argument."""
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def call_with(function, value):
    """Calls a function received as an argument."""
    return function(value)


def make_adder(amount):
    """Returns a closure, which has to travel back by value."""

    def add_amount(value):
        return value + amount

    return add_amount


def kill_self_holding(array):
    """Dies with SIGKILL while the argument (a shared buffer view) is mapped here."""
    import signal

    _refuse_in_test_process()
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(5)


def fill_range(array, start, stop, value):
    """Writes ``value`` into ``array[start:stop]`` in place (a shared array)."""
    array[start:stop] = value
    return stop - start


def mark_and_sum(array, index, value, start):
    """Writes ``value`` at ``array[index]`` in place (a shared array) and returns the sum of
    ``array[start:]``."""
    array[index] = value
    return float(array[start:].sum())


def double_array(array):
    """A new array made in the worker: the result is a buffer the worker owns."""
    return array * 2


# --- shared-memory stress (test_shared_stress) --------------------------------------

#: Bytes per item of a "many" value: each below the sharing threshold, so the items stay
#: inline and only the whole (large) message goes to shared memory.
STRESS_ITEM_BYTES = 64 << 10


class StressCorruption(Exception):
    """A value received by a task does not hold the content its seed says."""


def stress_pattern(seed, length):
    """``length`` bytes (a uint8 array) determined by ``seed``: every 8-byte word differs
    between two seeds, so stale content from any other message is noticed."""
    import numpy

    words = numpy.arange((length + 7) // 8, dtype=numpy.uint64)
    words *= numpy.uint64(0x9E3779B1)
    words += numpy.uint64(seed * 0x100000001 + 1)
    return words.view(numpy.uint8)[:length]


def make_stress_value(kind, seed, length):
    """A value of ``kind`` holding ``length`` bytes (about) derived from ``seed``."""
    if kind == "array":
        return stress_pattern(seed, length).view("<u8").copy()  # length is a multiple of 8
    if kind == "bytes":
        return stress_pattern(seed, length).tobytes()
    if kind == "bytearray":
        return bytearray(stress_pattern(seed, length).tobytes())
    if kind == "pair":
        return {"array": make_stress_value("array", seed, length), "bytes": seed}
    if kind == "many":
        data = stress_pattern(seed, length).tobytes()
        step = STRESS_ITEM_BYTES
        return [data[start : start + step] for start in range(0, length, step)]
    raise ValueError(f"unknown kind {kind!r}")


def _first_difference(expected, actual):
    import numpy

    expected = numpy.frombuffer(expected, dtype=numpy.uint8)
    actual = numpy.frombuffer(actual, dtype=numpy.uint8)
    if len(expected) != len(actual):
        return f"length {len(actual)} instead of {len(expected)}"
    differing = numpy.flatnonzero(expected != actual)
    return (
        f"{len(differing)} of {len(expected)} bytes differ, first at offset {differing[0]}"
        f" (got {bytes(actual[differing[0] : differing[0] + 8]).hex()},"
        f" expected {bytes(expected[differing[0] : differing[0] + 8]).hex()})"
    )


def check_stress_value(kind, seed, length, value):
    """None if ``value`` is what ``make_stress_value(kind, seed, length)`` made, else why not."""
    import numpy

    expected_type = {
        "array": numpy.ndarray,
        "bytes": bytes,
        "bytearray": bytearray,
        "pair": dict,
        "many": list,
    }[kind]
    if type(value) is not expected_type:
        return f"type {type(value).__name__} instead of {expected_type.__name__}"
    if kind == "pair":
        if value.get("bytes") != seed:
            return f"pair tag {value.get('bytes')!r} instead of {seed}"
        return check_stress_value("array", seed, length, value["array"])
    if kind == "many":
        if any(type(item) is not bytes for item in value):
            return "an item of a 'many' value is not bytes"
        data = b"".join(value)
    elif kind == "array":
        if value.dtype != numpy.dtype("<u8") or value.ndim != 1:
            return f"array of {value.dtype} / {value.ndim} dimensions"
        data = memoryview(value).cast("B")
    else:
        data = memoryview(value)
    expected = stress_pattern(seed, length)
    if len(data) == length and numpy.array_equal(numpy.frombuffer(data, numpy.uint8), expected):
        return None
    return _first_difference(expected, data)


def stress_task(kind, seed, length, value, reply_seed, reply_length, sleep_seconds):
    """Checks the argument on arrival and again after a short sleep (a buffer reused under
    the task would show then), then returns it (``reply_seed`` None) or a fresh value."""
    problem = check_stress_value(kind, seed, length, value)
    if problem is None:
        time.sleep(sleep_seconds)
        problem = check_stress_value(kind, seed, length, value)
        when = "after sleeping"
    else:
        when = "on arrival"
    if problem is not None:
        raise StressCorruption(f"pid {os.getpid()}: argument {kind} seed {seed} {when}: {problem}")
    if reply_seed is None:
        return value
    return make_stress_value(kind, reply_seed, reply_length)


# --- multiprocessing.Pool / Process conformance (test_pool, test_process) ----------------


def block_then_call(gate_path, started_path, function, *args):
    """Mark ``started_path``, wait for the gate, then return ``function(*args)``.

    Returns ``"gate-timeout"`` when the gate was never opened, like
    ``block_until_released``.
    """
    _touch(started_path)
    if not wait_for_file(gate_path):
        return "gate-timeout"
    return function(*args)


def block_on_zero(gate_path, value):
    """Return ``value`` at once, except 0, which waits for the gate first."""
    if value == 0 and not wait_for_file(gate_path):
        return "gate-timeout"
    return value


def record_call(path, *args, **kwargs):
    """A Process target: write ``repr((args, kwargs))`` to ``path`` (atomically)."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as handle:
        handle.write(repr((args, kwargs)))
    os.replace(tmp, path)


def exit_with(code):
    """End the process with ``SystemExit(code)``, as ``sys.exit(code)`` does."""
    raise SystemExit(code)


def exit_abruptly(code):
    """End the process at once, skipping every cleanup (a crash, for the parent)."""
    _refuse_in_test_process()
    os._exit(code)


def pipe_double(connection):
    """Receive one value on a multiprocessing connection, send it back doubled, close."""
    value = connection.recv()
    connection.send(value * 2)
    connection.close()


def sleep_then_touch(path, seconds):
    """Sleep ``seconds`` (keep it short), then create ``path``."""
    time.sleep(seconds)
    _touch(path)


# --- faults and lifecycle (test_faults, test_soak) ----------------------------------------


def touch_at_exit(path):
    """Registers an exit handler that creates ``path``; returns this worker's pid."""
    import atexit

    _refuse_in_test_process()
    atexit.register(_touch, path)
    return os.getpid()


def leave_a_thread_running(seconds):
    """Starts a non-daemon thread that sleeps ``seconds`` and returns this worker's pid after a
    short wait (so that two such tasks land on two workers): the worker cannot end by itself
    before the thread does."""
    import threading

    _refuse_in_test_process()
    threading.Thread(target=time.sleep, args=(seconds,)).start()
    time.sleep(0.3)
    return os.getpid()


#: Memory a task keeps alive in its worker (``allocate_and_keep``), per process.
_kept_alive = []


def crash(how, pid_path=None):
    """End this worker as a crash would: ``"SIGKILL"``, ``"SIGSEGV"`` (a real invalid memory
    access) or ``"exit3"`` (``os._exit(3)``), after writing its pid to ``pid_path`` if given.
    No core file is written."""
    import resource
    import signal

    _refuse_in_test_process()
    if pid_path is not None:
        _touch(pid_path)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if how == "SIGKILL":
        os.kill(os.getpid(), signal.SIGKILL)
    elif how == "SIGSEGV":
        import ctypes
        import faulthandler

        faulthandler.disable()  # die of the signal itself, with no traceback on stderr
        ctypes.string_at(0)
    elif how == "exit3":
        os._exit(3)
    time.sleep(5)
    raise AssertionError(f"crash({how!r}) did not end the worker")


def crash_if(x, bad, how="SIGKILL"):
    """``x * x``, except that the worker crashes (see ``crash``) when ``x == bad``."""
    if x == bad:
        crash(how)
    return x * x


class CrashingCallable:
    """A callable object (no ``__qualname__`` of its own) whose ``repr`` raises; calling it
    crashes its worker (see ``crash``): messages about it must still be made."""

    def __call__(self, how="SIGKILL"):
        crash(how)

    def __repr__(self):
        raise RuntimeError("this object has no repr")


def crash_the_first_time(marker_path, value, how="SIGKILL"):
    """Crash (see ``crash``) if ``marker_path`` does not exist yet, creating it first; return
    ``value`` if it does: a task that succeeds when run again."""
    if not os.path.exists(marker_path):
        _touch(marker_path)
        crash(how)
    return value


def count_attempt_then_crash(attempts_dir):
    """Record one attempt (a file named after this worker's pid) in ``attempts_dir``, then die
    with SIGKILL: every run of the task crashes."""
    _touch(os.path.join(attempts_dir, f"attempt-{os.getpid()}"))
    crash("SIGKILL")


def sleep_and_return(seconds, value=None):
    """Sleep ``seconds`` (keep it short), then return ``value``."""
    time.sleep(seconds)
    return value


def sleep_and_get_pid(seconds):
    """Sleep ``seconds`` (keep it short), then return this worker's pid."""
    time.sleep(seconds)
    return os.getpid()


def block_on_value(gate_path, started_dir, x, blocking):
    """``x * x``; when ``x == blocking``, first mark ``started_dir/started-<x>`` and wait for
    the gate (a map item that hangs until its worker is killed or the gate opens)."""
    if x == blocking:
        _touch(os.path.join(started_dir, f"started-{x}"))
        if not wait_for_file(gate_path):
            return "gate-timeout"
    return x * x


def allocate_and_keep(size):
    """Allocate ``size`` bytes, touch every page, keep them alive in a global; return the pid."""
    _kept_alive.append(b"\x01" * size)
    return os.getpid()


class RaisesMemoryErrorWhenPickled:
    """A result that cannot be encoded for lack of memory (its ``__reduce__`` says so)."""

    def __reduce__(self):
        raise MemoryError("no memory left to encode this result")


def return_unencodable_for_memory():
    return RaisesMemoryErrorWhenPickled()


def spin(seconds):
    """Busy-loop (holding the GIL) for ``seconds``; return the pid."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass
    return os.getpid()


def record_start_and_block(started_dir, gate_path):
    """Mark ``started_dir/started-<pid>`` (one file per run of the task), then wait for the
    gate; return the pid (``"gate-timeout"`` if the gate never opened)."""
    _touch(os.path.join(started_dir, f"started-{os.getpid()}"))
    if not wait_for_file(gate_path):
        return "gate-timeout"
    return os.getpid()


def touch_and_spin(started_path, seconds):
    """Mark ``started_path`` (it holds the pid), then busy-loop for ``seconds`` holding the GIL."""
    _touch(started_path)
    return spin(seconds)


def slow_square(x, seconds=0.001):
    """``x * x`` after sleeping ``seconds``: a short task that still gives a soak time to act."""
    time.sleep(seconds)
    return x * x


def kill_quietly(pids):
    """SIGKILL each of ``pids`` that still exists (a test utility, not a task)."""
    import signal

    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


class ExitsWhenPickled:
    """A result whose ``__reduce__`` calls ``sys.exit(1)`` (CPython's test_deadlock
    ``ExitAtPickle``)."""

    def __reduce__(self):
        import sys

        sys.exit(1)


def return_exits_when_pickled():
    return ExitsWhenPickled()


def tick(x):
    """``x``, after busy-waiting 50 µs: an item of a long chunk whose progress shows."""
    end = time.perf_counter() + 50e-6
    while time.perf_counter() < end:
        pass
    return x


def unique_token(_=None):
    """A value no other call returns: two identical calls that both ran give two."""
    import uuid

    return uuid.uuid4().hex


def numpy_huge_page_advice(_=None):
    """Whether numpy, in this process, advises huge pages for the arrays it makes (reading the
    switch leaves it as it was: the setter returns the previous value)."""
    import numpy  # noqa: F401 - imported before the switch is read, as a task's module would

    from gilfree._workers import heap

    heap.settle_numpy()  # what the worker does after loading a function of a numpy module
    setter = heap._numpy_huge_page_setter()
    previous = setter(True)
    setter(previous)
    return bool(previous)


def page_faults_of_reuse(fraction):
    """The page faults of making an array of ``fraction`` of what this worker keeps of freed
    memory, after one of that size was made and freed: ``(first, second)``."""
    import resource

    import numpy

    from gilfree._workers import heap

    size = int(heap.kept_free_bytes() * fraction) // 8
    faults = []
    for _ in range(2):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        array = numpy.ones(size)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
        del array
    return tuple(faults)


def fill_then_free(size):
    """Fill ``size`` bytes of fresh memory, free them; return the pid."""
    data = bytearray(size)
    data[::4096] = b"\x01" * len(range(0, size, 4096))
    del data
    return os.getpid()


def set_key(mapping, key, value):
    """``mapping[key] = value`` (a ``multiprocessing.Manager`` proxy's shared dict); its size."""
    mapping[key] = value
    return len(mapping)


def keep_lock_and_counter(lock, counter):
    """An initializer: keeps a multiprocessing ``Lock`` and ``Value`` for `count_under_lock`."""
    global _LOCK_AND_COUNTER
    _LOCK_AND_COUNTER = (lock, counter)


def count_under_lock(value):
    """Adds one to the initializer's counter under its lock; returns ``value``."""
    lock, counter = _LOCK_AND_COUNTER
    with lock:
        counter.value += 1
    return value


def make_zeros(count):
    """A new float array of ``count`` zeros, made in the worker (1 MiB or more: a shared
    buffer the parent receives)."""
    import numpy

    return numpy.zeros(count)


def write_then_read_first(array, value, gate_path=None):
    """Writes ``value`` over ``array`` in place, waits for the gate if one is given, then
    returns ``array[0]``: what the task itself reads back from its own argument."""
    array[:] = value
    if gate_path is not None and not wait_for_file(gate_path):
        return "gate-timeout"
    return float(array[0])


_KEPT = []


def keep_and_return(array):
    """Keeps ``array`` in the worker (a cache), and returns it."""
    _KEPT.append(array)
    return array


def first_of_kept(_=None):
    """``float(kept[-1][0])``: the worker's cached array, as the worker sees it now."""
    return float(_KEPT[-1][0])


def add_one_in_place(array):
    """Adds one to ``array`` where it lies (as a task may change its argument); its first
    value after."""
    array += 1
    return float(array.flat[0])


def kind_and_writeable(value):
    """``value``'s type name, and whether it is writeable (arrays; None for others)."""
    if not hasattr(type(value), "flags"):  # never the value's own lookups: they may raise
        return type(value).__name__, None
    return type(value).__name__, bool(value.flags.writeable)


def make_record_array(count):
    """A numpy record array of ``count`` rows."""
    import numpy

    return numpy.rec.fromarrays([numpy.arange(count), numpy.zeros(count)], names="a,b")


class RaisingAttributes:
    """An object whose attribute lookups raise KeyError (a remote proxy's): it travels as it
    is, as pickle takes it."""

    def __getattr__(self, name):
        raise KeyError(f"remote attribute {name!r} not found")

    def __reduce__(self):
        return RaisingAttributes, ()
