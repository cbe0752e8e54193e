"""Command line and measurement plan of ``python -m gilfree bench``.

The parent measures nothing itself: it plans, for each workload, one cell per contender (and its
baseline row, if any), and runs each cell in a fresh interpreter started on the workload's main
script (``gilfree/bench/scripts``: one that imports numpy and pandas, or one that imports only
the stdlib executor), with a timeout, its process group killed afterwards. So what a worker must
load to start (the user's main script and its imports) is part of every measurement, and no
cell inherits a pool or a template process from another. Workloads that share a ``session`` run
in one interpreter per contender (both cold starts: the second executor must follow the first),
and with ``--quick`` so do the steady-state rows of one contender, to save the interpreters'
start; a ``fresh`` workload's repetitions are more interpreters, the best kept, run in rounds
across the row's contenders (see `run_row`). A workload's ``environment`` (one BLAS thread for
the numpy rows) is set in its interpreters' environment, and workloads with different ones
never share an interpreter. Before the first cell, one unmeasured interpreter per main script
warms the disk cache. The measuring side is `gilfree.bench.child`; ratios compare rows of the
same run (see `gilfree.bench.report`).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from gilfree.bench import contenders as contender_registry
from gilfree.bench import report
from gilfree.bench.child import planned_repetitions, repetitions_allowed
from gilfree.bench.main_scripts import SCRIPT_REQUIRES, script_path
from gilfree.bench.suite import SUITE
from gilfree.bench.workloads import Settings, Workload

#: Seconds an interpreter may take beyond its measurements' timeouts (start, imports, exit).
INTERPRETER_ALLOWANCE_SECONDS = 60.0
#: How long what an interpreter left behind (a fork server, a template process) may take to exit
#: by itself before its process group is killed.
LEFTOVER_GRACE_SECONDS = 0.5


@dataclass
class Batch:
    """Workloads measured in one interpreter (``runs`` of them) for one contender or baseline,
    with ``environment`` added to this process's environment."""

    script: str
    key: str
    name: str
    baseline: bool
    workloads: list[Workload] = field(default_factory=list)
    runs: int = 1
    environment: tuple[tuple[str, str], ...] = ()


@dataclass
class Outcome:
    """What one interpreter reported for one workload: its value (and its note) or its error."""

    value: float | None
    error: str | None
    detail: str | None = None


def kill_leftovers(group: int) -> None:
    """Wait up to `LEFTOVER_GRACE_SECONDS` for process group ``group`` (an interpreter we
    started, in a session of its own, and what it started) to end, then kill what is left."""
    ends = time.monotonic() + LEFTOVER_GRACE_SECONDS
    while time.monotonic() < ends:
        try:
            os.killpg(group, 0)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.02)
    try:
        os.killpg(group, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def last_line(path: Path) -> str:
    """The last non-empty line of the text file ``path`` (an interpreter's output)."""
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1].strip()[:200] if lines else "no output"


def run_interpreter(batch: Batch, settings: Settings) -> dict[str, Outcome]:
    """Run ``batch`` once in a fresh interpreter on its main script; each workload's outcome.

    The interpreter gets the measurements' timeouts plus `INTERPRETER_ALLOWANCE_SECONDS`; past
    that its process group is killed and the workloads not reported yet become errors.
    """
    with tempfile.TemporaryDirectory(prefix="gilfree-bench-") as folder:
        request_path = Path(folder) / "request.json"
        results_path = Path(folder) / "results.jsonl"
        output_path = Path(folder) / "output.txt"
        request = {
            "contender": batch.key,
            "baseline": batch.baseline,
            "workloads": [workload.key for workload in batch.workloads],
            "settings": dataclasses.asdict(settings),
            "results": str(results_path),
        }
        request_path.write_text(json.dumps(request))
        results_path.touch()
        limit = settings.timeout_seconds * len(batch.workloads) + INTERPRETER_ALLOWANCE_SECONDS
        command = [sys.executable, str(script_path(batch.script)), str(request_path)]
        environment = {**os.environ, **dict(batch.environment)} if batch.environment else None
        with output_path.open("w") as output:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=environment,
            )
            try:
                status: int | None = process.wait(timeout=limit)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                status = None
            finally:
                kill_leftovers(process.pid)
        outcomes: dict[str, Outcome] = {}
        for line in results_path.read_text().splitlines():
            result = json.loads(line)
            outcomes[result["workload"]] = Outcome(
                result["value"], result["error"], result.get("detail")
            )
        if status is None:
            reason = f"BenchTimeout: interpreter killed after {limit:g} s"
        else:
            reason = f"interpreter exited with status {status}: {last_line(output_path)}"
        for workload in batch.workloads:
            outcomes.setdefault(workload.key, Outcome(None, reason))
        return outcomes


