"""``study.json``: what a study is and what each session of it did, typed.

One ``StudyRecord`` per results folder: the spec, the provenance, the data it ran on, the
pretraining records, and one ``Session`` per run or resume with its time split and
utilisation (``study.outcome``). Read and written as plain JSON by ``ResultsStore``.
"""

from __future__ import annotations

import dataclasses
import datetime
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Session", "StudyRecord", "now"]


def now() -> str:
    """The current UTC time as ``2026-12-01T09:55:10Z``."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Session:
    """One ``study run`` (or ``--resume``) of a study; None where it stopped before."""

    started_at: str
    resumed: bool = False
    data_seconds: float | None = None
    ray_startup_seconds: float | None = None
    slots: int | None = None
    node_check_seconds: float | None = None
    pretrain_loop_slot_seconds: float | None = None
    pretrain_seconds: float | None = None
    segmentation_seconds: float | None = None  # the predicted masks (study.segmentation)
    tune_seconds: float | None = None
    eval_seconds: float | None = None  # kept models scored on the eval_data trees
    wall_seconds: float | None = None
    finished_at: str | None = None
    trials_run: int | None = None
    train_loop_slot_seconds: float | None = None
    per_trial_overhead_seconds: float | None = None  # None when no trial trained
    trial_overhead_seconds: float | None = None
    inside_training_loops_fraction: float | None = None
    held_device: str | None = None
    held_device_seconds: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """The fields that are set (a report reads an absent ``wall_seconds`` as a session
        that stopped before the end)."""
        values = dataclasses.asdict(self)
        keep_none = {"per_trial_overhead_seconds", "trial_overhead_seconds"}
        return {k: v for k, v in values.items()
                if v is not None or (k in keep_none and self.trials_run is not None)}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Session:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})


@dataclass
class StudyRecord:
    study: str
    preset: str
    spec: dict[str, Any]  # StudySpec.to_dict()
    provenance: dict[str, Any]
    # running | interrupted | complete | complete with errors | failed (``error`` says why)
    status: str = "running"
    created_at: str = field(default_factory=now)
    sessions: list[Session] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)  # source, fingerprint, counts, ...
    pretrain: dict[str, Any] = field(default_factory=dict)  # source -> its record and key
    wall_seconds: float | None = None
    failed_cells: dict[str, int] = field(default_factory=dict)  # cell -> failed trials
    # The nodes of the last session: id, host, what the storage check and decode cost there.
    nodes: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None  # why the last session failed before its trials
    # The Tune experiment: its folder, metric and mode (study.tune.analysis reads them).
    tune: dict[str, Any] = field(default_factory=dict)
    # The segmenter of the predicted-mask strategies: scores, counts, settings, seconds.
    segmentation: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        values: dict[str, Any] = {
            "study": self.study, "preset": self.preset, "spec": self.spec,
            "status": self.status, "created_at": self.created_at,
            "sessions": [s.to_dict() for s in self.sessions], "provenance": self.provenance}
        if self.data:
            values["data"] = self.data
        if self.pretrain:
            values["pretrain"] = self.pretrain
        if self.wall_seconds is not None:
            values["wall_seconds"] = self.wall_seconds
        if self.failed_cells:
            values["failed_cells"] = self.failed_cells
        if self.nodes:
            values["nodes"] = self.nodes
        if self.error is not None:
            values["error"] = self.error
        if self.tune:
            values["tune"] = self.tune
        if self.segmentation:
            values["segmentation"] = self.segmentation
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> StudyRecord:
        return cls(study=values["study"], preset=values.get("preset", ""),
                   spec=values["spec"], provenance=values.get("provenance", {}),
                   status=values.get("status", "running"),
                   created_at=values.get("created_at", ""),
                   sessions=[Session.from_dict(s) for s in values.get("sessions", [])],
                   data=values.get("data", {}), pretrain=values.get("pretrain", {}),
                   wall_seconds=values.get("wall_seconds"),
                   failed_cells=values.get("failed_cells", {}), nodes=values.get("nodes", []),
                   error=values.get("error"), tune=values.get("tune", {}),
                   segmentation=values.get("segmentation", {}))
