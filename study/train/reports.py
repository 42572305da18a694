"""A Ray Train run's reports on the driver as they are made: a short line per epoch.

``progress_lines(on_report)`` opens a Ray queue that a task, a worker or a Ray Train controller
(``EpochReports``, a Ray Train callback) puts each report's ``brief`` on, and hands them to
``on_report`` on the driver while its block runs; ``epoch_line`` words one.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

from ray.train import UserCallback

__all__ = ["EpochReports", "Reports", "brief", "epoch_line", "progress_lines", "put_brief"]

Reports = Callable[[dict[str, Any]], None]  # called on the driver with each report's ``brief``
# What a progress line shows of a report, in its order.
_FIGURES = (("train_loss", "train loss"), ("ssl_loss", "loss"), ("val_accuracy", "val accuracy"),
            ("val_macro_f1", "val macro-F1"))


def brief(metrics: dict[str, Any]) -> dict[str, Any]:
    """The few figures of a report its progress line shows (the epoch's own on the last
    report, whose val_* are the best epoch's)."""
    row = metrics.get("epoch_metrics") or metrics
    keys = ("epoch", "loop_seconds", "epoch_seconds", *(key for key, _ in _FIGURES))
    return {k: row[k] for k in keys if isinstance(row.get(k), int | float)}


def epoch_line(label: str, epochs: int, figures: dict[str, Any]) -> str:
    """``CAM16 pretraining: epoch 2/8: train loss 0.612, val accuracy 0.750 (3 s)``."""
    shown = [f"{name} {figures[key]:.3f}" for key, name in _FIGURES if key in figures]
    seconds = figures.get("loop_seconds", figures.get("epoch_seconds"))
    took = "" if seconds is None else f" ({seconds:.{1 if seconds < 10 else 0}f} s)"
    return f"{label}: epoch {figures.get('epoch', '?')}/{epochs}: {', '.join(shown)}{took}"


@contextlib.contextmanager
def progress_lines(on_report: Reports | None) -> Iterator[Any]:
    """A Ray queue for reports made anywhere in the cluster, handed to ``on_report`` here while
    the block runs (by a thread: the block waits on its run); None, and nothing started, when
    ``on_report`` is None."""
    if on_report is None:
        yield None
        return
    from ray.util.queue import Empty, Queue

    queue = Queue(actor_options={"num_cpus": 0})
    done = threading.Event()

    def drain() -> None:
        while True:
            try:
                on_report(queue.get(timeout=0.5))
            except Empty:
                if done.is_set():  # everything put before the block ended is out
                    return
            except Exception:  # the queue went with Ray (Ctrl-C): the lines are only progress
                return

    thread = threading.Thread(target=drain, name="study-progress", daemon=True)
    thread.start()
    try:
        yield queue
    finally:
        done.set()
        thread.join(timeout=5)
        with contextlib.suppress(Exception):  # drained: nothing left to wait for
            queue.shutdown(force=True)


def put_brief(queue: Any, metrics: dict[str, Any]) -> None:
    with contextlib.suppress(Exception):  # a lost progress line never fails the run
        queue.put_nowait(brief(metrics))


class EpochReports(UserCallback):
    """A Ray Train callback (it runs on the run's controller) that puts each report's
    ``brief`` on a ``progress_lines`` queue."""

    def __init__(self, queue: Any) -> None:
        self.queue = queue

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]],
                     checkpoint: Any) -> None:
        if metrics:
            put_brief(self.queue, metrics[0])
