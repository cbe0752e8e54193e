"""A worker's memory policy: how much freed memory it keeps, and which pages numpy asks for.

A worker is a new process, so every page of its heap is new to it, and its first tasks pay the
kernel (and, in a virtual machine, the host) for each one. Two settings keep that cost to once
per page, and small:

* **Freed memory is kept.** glibc returns freed blocks of 128 KiB or more to the system, so a
  task that makes an 80 MB array faults in 80 MB of fresh pages every time. A worker instead
  keeps up to `kept_free_bytes` of freed heap memory and serves blocks of up to half of that
  from the heap (``gilfree_core::memory``): the second task of the same sizes faults in nothing.
  The bound is 1 GiB, and at most a quarter of the machine's memory spread over one worker per
  core. Kept memory stays resident, so under ``max_memory_per_child`` it is at most a quarter
  of that limit: memory kept for reuse alone does not get a worker replaced.
* **No fresh huge pages where the host takes free memory back.** numpy asks the kernel for
  huge pages (``MADV_HUGEPAGE``) for every array of 4 MiB or more. Where the kernel reports its
  free memory to a hypervisor (virtio-balloon's free page reporting, in 2 MiB blocks), a fresh
  huge page is exactly such a block, which the host must back again: measured here, 80 MB of
  fresh huge pages took 430 ms to fill against 52 ms in 4 KiB pages, and the first fit of a
  grid search took 1.8 s in each of two workers against 0.27 s. So on such machines workers
  ask numpy for ordinary pages (`settle_numpy`, once numpy is imported). Steady-state work
  reuses its kept pages either way; it then runs up to about 10% slower in 4 KiB pages (a
  ridge fit on 80 MB: 170 ms against 155 ms), which a worker makes up after well over a hundred
  such tasks. Elsewhere nothing changes.
"""

from __future__ import annotations

import functools
import glob
import os
import sys
from collections.abc import Callable

from gilfree import _core

#: Freed memory a worker keeps for its next tasks: at least this...
KEPT_FREE_MIN = 64 << 20
#: ...and at most this, and at most a quarter of the memory spread over one worker per core.
KEPT_FREE_MAX = 1 << 30
#: Never less than glibc keeps on its own (it maps blocks of 128 KiB or more anew): a tiny
#: ``max_memory_per_child`` must not turn every allocation into a system call.
KEPT_FREE_FLOOR = 256 << 10
#: The virtio-balloon devices' negotiated features: one "0" or "1" per feature bit.
BALLOON_FEATURES = "/sys/bus/virtio/drivers/virtio_balloon/virtio*/features"
#: VIRTIO_BALLOON_F_REPORTING: the kernel reports free memory to the host.
FREE_PAGE_REPORTING_BIT = 5

_numpy_settled = False


def configure(max_memory: int | None = None) -> None:
    """Applies the policy in this worker process, whose resident memory is limited to
    ``max_memory`` bytes if given (numpy's part waits for numpy's import)."""
    _core.keep_freed_memory(kept_free_bytes(max_memory))
    settle_numpy()


def settle_numpy() -> None:
    """Applies numpy's part of the policy once numpy is imported; cheap to call again."""
    global _numpy_settled
    if _numpy_settled or "numpy" not in sys.modules:
        return
    _numpy_settled = True
    if host_reclaims_free_memory():
        set_huge_pages = _numpy_huge_page_setter()
        if set_huge_pages is not None:
            set_huge_pages(False)


def kept_free_bytes(max_memory: int | None = None) -> int:
    """How much freed memory a worker keeps, its resident memory limited to ``max_memory``
    bytes if given (see the module's notes)."""
    try:
        memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        kept = KEPT_FREE_MIN
    else:
        kept = max(KEPT_FREE_MIN, min(KEPT_FREE_MAX, memory // (4 * (os.cpu_count() or 1))))
    return kept if max_memory is None else min(kept, max(max_memory // 4, KEPT_FREE_FLOOR))


@functools.cache
def host_reclaims_free_memory() -> bool:
    """Whether this kernel reports its free memory to a hypervisor (free page reporting)."""
    for path in glob.glob(BALLOON_FEATURES):
        try:
            with open(path) as features:
                bits = features.read().strip()
        except OSError:
            continue
        if len(bits) > FREE_PAGE_REPORTING_BIT and bits[FREE_PAGE_REPORTING_BIT] == "1":
            return True
    return False


def _numpy_huge_page_setter() -> Callable[[bool], object] | None:
    """numpy's switch for its ``MADV_HUGEPAGE`` advice (a private function of numpy 1.x and
    2.x, ``_set_madvise_hugepage``), or None where this numpy has none."""
    numpy = sys.modules["numpy"]
    for module in ("_core", "core"):  # numpy 2, numpy 1
        multiarray = getattr(getattr(numpy, module, None), "multiarray", None)
        setter: Callable[[bool], object] | None = getattr(multiarray, "_set_madvise_hugepage", None)
        if callable(setter):
            return setter
    return None