def run_row(batches: list[Batch], settings: Settings) -> list[dict[str, Outcome]]:
    """Run ``batches`` (one row's contenders: the same workloads) in rounds, each round one
    interpreter of every batch with runs left, and combine each batch's (`best_outcomes`). The
    machine drifts over a row's minutes (other load, memory bandwidth): in rounds, every
    contender meets the drift alike, where running one contender's repetitions after another's
    would favour whichever ran in the quiet minutes."""
    runs: list[list[dict[str, Outcome]]] = [[] for _ in batches]
    for round_index in range(max((batch.runs for batch in batches), default=0)):
        for batch, made in zip(batches, runs):
            if round_index < batch.runs:
                made.append(run_interpreter(batch, settings))
    return [best_outcomes(batch, made) for batch, made in zip(batches, runs)]


def rows_of(batches: list[Batch]) -> list[list[Batch]]:
    """``batches`` grouped by the workloads they measure (one group per row, or per session of
    rows), in the order their first batch was planned."""
    rows: dict[tuple[str, ...], list[Batch]] = {}
    for batch in batches:
        rows.setdefault(tuple(workload.key for workload in batch.workloads), []).append(batch)
    return list(rows.values())


def best_outcomes(batch: Batch, runs: list[dict[str, Outcome]]) -> dict[str, Outcome]:
    """Per workload of ``batch``, the best value over its ``runs`` (with its note), or an
    error."""
    combined: dict[str, Outcome] = {}
    for workload in batch.workloads:
        outcomes = [run[workload.key] for run in runs]
        errors = [outcome.error for outcome in outcomes if outcome.error is not None]
        measured = [outcome for outcome in outcomes if outcome.value is not None]
        if errors or not measured:
            combined[workload.key] = Outcome(None, errors[0] if errors else "no value")
        else:
            combined[workload.key] = min(measured, key=lambda outcome: outcome.value or 0.0)
    return combined


def runs_contender(workload: Workload, entry: contender_registry.Entry, *, named: set[str]) -> bool:
    """Whether ``entry`` measures ``workload``: listed by it, or (when the workload lists none)
    in the default set (``everywhere``) or ``named`` by its own key on the command line (not
    only through a group such as ``ppe``)."""
    if workload.contenders is not None:
        return entry.key in workload.contenders
    return entry.everywhere or entry.key in named


def plan_batches(
    workloads: list[Workload],
    entries: list[contender_registry.Entry],
    settings: Settings,
    *,
    named: set[str],
) -> list[Batch]:
    """Group the cells (workload x contender, and baselines) into interpreters, in suite order.

    One interpreter per cell, but workloads of one ``session`` share one per contender; with
    ``--quick`` (``settings.quick``), so do all ``shareable`` workloads without a session. Only
    workloads with the same main script and ``environment`` ever share one.
    """
    batches: list[Batch] = []
    sessions: dict[tuple[str, str, str, tuple[tuple[str, str], ...]], Batch] = {}
    for workload in workloads:
        session = workload.session
        if session is None and settings.quick and workload.shareable:
            session = "quick"
        cells = [
            (entry.key, entry.name, False)
            for entry in entries
            if runs_contender(workload, entry, named=named)
        ]
        if workload.baseline is not None and not workload.baseline.computed:
            cells.insert(0, (workload.baseline.key, workload.baseline.name, True))
        for key, name, is_baseline in cells:
            runs = 1
            if workload.fresh:
                runs = repetitions_allowed(workload, key, planned_repetitions(workload, settings))
            group = (workload.script, session or "", key, workload.environment)
            batch = sessions.get(group) if session else None
            if batch is None:
                batch = Batch(
                    workload.script, key, name, is_baseline, environment=workload.environment
                )
                batches.append(batch)
                if session:
                    sessions[group] = batch
            batch.workloads.append(workload)
            batch.runs = max(batch.runs, runs)
    return batches


