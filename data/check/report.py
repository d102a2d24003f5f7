"""Print a `Report` with rich: the splits, the counts per class, the problems by kind (capped) and a summary."""

from __future__ import annotations

from itertools import groupby

from rich.console import Console
from rich.table import Table
from rich.text import Text

from .scan import Report, size_stats

STYLE = {"error": "bold red", "warning": "yellow", "note": "cyan"}


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def splits_table(report: Report) -> Table:
    table = Table(title="Splits", title_justify="left")
    for col in ("split", "images", "no labels", "width min / median / max", "height min / median / max", "read from"):
        table.add_column(col, justify="left" if col in ("split", "read from") else "right", overflow="fold")
    for split in report.splits:
        if split.same_as:
            table.add_row(split.name, "-", "-", "-", "-", f"(no {split.name} split: {split.name} runs on "
                                                          f"{split.same_as})")
            continue
        stats = size_stats(split.sizes)
        w, h = (" / ".join(map(str, s)) for s in stats) if stats else ("-", "-")
        table.add_row(split.name, f"{split.images:,}", f"{split.unlabelled:,}", w, h, split.source)
    return table


def classes_table(report: Report) -> Table | None:
    splits = [s for s in report.splits if not s.same_as]
    seen = {c for s in splits for counts in s.counts.values() for c in counts}
    names = report.classes + sorted(seen - set(report.classes))  # e.g. "(ignore 255)" after the classes
    if not names:
        return None
    table = Table(title="Per class", title_justify="left")
    table.add_column("class")
    for split in splits:
        for metric in report.metrics:
            table.add_column(f"{split.name} {metric}", justify="right")
    for name in names:
        table.add_row(name, *(f"{split.counts.get(metric, {}).get(name, 0):,}"
                              for split in splits for metric in report.metrics))
    return table


def verdict(errors: int, warnings: int, notes: int) -> str:
    """The summary line: errors block training; warnings (something skipped or likely wrong) ask for a look."""
    counts = f"{plural(errors, 'error')}, {plural(warnings, 'warning')}"
    counts += f", {plural(notes, 'note')}" if notes else ""
    if errors:
        return f"{counts}: fix the errors before training"
    if warnings:
        return f"{counts}: training would run, but read the warnings first"
    return f"{counts}: ready to train"


def print_report(report: Report, console: Console, limit: int = 20) -> None:
    """The tables, then up to `limit` problems of each kind (errors, warnings, notes) and the summary line."""
    console.rule(Text(f"data check: {report.title}"))
    console.print(splits_table(report))
    table = classes_table(report)
    if table is not None:
        console.print(table)
    for severity in ("error", "warning", "note"):
        found = [p for p in report.problems.found if p.severity == severity]
        for kind, group in groupby(sorted(found, key=lambda p: p.kind), key=lambda p: p.kind):
            group = list(group)
            console.print(Text(f"{severity.upper()} {kind} ({len(group)})", style=STYLE[severity]))
            for problem in group[:limit]:
                console.print(Text(f"  - {problem.message}"), soft_wrap=True)
            if len(group) > limit:
                console.print(Text(f"  ... and {len(group) - limit} more {kind} {severity}s"))
    errors, warnings = report.problems.count("error"), report.problems.count("warning")
    style = STYLE["error"] if errors else STYLE["warning"] if warnings else "bold green"
    console.print(Text(verdict(errors, warnings, report.problems.count("note")), style=style))
