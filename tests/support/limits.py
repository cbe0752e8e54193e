"""The suite's time limits and sizes, each defined once."""

from __future__ import annotations

from pathlib import Path

#: Seconds a test waits for the result of a quick task before failing.
RESULT_TIMEOUT = 30
#: Seconds a test waits for a result that moves a lot of data (tens of MB, thousands of tasks).
DATA_RESULT_TIMEOUT = 60
#: How long a blocking task waits for its gate, and a test for its tasks to start (seconds).
GATE_TIMEOUT = 30.0
#: Seconds a fixture's teardown waits for ``shutdown`` (or a pool's terminate and join).
SHUTDOWN_DEADLINE = 30.0
#: Seconds a terminated process (``Process.terminate``, ``Pool.terminate``) has to end.
TERMINATE_DEADLINE = 5.0
#: How long to wait for processes to disappear before calling them leaked.
EXIT_DEADLINE = 10.0
#: Seconds a script run in a child interpreter may take.
SCRIPT_TIMEOUT = 45
#: The tests' folder: scripts run in a child interpreter put it on ``sys.path``.
TESTS_DIRECTORY = str(Path(__file__).resolve().parent.parent)
MIB = 1 << 20