def warm_up(scripts: set[str], settings: Settings) -> None:
    """Start an interpreter on each main script once, measuring nothing, so that the first
    measured cell does not pay for reading numpy and pandas from a cold disk cache."""
    for script in sorted(scripts):
        run_interpreter(Batch(script, "warm-up", "warm-up", baseline=True), settings)


def split_names(text: str | None) -> list[str]:
    """Split a comma-separated option into its non-empty names."""
    return [name.strip() for name in (text or "").split(",") if name.strip()]


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    """Parse the command line of ``python -m gilfree bench``."""
    parser = argparse.ArgumentParser(
        prog="python -m gilfree bench",
        description="Compare gilfree with the stdlib pools (and loky, mpire when installed).",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smaller sizes, one repetition (a few on cheap rows)"
    )
    parser.add_argument("--plot", metavar="FILE", help="write a PNG bar chart (needs matplotlib)")
    parser.add_argument("--workers", type=int, default=2, help="workers per pool (default 2)")
    workload_keys = ",".join(workload.key for workload in SUITE)
    parser.add_argument(
        "--only",
        metavar="NAME[,NAME]",
        help=f"workloads among {workload_keys} (a prefix such as 'echo' or 'codec' picks a group)",
    )
    contender_keys = ",".join(entry.key for entry in contender_registry.REGISTRY)
    parser.add_argument(
        "--contenders", metavar="NAME[,NAME]", help=f"contenders among {contender_keys}"
    )
    parser.add_argument(
        "--timeout", type=float, default=120.0, help="seconds before a measurement is abandoned"
    )
    arguments = parser.parse_args(argv)
    if arguments.workers < 1:
        parser.error("--workers must be at least 1")
    return arguments


def matches(workload: Workload, name: str) -> bool:
    """Whether ``name`` ('-' or '_') is the key of ``workload`` or its group, such as ``echo``."""
    wanted = name.replace("-", "_").lower()
    return workload.key == wanted or workload.key.startswith(wanted + "_")


def select_workloads(names: list[str]) -> list[Workload]:
    """Return the workloads named (keys or groups), or all of them, in suite order; raise on an
    unknown name."""
    if not names:
        return list(SUITE)
    unknown = [name for name in names if not any(matches(workload, name) for workload in SUITE)]
    if unknown:
        keys = ", ".join(workload.key for workload in SUITE)
        raise ValueError(f"unknown workload {', '.join(unknown)}; choose among {keys}")
    return [workload for workload in SUITE if any(matches(workload, name) for name in names)]


def prepare_workloads(workloads: list[Workload], settings: Settings) -> list[Workload]:
    """Title the workloads for this run's sizes; skip, with a note, those missing a module (their
    own, or one their main script imports: numpy and pandas for most)."""
    prepared: list[Workload] = []
    for workload in workloads:
        if workload.sized_title is not None:
            workload = dataclasses.replace(workload, title=workload.sized_title(settings))
        required = (*SCRIPT_REQUIRES[workload.script], workload.requires or "")
        missing = [name for name in required if name and importlib.util.find_spec(name) is None]
        if missing:
            print(f"{workload.title}: skipped, {', '.join(missing)} not importable")
            continue
        prepared.append(workload)
    return prepared


