"""The benchmark's text table, its targets check and its optional PNG chart.

Every ratio is ``reference / contender``, both measured in the same run (times, or memory for
the memory row), so a ratio above 1 means the contender is faster (or smaller) than the
reference. The table comes in sections, one per set of reference rows its ratio columns use
(``Workload.references``): ProcessPoolExecutor and multiprocessing.Pool for the steady-state
rows, pickle for the codec rows, the sequential loop and the stdlib executor at its best
chunksize for the numpy and pandas maps (at its default for the single submit), the stdlib
executor with fork and forkserver for the start-up and memory rows. The chart has one panel per
first reference.
"""

from __future__ import annotations

import itertools
import os
import platform
import textwrap
from dataclasses import dataclass
from typing import Any

from gilfree.bench.main_scripts import SCRIPT_IMPORTS
from gilfree.bench.workloads import Settings, Target, Workload

REFERENCE_NAMES = {
    "ppe": "PPE",
    "ppe_fork": "PPE(fork)",
    "ppe_forkserver": "PPE(forkserver)",
    "ppe_spawn": "PPE(spawn)",
    "ppe_best": "PPE(best chunksize)",
    "pool": "Pool",
    "sequential": "sequential",
    "pickle": "pickle",
    "jl_loky": "loky",
    "jl_seq": "n_jobs=1",
    "jl_threads": "threading",
    "loop": "plain loop",
}


@dataclass(frozen=True)
class Row:
    """One measured cell: a workload run by a contender, its value (seconds, or bytes when the
    workload's unit is ``"B"``) and its note (the chunksize a sweep kept), or the error it
    raised."""

    workload: Workload
    contender_key: str
    contender_name: str
    value: float | None
    error: str | None
    detail: str | None = None


def format_seconds(seconds: float) -> str:
    """Format a duration with a unit that keeps three significant figures readable."""
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds * 1e6:.1f} µs"


def format_value(value: float, unit: str) -> str:
    """Format a row's value: a duration, or a size in MiB when ``unit`` is ``"B"``."""
    if unit == "B":
        return f"{value / 2**20:.1f} MiB"
    return format_seconds(value)


def format_ratio(ratio: float | None) -> str:
    """Format a speed ratio such as ``12.3×``; empty when unknown."""
    if ratio is None:
        return ""
    if ratio >= 100:
        return f"{ratio:.0f}×"
    if ratio >= 10:
        return f"{ratio:.1f}×"
    if ratio >= 0.1:
        return f"{ratio:.2f}×"
    return f"{ratio:.2g}×"


def format_row_value(row: Row) -> str:
    """Format the value of ``row``, or its error."""
    if row.value is None:
        return f"error: {row.error}"
    return format_value(row.value, row.workload.unit)


def in_table_order(rows: list[Row], workloads: list[Workload], contenders: list[str]) -> list[Row]:
    """``rows`` sorted by workload (as listed), then baseline first, then contender (as listed)."""
    workload_place = {workload.key: place for place, workload in enumerate(workloads)}
    contender_place = {key: place for place, key in enumerate(contenders)}

    def place(row: Row) -> tuple[int, int]:
        if is_baseline(row):
            return workload_place[row.workload.key], -1
        return workload_place[row.workload.key], contender_place.get(row.contender_key, 99)

    return sorted(rows, key=place)


def reference_value(rows: list[Row], workload: Workload, key: str) -> float | None:
    """Return the value of row ``key`` (a contender or baseline) on ``workload``, if measured."""
    for row in rows:
        if row.workload.key == workload.key and row.contender_key == key:
            return row.value
    return None


def ratio_to(rows: list[Row], row: Row, key: str) -> float | None:
    """Return reference / ``row`` (how many times faster or smaller) for row ``key``."""
    reference = reference_value(rows, row.workload, key)
    if reference is None or row.value is None or row.value <= 0:
        return None
    return reference / row.value


def baseline_value(rows: list[Row], workload: Workload) -> float | None:
    """Return the value of ``workload``'s baseline row (sequential loop, pickle), if any."""
    if workload.baseline is None:
        return None
    return reference_value(rows, workload, workload.baseline.key)


def is_baseline(row: Row) -> bool:
    """Whether ``row`` is its workload's baseline rather than a pool's."""
    baseline = row.workload.baseline
    return baseline is not None and row.contender_key == baseline.key


def reference_name(key: str) -> str:
    """The short name of reference row ``key`` (``PPE(fork)``)."""
    return REFERENCE_NAMES.get(key, key)


