"""What a person sees while a study runs: a status line and one line per finished cell.

The status line is redrawn in place on a terminal (at most once a second) and printed every
30 s otherwise, with an ETA once trials have finished (their mean wall time, times the trials
left, over the trials seen running at once); a cell's line gives its chosen configuration and
its final seeds' figures. Escape codes only on a terminal.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any

import numpy as np

from study.report.stats import cell_estimate
from study.report.summary import REPLICATES
from wbc.datasets.layout import WBC_CLASSES
from wbc.metrics import mean_interval

__all__ = ["Progress", "cell_summary", "format_eta", "format_params"]


def cell_summary(rows: list[dict[str, Any]]) -> str:
    """``test accuracy 93.1% [91.0, 95.2], macro-F1 0.874 [0.80, 0.95] (3 seeds)`` for a cell's
    final rows.

    The intervals are the report's (``study.report.stats.cell_estimate``: seeds and reporting
    images) when the rows carry their per-image predictions, so the line and ``report.md``
    agree; otherwise a t-interval over the seeds.
    """
    done = [r for r in rows if r.get("status") == "completed"]
    if not done:
        return "no final run completed"
    predictions = [r.get("test_predictions") for r in done]
    targets = done[0].get("test_targets")
    paired = (targets is not None and len(targets) >= 2
              and all(p is not None and len(p) == len(targets) for p in predictions)
              and all(r.get("test_targets") is not None
                      and np.array_equal(np.asarray(r["test_targets"]), np.asarray(targets))
                      for r in done))

    def interval(key: str, percent: bool) -> str:
        if paired and targets is not None:
            est = cell_estimate(targets, np.asarray(predictions), key.removeprefix("test_"),
                                len(WBC_CLASSES), replicates=REPLICATES)
            mean, low, high = est.estimate, est.low, est.high
        else:
            mean, low, high = mean_interval([float(r.get(key) or math.nan) for r in done])
        low, high = max(low, 0.0), min(high, 1.0)  # a proportion's interval stays in [0, 1]
        scale, unit, digits = (100.0, "%", 1) if percent else (1.0, "", 3)
        text = f"{scale * mean:.{digits}f}{unit}"
        if math.isfinite(low):
            text += f" [{scale * low:.{digits}f}, {scale * high:.{digits}f}]"
        return text

    return (f"test accuracy {interval('test_accuracy', True)}, macro-F1 "
            f"{interval('test_macro_f1', False)} ({len(done)} seed{'s' * (len(done) != 1)})")


def format_params(row: dict[str, Any], names: tuple[str, ...]) -> str:
    """``lr=0.05 imbalance=weighted`` for the named settings a row has."""
    parts = []
    for name in names:
        value = row.get(name)
        if value is None:
            continue
        parts.append(f"{name}={value:.3g}" if isinstance(value, float) else f"{name}={value}")
    return " ".join(parts)


def format_eta(seconds: float) -> str:
    """``ETA ~40 s``, ``ETA ~3 min``, ``ETA ~1.5 h``: rounded, as the estimate deserves."""
    if seconds < 90:
        return f"ETA ~{max(10, round(seconds / 10) * 10)} s"
    if seconds < 90 * 60:
        return f"ETA ~{round(seconds / 60)} min"
    return f"ETA ~{seconds / 3600:.1f} h"


class Progress:
    """The status line and the messages of a running study, on standard error."""

    def __init__(self, *, total_search: int, total_final: int, cells: int, quiet: bool = False,
                 most_final: int = 0) -> None:
        self.total_search, self.total_final, self.cells = total_search, total_final, cells
        self.most_final = most_final  # final trials at most, with sequential seeds
        self.quiet = quiet
        self._started = time.monotonic()
        self._last_line = 0.0
        self._trial_seconds = 0.0  # wall time of the finished trials counted, in sum
        self._trials = 0
        self._concurrency = 1  # the most trials seen running at once

    def trial_ended(self, wall_seconds: Any) -> None:
        """Count a finished trial's wall time into the ETA."""
        if isinstance(wall_seconds, int | float) and math.isfinite(wall_seconds) \
                and wall_seconds > 0:
            self._trial_seconds += float(wall_seconds)
            self._trials += 1

    def eta(self, remaining: int) -> float | None:
        """Seconds until ``remaining`` more trials are done, or None before any has ended."""
        if not self._trials:
            return None
        return self._trial_seconds / self._trials * remaining / self._concurrency

    def status(self, *, search: int, final: int, running: int, cells_done: int, failed: int,
               remaining: int | None = None, force: bool = False) -> None:
        """Redraw the status line (throttled unless ``force`` on a terminal); ``remaining``: the
        trials left to run (running ones included), for the ETA."""
        self._concurrency = max(self._concurrency, running)
        if self.quiet:
            return
        now = time.monotonic()
        tty = sys.stderr.isatty()
        # In a file or a pipe a line every 30 s at most, forced or not: each one stays.
        if not (force and tty) and now - self._last_line < (1.0 if tty else 30.0):
            return
        self._last_line = now
        elapsed = int(now - self._started)
        eta = self.eta(remaining) if remaining else None
        line = (f"[{elapsed // 60:02d}:{elapsed % 60:02d}] search {search}/{self.total_search}"
                f"  final {final}/{self.total_final}"
                + (f" (up to {self.most_final})" if self.most_final > self.total_final else "")
                + f"  running {running}  cells done "
                f"{cells_done}/{self.cells}" + (f"  failed {failed}" if failed else "")
                + (f"  {format_eta(eta)}" if eta is not None else ""))
        sys.stderr.write("\r\033[K" + line if tty else line + "\n")
        sys.stderr.flush()

    def say(self, message: str) -> None:
        """A line of its own, above the status line."""
        if self.quiet:
            return
        if sys.stderr.isatty():
            sys.stderr.write("\r\033[K")
        sys.stderr.write(message + "\n")
        sys.stderr.flush()

    def end(self) -> None:
        if not self.quiet and sys.stderr.isatty():
            sys.stderr.write("\n")
