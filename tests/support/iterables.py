"""Inputs that tell how far a map read them."""

from __future__ import annotations

import itertools
from collections.abc import Iterator


class CountingEndless:
    """0, 1, 2, ... without end (``items()``), counting the items read so far (``read``)."""

    def __init__(self) -> None:
        self.read = 0

    def items(self) -> Iterator[int]:
        """A generator of the numbers, each counted as it is read."""
        for number in itertools.count():
            self.read += 1
            yield number
