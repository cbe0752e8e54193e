"""The benchmark's text table, its targets check and its optional PNG chart.

Every ratio is ``reference time / contender time`` measured in the same run, so a ratio above 1
means the contender is faster than the reference.
"""

from __future__ import annotations

import os
import platform
import textwrap
from dataclasses import dataclass

from gilfree.bench.workloads import Settings, Target, Workload

REFERENCE_NAMES = {"ppe": "PPE", "pool": "Pool", "sequential": "sequential", "pickle": "pickle"}


@dataclass(frozen=True)
class Row:
    """One measured cell: a workload run by a contender, in seconds, or the error it raised."""

    workload: Workload
    contender_key: str
    contender_name: str
    seconds: float | None
    error: str | None


def format_seconds(seconds: float) -> str:
    """Format a duration with a unit that keeps three significant figures readable."""
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds * 1e6:.1f} µs"


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


def format_row_time(row: Row) -> str:
    """Format the time of ``row``, or its error."""
    return format_seconds(row.seconds) if row.seconds is not None else f"error: {row.error}"


def reference_seconds(rows: list[Row], workload: Workload, key: str) -> float | None:
    """Return the time of contender ``key`` on ``workload``, if it was measured."""
    for row in rows:
        if row.workload is workload and row.contender_key == key:
            return row.seconds
    return None


def ratio_to(rows: list[Row], row: Row, key: str) -> float | None:
    """Return how many times faster ``row`` is than contender ``key`` on the same workload."""
    reference = reference_seconds(rows, row.workload, key)
    if reference is None or row.seconds is None or row.seconds <= 0:
        return None
    return reference / row.seconds


def baseline_seconds(rows: list[Row], workload: Workload) -> float | None:
    """Return the time of ``workload``'s baseline row (sequential loop, pickle), if any."""
    if workload.baseline is None:
        return None
    return reference_seconds(rows, workload, workload.baseline.key)


def is_baseline(row: Row) -> bool:
    """Whether ``row`` is its workload's baseline, timed in this process rather than a pool."""
    baseline = row.workload.baseline
    return baseline is not None and row.contender_key == baseline.key


def check_target(rows: list[Row], row: Row, target: Target) -> tuple[bool | None, str]:
    """Return (passed, text) for ``target`` on gilfree's ``row``; passed is None when unknown."""
    if row.seconds is None:
        return False, f"{target.label}: FAIL (no result)"
    ratio = ratio_to(rows, row, target.reference)
    if ratio is None:
        return None, f"{target.label}: n/a"
    verdict = "PASS" if ratio >= target.minimum else "FAIL"
    reference = REFERENCE_NAMES.get(target.reference, target.reference)
    return ratio >= target.minimum, f"{target.label}: {verdict} ({format_ratio(ratio)} {reference})"


def format_table(rows: list[Row], settings: Settings) -> str:
    """Return the results table, with the targets of issues 2 and 3 beside the gilfree rows."""
    header = ("workload", "contender", "time", "per unit", "vs PPE", "vs Pool", "target")
    lines: list[tuple[str, ...]] = [header]
    verdicts: list[tuple[int, bool | None]] = []
    footnotes: list[str] = []
    previous_workload: Workload | None = None
    for row in rows:
        time_text = format_seconds(row.seconds) if row.seconds is not None else ""
        if row.error is not None:
            footnotes.append(
                f"[{len(footnotes) + 1}] {row.contender_name}, {row.workload.title}: {row.error}"
            )
            time_text = f"failed [{len(footnotes)}]"
        figure = ""
        if row.seconds is not None:
            baseline = baseline_seconds(rows, row.workload)
            figure = row.workload.figure(row.seconds, baseline, settings)
        targets = ""
        if row.contender_key == "gilfree":
            checks = [check_target(rows, row, target) for target in row.workload.targets]
            issues = [target.issue for target in row.workload.targets]
            verdicts += [(issue, passed) for issue, (passed, _) in zip(issues, checks, strict=True)]
            targets = "; ".join(text for _, text in checks)
        title = row.workload.title if row.workload is not previous_workload else ""
        previous_workload = row.workload
        lines.append(
            (
                title,
                row.contender_name,
                time_text,
                figure,
                format_ratio(ratio_to(rows, row, "ppe")),
                format_ratio(ratio_to(rows, row, "pool")),
                targets,
            )
        )
    widths = [max(len(line[column]) for line in lines) for column in range(len(header))]
    text = ["  ".join(map(str.ljust, line, widths)).rstrip() for line in lines]
    text.insert(1, "-" * max(len(line) for line in text))
    repetitions = "best of 1" if settings.repetitions == 1 else f"best of {settings.repetitions}"
    title = (
        f"gilfree bench: {settings.workers} workers, {repetitions}, "
        f"{platform.python_implementation()} {platform.python_version()}, "
        f"{os.cpu_count()} CPUs; ratios are reference time / contender time (>1 is faster)"
    )
    capped = [
        f"{workload.title} (best of {workload.peer_repetitions})"
        for workload in dict.fromkeys(row.workload for row in rows)
        if (workload.peer_repetitions or settings.repetitions) < settings.repetitions
    ]
    if capped:
        footnotes.append(f"contenders other than gilfree timed fewer times on: {', '.join(capped)}")
    summary = summarize_targets(verdicts)
    return "\n".join([title, "", *text, "", *footnotes, summary])


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


def write_plot(rows: list[Row], path: str, settings: Settings) -> str:
    """Write a bar chart of each contender's ratio to ProcessPoolExecutor; return a note."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot
    except ImportError:
        return f"plot: matplotlib is not importable, {path} not written"
    compared = [row.workload for row in rows if row.contender_key == "ppe"]
    workloads = list(dict.fromkeys(compared))
    contender_rows = [row for row in rows if not is_baseline(row) and row.workload in workloads]
    names = list(dict.fromkeys(row.contender_name for row in contender_rows))
    figure, axes = pyplot.subplots(figsize=(max(8.0, 1.8 * len(workloads)), 5.0))
    bar_width = 0.8 / max(1, len(names))
    for index, name in enumerate(names):
        positions: list[float] = []
        ratios: list[float] = []
        for place, workload in enumerate(workloads):
            ratio = next(
                (
                    ratio_to(rows, row, "ppe")
                    for row in contender_rows
                    if row.workload is workload and row.contender_name == name
                ),
                None,
            )
            if ratio is not None:
                positions.append(place + (index - (len(names) - 1) / 2) * bar_width)
                ratios.append(ratio)
        axes.bar(positions, ratios, bar_width, label=name)
    axes.set_yscale("log")
    axes.axhline(1.0, color="black", linewidth=0.8)
    labels = [textwrap.fill(workload.title, 18) for workload in workloads]
    axes.set_xticks(range(len(workloads)), labels, fontsize=8)
    axes.set_ylabel("speed vs ProcessPoolExecutor (×, log scale)")
    axes.set_title(f"gilfree bench, {settings.workers} workers (higher is faster)")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    pyplot.close(figure)
    return f"plot: written to {path}"