def select_entries(names: list[str]) -> list[contender_registry.Entry]:
    """Return the registry entries named (keys, names, or a group such as ``ppe``), or all of
    them, in registry order; raise on an unknown name."""
    if not names:
        return list(contender_registry.REGISTRY)
    found = {name: contender_registry.find_entries(name) for name in names}
    unknown = [name for name, entries in found.items() if not entries]
    if unknown:
        keys = ", ".join(entry.key for entry in contender_registry.REGISTRY)
        raise ValueError(f"unknown contender {', '.join(unknown)}; choose among {keys}")
    chosen = {entry.key for entries in found.values() for entry in entries}
    return [entry for entry in contender_registry.REGISTRY if entry.key in chosen]


def build_settings(arguments: argparse.Namespace) -> Settings:
    """Return the sizes of this run: the full suite, or a shorter one with ``--quick``."""
    quick = arguments.quick
    return Settings(
        workers=arguments.workers,
        repetitions=1 if quick else 3,
        round_trips=500 if quick else 2000,
        tiny_task_count=30_000 if quick else 100_000,
        startup_cycles=5 if quick else 10,
        timeout_seconds=arguments.timeout,
        quick=quick,
        echo_items=1_000_000 if quick else 3_000_000,
        array_items=6_250_000 if quick else 25_000_000,
        codec_items=1_000_000,
        matrix_count=600 if quick else 3000,
        frame_count=60 if quick else 200,
        big_frame_megabytes=20 if quick else 80,
        joblib_megabytes=25 if quick else 100,
    )


def computed_rows(workloads: list[Workload], settings: Settings) -> list[report.Row]:
    """The baseline rows worked out from the settings rather than measured (budgets)."""
    return [
        report.Row(workload, baseline.key, baseline.name, baseline.measure(settings), None)
        for workload in workloads
        if (baseline := workload.baseline) is not None and baseline.computed
    ]


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark suite, print the table (and write the chart); return the exit status."""
    started = time.perf_counter()
    arguments = parse_arguments(argv)
    try:
        workloads = select_workloads(split_names(arguments.only))
        entries = select_entries(split_names(arguments.contenders))
    except ValueError as error:
        print(f"gilfree bench: {error}", file=sys.stderr)
        return 2
    names = split_names(arguments.contenders)
    entries, notes = contender_registry.available_entries(entries, explicit=bool(names))
    for note in notes:
        print(note)
    settings = build_settings(arguments)
    workloads = prepare_workloads(workloads, settings)
    named = {  # contenders named by key or name, not only through a group
        entry.key
        for entry in entries
        for name in names
        if name.lower().replace("-", "_") in (entry.key, entry.name.lower())
    }
    batches = plan_batches(workloads, entries, settings, named=named)
    warm_up({batch.script for batch in batches}, settings)
    rows = computed_rows(workloads, settings)
    interpreters = 0
    for row_batches in rows_of(batches):
        row_started = time.perf_counter()
        row_outcomes = run_row(row_batches, settings)
        elapsed = time.perf_counter() - row_started
        count = sum(batch.runs for batch in row_batches)
        interpreters += count
        titles = ", ".join(workload.title for workload in row_batches[0].workloads)
        print(f"{titles} ({count} interpreter(s), {elapsed:.1f} s):", file=sys.stderr)
        for batch, outcomes in zip(row_batches, row_outcomes):
            for workload in batch.workloads:
                outcome = outcomes[workload.key]
                row = report.Row(
                    workload, batch.key, batch.name, outcome.value, outcome.error, outcome.detail
                )
                rows.append(row)
                progress = f"  {workload.title} / {batch.name}: {report.format_row_value(row)}"
                print(progress, file=sys.stderr, flush=True)
    rows = report.in_table_order(rows, workloads, [entry.key for entry in entries])
    print(report.format_table(rows, settings))
    if arguments.plot:
        print(report.write_plot(rows, arguments.plot, settings))
    print(f"{interpreters} interpreters, {time.perf_counter() - started:.0f} s")
    return 0
