"""The one error type for bad input data (its message names the file and says what to fix), and where the data
validators report problems: raise on the first error (training) or collect them all (`python -m data.check`).
Each check is written once and takes a `Problems`; `RAISE` is the training default."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from backbones.errors import UserError


class DataError(UserError, ValueError):
    """Raised for missing, empty, malformed or unreadable dataset files."""


log = logging.getLogger("data")
Severity = Literal["error", "warning", "note"]


@dataclass(frozen=True)
class Problem:
    """One finding: `kind` groups it in the report ("broken image", "bad box", ...); `message` names the file,
    the image / annotation id and the fix (the text training would raise)."""

    severity: Severity
    kind: str
    message: str


@dataclass
class Problems:
    """`strict`: `error` raises DataError, `warning` logs a warning and `note` an info line (training); else all
    are kept in `found` and the caller skips the bad entry and goes on, so one run lists every problem.
    A warning is something skipped or likely wrong that training survives; a note is information only."""

    strict: bool = True
    found: list[Problem] = field(default_factory=list)

    def error(self, kind: str, message: str) -> None:
        if self.strict:
            raise DataError(message)
        self.found.append(Problem("error", kind, message))

    def warning(self, kind: str, message: str) -> None:
        if self.strict:
            log.warning(message)
        else:
            self.found.append(Problem("warning", kind, message))

    def note(self, kind: str, message: str) -> None:
        if self.strict:
            log.info(message)
        else:
            self.found.append(Problem("note", kind, message))

    def each(self, severity: Severity, kind: str, items: Sequence[Any], all_message: Callable[[Sequence[Any]], str],
             one_message: Callable[[Any], str] | None = None) -> None:
        """A problem shared by several `items` (files, boxes): one message about all of them when strict (the
        first few and a count), else one problem per item (`one_message(item)`, default `all_message([item])`)."""
        if not items:
            return
        report = {"error": self.error, "warning": self.warning, "note": self.note}[severity]
        if self.strict:
            report(kind, all_message(items))
            return
        for item in items:
            report(kind, one_message(item) if one_message else all_message([item]))

    def extend(self, other: Problems) -> None:
        self.found += other.found

    def count(self, severity: Severity) -> int:
        return sum(p.severity == severity for p in self.found)


RAISE = Problems(strict=True)  # stateless: strict mode keeps nothing
