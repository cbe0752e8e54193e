"""Running code cells the way a notebook user does: in a Jupyter kernel (nbclient)."""

from __future__ import annotations

import os
import sys

import pytest


def run_notebook(tmp_path, cells: list[str], timeout: float = 60) -> str:
    """Runs ``cells`` in a fresh python3 kernel started in ``tmp_path``; returns the text the
    last cell printed. Skips the test where nbformat or nbclient is missing."""
    outputs = notebook_outputs(tmp_path, cells, timeout)
    return "".join(output.get("text", "") for output in outputs)


def notebook_outputs(tmp_path, cells: list[str], timeout: float = 60) -> list[dict]:
    """Runs ``cells`` as ``run_notebook`` does; returns the last cell's outputs (streams and
    displays, as nbformat records them)."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(source) for source in cells]
    notebook.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    client = nbclient.NotebookClient(
        notebook,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    environment = {
        "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
    }
    with pytest.MonkeyPatch.context() as patch:
        for name, value in environment.items():
            patch.setenv(name, value)
        client.execute()
    return list(notebook.cells[-1].outputs)
