"""``study report``: tables, comparisons and figures from a study's results.

``load`` reads a results folder or a Tune experiment folder, ``summary`` turns the rows into
cells, comparisons and importances, ``stats`` holds the interval and test arithmetic,
``figures`` draws and ``markdown`` writes ``report.md``.
"""

from __future__ import annotations

from study.report.load import Results, load_results
from study.report.markdown import table1, terminal_table, write_report
from study.report.summary import (
    COMPARISONS,
    METRICS,
    REPORT_ACCURACY,
    Cell,
    Report,
    importances,
    paired,
    summarise,
)

__all__ = [
    "COMPARISONS",
    "METRICS",
    "REPORT_ACCURACY",
    "Cell",
    "Report",
    "Results",
    "importances",
    "load_results",
    "paired",
    "summarise",
    "table1",
    "terminal_table",
    "write_report",
]
