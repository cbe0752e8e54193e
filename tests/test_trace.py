"""GILFREE_DEBUG=1: the ``gilfree`` logger traces units sent and replied, workers started,
ended and replaced, and how the work of a dead worker was settled; off, it prints nothing."""

from __future__ import annotations

import textwrap

import pytest

from support.processes import run_script

pytestmark = pytest.mark.gilfree_only

SCRIPT = textwrap.dedent(
    """
    import os
    import sys

    import gilfree


    def die_once(marker):
        if not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(7)
        return "again"


    def die(_):
        os._exit(9)


    if __name__ == "__main__":
        with gilfree.ProcessPoolExecutor(2, start_method=sys.argv[1]) as executor:
            print(sum(executor.map(abs, range(-50, 50))))
            print(executor.submit_with(die_once, ("marker",), retries=1).result(30))
            print(type(executor.submit(die, 0).exception(30)).__name__)
            print(sum(executor.map(abs, range(-50, 50), chunksize=1)))  # both slots again
    """
)


@pytest.mark.process_only
def test_a_debug_run_traces_units_workers_and_settlements(tmp_path, start_method):
    returncode, stdout, stderr = run_script(
        tmp_path, SCRIPT, start_method, environment={"GILFREE_DEBUG": "1"}
    )
    assert returncode == 0, stderr
    assert stdout.split() == ["2500", "again", "WorkerCrashedError", "2500"]
    expected = [
        "started a worker on slot 0, epoch 0",
        "sent CHUNK task",
        "reply CHUNK_RESULT for task",
        "sent CALL task",
        "ended (exit code 7) with 1 units in flight",
        "settled a call of __main__.die_once of pid",
        ": sent again",
        "(a replacement)",
        "reply RESULT for task",
        "ended (exit code 9)",
        "failed with WorkerCrashedError",
        "exited at shutdown (exit code 0)",
    ]
    missing = [line for line in expected if line not in stderr]
    assert not missing, f"not traced: {missing}\n{stderr}"
    assert all(line.startswith("gilfree[") for line in stderr.splitlines())


def test_without_it_nothing_is_printed(tmp_path):
    returncode, stdout, stderr = run_script(tmp_path, SCRIPT, "zygote")
    assert returncode == 0, stderr
    assert stdout.split() == ["2500", "again", "WorkerCrashedError", "2500"]
    assert stderr == ""