def check_target(rows: list[Row], row: Row, target: Target) -> tuple[bool | None, str]:
    """Return (passed, text) for ``target`` on gilfree's ``row``; passed is None when unknown."""
    if row.value is None:
        return False, f"{target.label}: FAIL (no result)"
    ratio = ratio_to(rows, row, target.reference)
    if ratio is None:
        return None, f"{target.label}: n/a"
    passed = ratio >= target.minimum * (1 - 1e-9)
    verdict = "PASS" if passed else "FAIL"
    shown = 1 / ratio if target.as_fraction else ratio
    reference = reference_name(target.reference)
    return passed, f"{target.label}: {verdict} ({format_ratio(shown)} {reference})"


def format_section(
    rows: list[Row],
    section: list[Row],
    settings: Settings,
    verdicts: list[tuple[int, bool | None]],
    footnotes: list[str],
) -> list[str]:
    """The lines of one section of the table: rows whose workloads share their references."""
    references = section[0].workload.references
    header = (
        "workload",
        "contender",
        "value",
        "per unit",
        *(f"vs {reference_name(key)}" for key in references),
        "target",
    )
    lines: list[tuple[str, ...]] = [header]
    previous_workload: Workload | None = None
    for row in section:
        value_text = format_value(row.value, row.workload.unit) if row.value is not None else ""
        if row.error is not None:
            footnotes.append(
                f"[{len(footnotes) + 1}] {row.contender_name}, {row.workload.title}: {row.error}"
            )
            value_text = f"failed [{len(footnotes)}]"
        figure = ""
        if row.value is not None:
            figure = row.workload.figure(row.value, baseline_value(rows, row.workload), settings)
        if row.detail:
            figure = f"{figure}, {row.detail}" if figure else row.detail
        targets = ""
        if row.contender_key == row.workload.subject:
            checks = [check_target(rows, row, target) for target in row.workload.targets]
            issues = [target.issue for target in row.workload.targets]
            verdicts += [(issue, passed) for issue, (passed, _) in zip(issues, checks, strict=True)]
            targets = "; ".join(text for _, text in checks)
        title = row.workload.title if row.workload is not previous_workload else ""
        previous_workload = row.workload
        ratios = (format_ratio(ratio_to(rows, row, key)) for key in references)
        lines.append((title, row.contender_name, value_text, figure, *ratios, targets))
    widths = [max(len(line[column]) for line in lines) for column in range(len(header))]
    text = ["  ".join(map(str.ljust, line, widths)).rstrip() for line in lines]
    text.insert(1, "-" * max(len(line) for line in text))
    return text


def format_table(rows: list[Row], settings: Settings) -> str:
    """Return the results table, with the targets of issues 2, 3, 9 and 10 beside the gilfree
    rows."""
    verdicts: list[tuple[int, bool | None]] = []
    footnotes: list[str] = []
    text: list[str] = []
    for _, section in itertools.groupby(rows, key=lambda row: row.workload.references):
        text += [*format_section(rows, list(section), settings, verdicts, footnotes), ""]
    repetitions = "best of 1" if settings.repetitions == 1 else f"best of {settings.repetitions}"
    title = (
        f"gilfree bench: {settings.workers} workers unless said, {repetitions}, "
        f"{platform.python_implementation()} {platform.python_version()}, "
        f"{os.cpu_count()} CPUs; ratios are reference / contender (>1 is faster or smaller)"
    )
    subtitle = (
        "each contender measured in a fresh interpreter started on a main script that imports "
        f"{SCRIPT_IMPORTS['numpy_pandas']}, unless the row says otherwise"
    )
    capped = [
        f"{workload.title} (best of {workload.peer_repetitions})"
        for workload in dict.fromkeys(row.workload for row in rows)
        if (workload.peer_repetitions or settings.repetitions) < settings.repetitions
    ]
    if capped:
        footnotes.append(f"contenders other than gilfree timed fewer times on: {', '.join(capped)}")
    once = [
        workload.title
        for workload in dict.fromkeys(row.workload for row in rows)
        if workload.repetitions is not None and workload.repetitions < settings.repetitions
    ]
    if once:
        footnotes.append(f"measured once (one interpreter per contender): {', '.join(once)}")
    footnotes += repetition_and_environment_notes(rows, settings)
    summary = summarize_targets(verdicts)
    return "\n".join([title, subtitle, "", *text, *footnotes, summary])


def repetition_and_environment_notes(rows: list[Row], settings: Settings) -> list[str]:
    """The footnotes naming (by key) the workloads timed more than once even with ``--quick``,
    and those whose interpreters were started with variables added to their environment."""
    notes: list[str] = []
    measured = list(dict.fromkeys(row.workload for row in rows))
    if settings.quick:
        repeated = [
            workload
            for workload in measured
            if (workload.quick_repetitions or 1) > settings.repetitions
        ]
        for repetitions, group in itertools.groupby(repeated, lambda w: w.quick_repetitions):
            keys = ", ".join(workload.key for workload in group)
            notes.append(f"best of {repetitions} even with --quick: {keys}")
    for environment, group in itertools.groupby(measured, key=lambda w: w.environment):
        if environment:
            variables = " ".join(f"{name}={value}" for name, value in environment)
            keys = ", ".join(workload.key for workload in group)
            notes.append(f"interpreters started with {variables}: {keys}")
    return notes


