"""Stress: pooled shared buffers under many large messages while workers get killed.

Buffers and messages of 1 MiB or more travel through pooled shared-memory regions that their
creator reuses once no live process maps them. Two failures are looked for here:

* a region handed out for a new copy while some process still reads an older message from it:
  every value carries content derived from its own seed, checked by the task on arrival and
  after a short sleep, by the parent on receipt, and again later while the parent still holds
  it (a sliding window of results, some of them sent on to another task by reference);
* regions never reused or freed: the number of shared mappings of the parent (and of the
  workers alive at the end) must stay bounded.

Meanwhile a thread kills random workers with SIGKILL a few times per second: every task must
still end with exactly one outcome, a verified result or ``WorkerCrashedError``.
"""

from __future__ import annotations

import gc
import os
import random
import signal
import threading
import time
from collections import deque

import pytest

from conftest import create_executor
from support import tasks
from support.limits import DATA_RESULT_TIMEOUT as RESULT_TIMEOUT
from support.limits import MIB
from support.processes import shutdown_within_deadline

pytestmark = [pytest.mark.gilfree_only, pytest.mark.timeout(120), pytest.mark.process_only]
numpy = pytest.importorskip("numpy")

#: Tasks submitted per case, in bursts of 1..MAX_BURST (``GILFREE_STRESS_TASKS`` for a longer
#: soak); fewer where workers retire, since each restart costs time.
TASK_COUNT = int(os.environ.get("GILFREE_STRESS_TASKS", "500"))
RETIRING_TASK_COUNT = TASK_COUNT * 2 // 5
MAX_BURST = 10
#: Rounds of (tasks while killing, then a few tasks without killing). The quiet tasks find
#: workers that hang: a worker forked while another thread of the parent held a lock.
ROUNDS = 5
QUIET_TASKS = 6
#: Seconds a quiet task may go without an outcome before it counts as hung.
HANG_TIMEOUT = 20
#: Results the parent keeps (and re-checks) after receiving them.
WINDOW = 8
#: Seconds between kills: uniform in this range (a few kills per second).
KILL_INTERVAL = (0.1, 0.3)
#: Kinds of values and how often each is sent.
KINDS = ["array"] * 4 + ["bytes"] * 2 + ["bytearray", "pair", "many"]
#: How many more shared mappings than after the warm-up the parent may have at the end. A
#: region that is never reused would add one per large message (hundreds, up to the 1 GiB pool).
MAPPING_GROWTH_BOUND = 3 * MAX_BURST + WINDOW
#: Shared mappings a live worker may have at the end (its pool of result buffers, and the
#: parent's buffers it still maps).
WORKER_MAPPING_BOUND = 3 * MAX_BURST + 2 * WINDOW


