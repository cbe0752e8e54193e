"""Where the numeric buffers of received numpy, pandas and Arrow objects lie: in gilfree's
shared memory (read in place: no copy on the receiving side) or in private memory (copied).

The functions run in workers too (they are imported by reference).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pandas as pd


def shared_ranges() -> list[tuple[int, int]]:
    """The address ranges of this process's mappings of gilfree's shared buffers."""
    ranges = []
    with open("/proc/self/maps") as maps:
        for line in maps:
            if "gilfree-buffer" in line:
                start, end = line.split()[0].split("-")
                ranges.append((int(start, 16), int(end, 16)))
    return ranges


def addresses(value: Any) -> list[tuple[int, int]]:
    """``(address, length)`` of each numeric buffer of ``value``: an ndarray, a pandas
    DataFrame, Series or Index, or a pyarrow Table or RecordBatch."""
    if isinstance(value, np.ndarray):
        return [(value.__array_interface__["data"][0], value.nbytes)]
    if isinstance(value, pd.DataFrame):
        return [pair for column in value.columns for pair in addresses(value[column].to_numpy())]
    if isinstance(value, (pd.Series, pd.Index)):
        return addresses(value.to_numpy())
    found = []
    for column in value.columns:  # pyarrow: a Table's ChunkedArrays, a RecordBatch's Arrays
        for chunk in getattr(column, "chunks", [column]):
            found += [(buffer.address, buffer.size) for buffer in chunk.buffers() if buffer]
    return found


def placement(value: Any) -> dict[str, Any]:
    """Where ``value``'s numeric buffers lie, seen from this process."""
    ranges = shared_ranges()
    inside = [
        any(start <= address and address + length <= end for start, end in ranges)
        for address, length in addresses(value)
        if length
    ]
    return {"pid": os.getpid(), "buffers": len(inside), "shared": sum(inside)}


def echo(value: Any) -> Any:
    """Returns ``value``, for the reply path."""
    return value


def frame(rows: int, seed: int = 0) -> pd.DataFrame:
    """A DataFrame of an int key and two float columns."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {"key": rng.integers(0, 100, rows), "a": rng.random(rows), "b": rng.random(rows)}
    )


def group_means(value: pd.DataFrame) -> pd.DataFrame:
    """A typical task over a frame."""
    return value.groupby("key").mean()


def resident_bytes() -> int:
    """This process's resident memory."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def shared_mapping_count() -> int:
    """How many gilfree shared buffers this process maps."""
    return len(shared_ranges())