def summarize_targets(verdicts: list[tuple[int, bool | None]]) -> str:
    """Return one line counting, per issue, the targets passed, failed and not measurable."""
    if not verdicts:
        return "targets: gilfree not measured"
    counts = []
    for issue in sorted({issue for issue, _ in verdicts}):
        mine = [verdict for number, verdict in verdicts if number == issue]
        passed = sum(verdict is True for verdict in mine)
        failed = sum(verdict is False for verdict in mine)
        unknown = sum(verdict is None for verdict in mine)
        counts.append(f"issue {issue}: {passed} PASS, {failed} FAIL, {unknown} n/a")
    return "targets: " + "; ".join(counts)


def compared_workloads(rows: list[Row], section: list[Row]) -> list[Workload]:
    """The workloads of ``section`` on which its first reference row was measured."""
    reference = section[0].workload.references[0]
    return list(
        dict.fromkeys(
            row.workload
            for row in section
            if reference_value(rows, row.workload, reference) is not None
        )
    )


def plot_section(axes: Any, rows: list[Row], section: list[Row]) -> None:
    """Draw one panel: each contender's ratio to the section's first reference, per workload,
    and a black dash over gilfree's bar at each target of the workload against that reference."""
    from matplotlib import ticker

    reference = section[0].workload.references[0]
    workloads = compared_workloads(rows, section)
    contender_rows = [row for row in section if not is_baseline(row) and row.workload in workloads]
    names = list(dict.fromkeys(row.contender_name for row in contender_rows))
    bar_width = 0.8 / max(1, len(names))
    target_label = "gilfree's target"
    for index, name in enumerate(names):
        positions: list[float] = []
        ratios: list[float] = []
        for place, workload in enumerate(workloads):
            for row in contender_rows:
                ratio = ratio_to(rows, row, reference)
                if row.workload is workload and row.contender_name == name and ratio is not None:
                    position = place + (index - (len(names) - 1) / 2) * bar_width
                    positions.append(position)
                    ratios.append(ratio)
                    if row.contender_key != workload.subject:
                        continue
                    for target in workload.targets:
                        if target.reference == reference:
                            axes.hlines(
                                target.minimum,
                                position - bar_width / 2,
                                position + bar_width / 2,
                                colors="black",
                                linewidth=2,
                                label=target_label,
                                zorder=3,
                            )
                            target_label = "_nolegend_"
        axes.bar(positions, ratios, bar_width, label=name)
    axes.set_yscale("log")
    axes.axhline(1.0, color="black", linewidth=0.8)
    axes.yaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axes.yaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}×"))
    axes.yaxis.set_minor_formatter(ticker.NullFormatter())
    labels = [textwrap.fill(workload.title, 22) for workload in workloads]
    axes.set_xticks(range(len(workloads)), labels, fontsize=7)
    axes.set_ylabel(f"vs {reference_name(reference)} (×, log)")
    axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))


def write_plot(rows: list[Row], path: str, settings: Settings) -> str:
    """Write a bar chart, one panel per first reference of the table's sections: each
    contender's ratio to it (ProcessPoolExecutor; pickle for the codec rows; the sequential loop
    for the numpy and pandas rows; PPE(fork) for the start-up and memory rows), on the workloads
    where it was measured, with gilfree's targets against it; a higher bar is less time or
    memory. Return a note."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot
    except ImportError:
        return f"plot: matplotlib is not importable, {path} not written"
    grouped = itertools.groupby(rows, key=lambda row: row.workload.references[0])
    sections = [
        section
        for section in (list(group) for _, group in grouped)
        if any(ratio_to(rows, row, row.workload.references[0]) is not None for row in section)
    ]
    if not sections:
        return f"plot: nothing to compare, {path} not written"
    widest = max(len(compared_workloads(rows, section)) for section in sections)
    figure, panels = pyplot.subplots(
        len(sections), 1, figsize=(max(8.0, 1.9 * widest), 4.5 * len(sections)), squeeze=False
    )
    for axes, section in zip(panels[:, 0], sections, strict=True):
        plot_section(axes, rows, section)
    panels[0, 0].set_title(
        f"gilfree bench, {settings.workers} workers unless said (higher is faster or smaller)"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    pyplot.close(figure)
    return f"plot: written to {path}"