def gilfree_mappings(pid="self"):
    """How many shared buffers process ``pid`` maps now (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/maps") as maps:
            return sum("gilfree-buffer" in line for line in maps)
    except (FileNotFoundError, ProcessLookupError):
        return 0


def parent_pid(pid):
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return int(handle.read().rsplit(")", 1)[1].split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None


class Killer(threading.Thread):
    """Kills a random live worker of ``executor`` with SIGKILL every few hundred ms."""

    def __init__(self, executor):
        super().__init__(name="stress-killer", daemon=True)
        self.executor = executor
        self.stop = threading.Event()
        self.paused = threading.Event()
        self.kills = 0
        self.error: BaseException | None = None

    def run(self):
        chooser = random.Random()
        try:
            while not self.stop.wait(chooser.uniform(*KILL_INTERVAL)):
                if self.paused.is_set():
                    continue
                # pid 0 is a zygote worker whose pid is not known yet (os.kill(0) would kill
                # our own process group); a pid whose parent is neither us nor the zygote has
                # ended and been reused.
                pids = [pid for pid in self.executor._processes if pid > 0]
                if not pids:
                    continue
                pid = chooser.choice(pids)
                if parent_pid(pid) not in {os.getpid(), *_zygote_pids()}:
                    continue
                try:
                    os.kill(pid, signal.SIGKILL)
                    self.kills += 1
                except ProcessLookupError:
                    pass
        except BaseException as error:
            self.error = error


def _zygote_pids():
    from gilfree._workers import zygote

    return set(zygote.pids())


class Plan:
    """What each task sends and expects, from a fixed random sequence."""

    def __init__(self, seed):
        self.random = random.Random(seed)
        self.next_seed = 1

    def fresh_seed(self):
        self.next_seed += 1
        return self.next_seed

    def length(self):
        return 8 * self.random.randrange(MIB // 8, 8 * MIB // 8)

    def task(self, window, fresh_reply=False):
        """``(kind, seed, length, value, reply_seed, reply_length, sleep)`` for one task. About
        one task in eight sends on a result the parent holds (a buffer of a worker, by
        reference) instead of a fresh value."""
        forwardable = [entry for entry in window if entry[0] == "array"]
        if forwardable and self.random.random() < 0.125:
            kind, seed, length, value = self.random.choice(forwardable)
        else:
            kind, seed, length = self.random.choice(KINDS), self.fresh_seed(), self.length()
            value = tasks.make_stress_value(kind, seed, length)
        if self.random.random() < 0.5 and not fresh_reply:
            reply_seed, reply_length = None, length  # the task returns what it received
        else:
            reply_seed, reply_length = self.fresh_seed(), self.length()
        sleep = self.random.uniform(0.0, 0.002)
        return kind, seed, length, value, reply_seed, reply_length, sleep


class Outcomes:
    def __init__(self):
        self.verified = 0
        self.crashed = 0
        self.corrupt: list[str] = []
        self.unexpected: list[str] = []
        #: Done callbacks run: one per future, however it ended.
        self.completions = 0
        self._lock = threading.Lock()

    def note_done(self, _future):
        with self._lock:
            self.completions += 1

    def total(self):
        return self.verified + self.crashed + len(self.corrupt) + len(self.unexpected)


def settle(future, expected, outcomes, window, timeout=RESULT_TIMEOUT):
    """Records the one outcome of ``future``; verified results join the window."""
    import gilfree

    kind, seed, length = expected
    try:
        value = future.result(timeout=timeout)
    except TimeoutError:
        outcomes.unexpected.append(f"{kind} seed {seed}: no outcome within {timeout} s (hung?)")
        return
    except gilfree.WorkerCrashedError:
        outcomes.crashed += 1
        return
    except tasks.StressCorruption as error:
        outcomes.corrupt.append(f"in a worker: {error}")
        return
    except Exception as error:
        outcomes.unexpected.append(f"{kind} seed {seed}: {type(error).__name__}: {error}")
        return
    problem = tasks.check_stress_value(kind, seed, length, value)
    if problem is not None:
        outcomes.corrupt.append(f"in the parent, on receipt of {kind} seed {seed}: {problem}")
        return
    outcomes.verified += 1
    window.append((kind, seed, length, value))


def recheck(entry, outcomes, when):
    kind, seed, length, value = entry
    problem = tasks.check_stress_value(kind, seed, length, value)
    if problem is not None:
        outcomes.corrupt.append(f"in the parent, {when}, {kind} seed {seed}: {problem}")


def run_bursts(executor, plan, task_count, outcomes, window, chooser, quiet=False):
    """Submits ``task_count`` tasks in bursts; settles each burst after the next is submitted
    (so two bursts are in flight); re-checks held results as they age. Returns the count.
    ``quiet``: every task makes a fresh reply, and a task without an outcome within
    HANG_TIMEOUT counts as hung (no worker is killed then, so none should hang)."""
    submitted = 0
    previous: list = []
    timeout = HANG_TIMEOUT if quiet else RESULT_TIMEOUT
    while submitted < task_count or previous:
        current = []
        burst = min(chooser.randint(1, MAX_BURST), task_count - submitted)
        for _ in range(burst):
            kind, seed, length, value, reply_seed, reply_length, sleep = plan.task(window, quiet)
            future = executor.submit(
                tasks.stress_task, kind, seed, length, value, reply_seed, reply_length, sleep
            )
            future.add_done_callback(outcomes.note_done)
            submitted += 1
            if reply_seed is None:
                expected = (kind, seed, length)
            else:
                expected = (kind, reply_seed, reply_length)
            current.append((future, expected))
            del value
        for future, expected in previous:
            if len(window) == WINDOW:
                recheck(window.popleft(), outcomes, "when dropping it from the window")
            settle(future, expected, outcomes, window, timeout)
        if window:
            recheck(chooser.choice(window), outcomes, "while holding it")
        previous = current
    return submitted


@pytest.mark.parametrize(
    ("start_method", "max_tasks_per_child", "task_count"),
    [
        ("zygote", None, TASK_COUNT),
        ("fork", None, TASK_COUNT),
        ("zygote", 5, RETIRING_TASK_COUNT),
    ],
    ids=["zygote", "fork", "zygote-max_tasks_per_child=5"],
)
def test_large_messages_stay_intact_and_buffers_are_reused_while_workers_die(
    start_method, max_tasks_per_child, task_count
):
    """Workers also retire on their own with ``max_tasks_per_child``: a worker that exits
    right after its last reply must not take that reply's buffers with it."""
    executor = create_executor(
        max_workers=2, start_method=start_method, max_tasks_per_child=max_tasks_per_child
    )
    killer = Killer(executor)
    try:
        plan, chooser = Plan(seed=1234), random.Random(5678)
        outcomes, window = Outcomes(), deque()

        # Warm-up without kills: fills the pools, then the baseline.
        warm_up = run_bursts(executor, plan, 3 * MAX_BURST, outcomes, window, chooser)
        while window:
            recheck(window.popleft(), outcomes, "at the end of the warm-up")
        gc.collect()
        baseline = gilfree_mappings()

        killer.paused.set()
        killer.start()
        stressed = 0
        for _ in range(ROUNDS):
            killer.paused.clear()
            stressed += run_bursts(executor, plan, task_count // ROUNDS, outcomes, window, chooser)
            killer.paused.set()
            time.sleep(max(KILL_INTERVAL))  # a kill chosen before the pause has happened
            stressed += run_bursts(executor, plan, QUIET_TASKS, outcomes, window, chooser, True)
        killer.stop.set()
        killer.join(10)
        assert not killer.is_alive()
        assert killer.error is None, f"the killer thread failed: {killer.error!r}"

        while window:
            recheck(window.popleft(), outcomes, "at the end")
        gc.collect()

        # The executor still works, and the workers alive now hold a bounded number of buffers.
        final = tasks.make_stress_value("array", 10**6, 2 * MIB)
        echoed = executor.submit(tasks.stress_task, "array", 10**6, 2 * MIB, final, None, 0, 0)
        echoed = echoed.result(RESULT_TIMEOUT)
        assert tasks.check_stress_value("array", 10**6, 2 * MIB, echoed) is None
        del final, echoed
        gc.collect()
        worker_mappings = {pid: gilfree_mappings(pid) for pid in executor._processes if pid > 0}
        parent_mappings = gilfree_mappings()
    finally:
        killer.stop.set()
        shutdown_within_deadline([executor])

    report = (
        f"{start_method}, max_tasks_per_child={max_tasks_per_child}: "
        f"{stressed + warm_up} tasks, {killer.kills} kills, "
        f"{outcomes.verified} verified, {outcomes.crashed} crashed; "
        f"parent mappings {baseline} after warm-up, {parent_mappings} at the end; "
        f"workers {worker_mappings}"
    )
    print(report)
    assert not outcomes.corrupt, f"corrupted content ({report}):\n" + "\n".join(
        outcomes.corrupt[:20]
    )
    assert not outcomes.unexpected, (
        f"outcomes other than a result or WorkerCrashedError ({report}):\n"
        + "\n".join(outcomes.unexpected[:20])
    )
    assert outcomes.total() == stressed + warm_up, report
    assert outcomes.completions == stressed + warm_up, report
    assert outcomes.verified > 0, report
    assert parent_mappings <= baseline + MAPPING_GROWTH_BOUND, f"shared mappings grew: {report}"
    # A forked worker also maps whatever the parent mapped when it was forked.
    worker_bound = WORKER_MAPPING_BOUND + (parent_mappings if start_method == "fork" else 0)
    for pid, count in worker_mappings.items():
        assert count <= worker_bound, f"worker {pid} maps {count} buffers: {report}"
