"""What a study is: a typed spec, loadable from a TOML or JSON file, with presets.

A spec names the data (a tree, or a synthetic one made on the fly), the cells (subsets x
strategies), the search (trials per cell, epochs, ASHA, the search space), the final phase
(seeds per cell), the settings every trial shares, and the resources a trial takes. Presets are
specs; a file or ``--set name=value`` changes any field of one::

    study run --preset paper --set final_seeds=5 --set space.lr_max=0.3

Only this module knows the defaults; everything below the command line gets a ``StudySpec``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_origin, get_type_hints

from study.trial_seeds import MOST_REPLICATES, MOST_SEEDS
from wbc.config import PretrainSettings, SegmentSettings, SSLConfig, TrainConfig, check_fields
from wbc.datasets.layout import subset_percent
from wbc.strategies import get_strategy, strategy_names

__all__ = ["FROM_STUDY", "PRESETS", "Resources", "SearchSpace", "StudySpec", "cell_search_trials",
           "checkpoint_epochs", "load_spec", "no_search", "preset"]

Execution = Literal["auto", "inline", "train"]
# Run settings the study owns: a trial's TrainConfig and the SimCLR run take them from the
# study's own fields (StudySpec.base_config, ssl_config), never from the train or ssl table.
# checkpoint_every is the study's too: a trial's is derived from it (checkpoint_epochs).
FROM_STUDY = {"train": ("image_size", "epochs", "exclude_bad", "selection", "checkpoint_every"),
              "ssl": ("image_size", "seed")}


def checkpoint_epochs(every: int, epochs: int) -> int:
    """A trial's ``TrainConfig.checkpoint_every`` from the study's ``checkpoint_every`` (0: no
    checkpoint before the last epoch)."""
    return every if 0 < every < epochs else epochs


def cell_search_trials(spec: dict[str, Any]) -> int:
    """Search trials per cell of a spec as ``StudySpec.to_dict`` (or ``study.json``) gives it:
    ``search_trials``, times ``final_seeds`` under ``final_config = "replicates"``."""
    trials = int(spec.get("search_trials") or 0)
    if spec.get("final_config") == "replicates":
        return trials * int(spec.get("final_seeds") or 0)
    return trials


def no_search(spec: dict[str, Any]) -> bool:
    """Whether a spec as ``StudySpec.to_dict`` (or ``study.json``) gives it runs no search
    (``search_trials = 0``): every final seed trains the train settings as they are."""
    return int(spec.get("search_trials", 1) or 0) == 0


@dataclass(frozen=True)
class SearchSpace:
    """Bounds of what Optuna searches per cell (``study.space`` turns them into distributions)."""

    lr_min: float = 5e-4  # AdamW peak learning rate, log scale (SGD: about 1e-3-0.2)
    lr_max: float = 5e-3
    weight_decay_min: float = 1e-5  # log scale
    weight_decay_max: float = 5e-2
    imbalance: tuple[str, ...] = ("none", "weighted", "balanced")  # Neutrophils are 61%
    aug_factor_min: int = 1  # pastes per masked image, for strategies that paste (the report: 5)
    aug_factor_max: int = 8
    background: tuple[str, ...] = ("none", "own", "other")  # the report's empty one, or real ones
    # Label smoothing (Szegedy et al. 2016), searched when label_smoothing_max > 0; at 0 it stays
    # at the train settings' value (off), which keeps a small search on the knobs that matter.
    label_smoothing_min: float = 0.0
    label_smoothing_max: float = 0.0

    def __post_init__(self) -> None:
        for low, high in (("lr_min", "lr_max"), ("weight_decay_min", "weight_decay_max"),
                          ("aug_factor_min", "aug_factor_max")):
            if not 0 < getattr(self, low) <= getattr(self, high):
                raise ValueError(f"space.{low}={getattr(self, low)!r} must be above 0 and at "
                                 f"most space.{high}={getattr(self, high)!r}")

        if not 0 <= self.label_smoothing_min <= self.label_smoothing_max <= 0.5:
            raise ValueError(f"space.label_smoothing_min={self.label_smoothing_min!r} and "
                             f"space.label_smoothing_max={self.label_smoothing_max!r} must "
                             "satisfy 0 <= min <= max <= 0.5")
        for name, valid in (("imbalance", ("none", "weighted", "balanced")),
                            ("background", ("none", "own", "other"))):
            values = getattr(self, name)
            if not values or any(v not in valid for v in values):
                raise ValueError(f"space.{name}={list(values)!r}: choose one or more of "
                                 f"{', '.join(valid)}")
            if len(set(values)) != len(values):
                raise ValueError(f"space.{name}={list(values)!r} names a choice twice")

    def check_against(self, train: TrainConfig) -> None:
        """Refuse bounds the training config would refuse in every trial (an lr of 20, an
        aug_factor of 1000), naming the bound and the config's range."""
        for field_name, bounds in (("lr", ("lr_min", "lr_max")),
                                   ("weight_decay", ("weight_decay_min", "weight_decay_max")),
                                   ("aug_factor", ("aug_factor_min", "aug_factor_max")),
                                   ("label_smoothing", ("label_smoothing_min",
                                                        "label_smoothing_max"))):
            for bound in bounds:
                try:
                    train.replace(**{field_name: getattr(self, bound)})
                except (TypeError, ValueError) as err:
                    raise ValueError(f"space.{bound}={getattr(self, bound)!r}: every trial "
                                     f"would fail, as the training settings refuse it ({err})"
                                     ) from None


@dataclass(frozen=True)
class Resources:
    """What one trial takes, and how trials execute."""

    cpus_per_trial: float = 1.0  # also the trial's torch threads
    gpus_per_trial: float = 0.0  # below 1 packs several trials on one GPU
    workers_per_trial: int = 1  # Ray Train workers (DDP ranks) per trial
    # inline: the Tune trial trains in its own (reused) process, about 1 s of overhead a trial;
    # train: the trial drives a Ray Train TorchTrainer (DDP), about 30 s a trial on 2 CPUs.
    # auto: train when a trial has more than one worker, else inline.
    execution: Execution = "auto"
    max_concurrent: int = 0  # 0: as many as the cluster's resources fit
    max_failures: int = 1  # a failing trial is retried this often, then recorded as an error

    def __post_init__(self) -> None:
        try:
            check_fields(self, cpus_per_trial=(1e-3, 65535), gpus_per_trial=(0, 1023),
                         workers_per_trial=(1, 65535), max_concurrent=(0, 1 << 20),
                         max_failures=(0, 1 << 20))
        except ValueError as err:
            raise ValueError(f"resources.{err}") from None

    @property
    def mode(self) -> Literal["inline", "train"]:
        if self.execution == "auto":
            return "train" if self.workers_per_trial > 1 else "inline"
        return self.execution


@dataclass(frozen=True)
class StudySpec:
    name: str = "quick"  # names the results folder and the Tune experiment
    preset: str = "quick"  # where the defaults came from, for the record
    data: str | None = None  # a tree in the report's layout; None: a synthetic tree (cached)
    # CAM16 and pRCC kept outside the tree (real WBC sets have neither): a folder that holds
    # CAM16/ (pRCC/) or is its layout; it wins over the tree's own. None: the tree's own.
    cam16: str | None = None
    prcc: str | None = None
    # The synthetic tree: its training set at synthetic_scale of the report's counts, its
    # WBC_100/val at synthetic_val_scale (a larger held-out set costs little: it is only scored)
    # and CAM16/pRCC at synthetic_tissue_scale (pretraining needs images to learn from); None:
    # synthetic_scale. synthetic_test_scale adds a WBC_100/test split at that scale of the
    # report's val counts, the reporting images (epochs are then picked on all of val); None:
    # none, the reporting images are a fixed half of val.
    synthetic_scale: float = 0.15
    synthetic_val_scale: float | None = 0.4
    synthetic_tissue_scale: float | None = 1.0
    synthetic_test_scale: float | None = None
    synthetic_seed: int = 0
    image_size: int = 32  # working resolution
    subsets: tuple[str, ...] = ("WBC_100", "WBC_50", "WBC_10", "WBC_1")
    # The report's three; quick-ssl adds the self-supervised two ("ssl", "ssl_pretrain").
    strategies: tuple[str, ...] = ("scratch", "pretrain", "pretrain_aug")
    # Optuna trials per cell (per replicate under "replicates"). 0: no search; every final seed
    # trains the train settings as they are (a default chosen beforehand), so that nothing of a
    # search varies between two runs of the study; final_config does not apply.
    search_trials: int = 3
    startup_trials: int = 2  # random trials before TPE models a cell
    epochs: int = 3
    grace_epochs: int = 1  # ASHA: no trial is stopped before this epoch
    reduction_factor: int = 3  # ASHA: keep the best 1/rf at each rung
    final_seeds: int = 3  # re-runs of each cell's best configuration
    # What each final seed re-runs: "best", the search's best trial; "resampled", the best trial
    # of a bootstrap resample of the search's trials drawn per seed, so that the final seeds'
    # spread includes the search's choice of configuration (which another search might have
    # made differently), not only training noise. study.tune.search draws them. "replicates":
    # each final seed re-runs the best of its own independent search of search_trials random
    # trials (search_trials is then per replicate; startup_trials does not apply: no search
    # learns from another's trials) trained with the replicate's own seed, so that the final
    # seeds are independent replicates of the whole experiment, the search included.
    final_config: Literal["best", "resampled", "replicates"] = "resampled"
    # Sequential seeds (study.sequential): a label budget whose strategy comparisons are still
    # undecided after final_seeds gets seeds_per_look more seeds in each of its cells, looked at
    # again, until decided, out of reach, or max_final_seeds is spent; the looks' p-values are
    # corrected by alpha spending (spending_power: rho of alpha * t**rho). 0: final_seeds only.
    max_final_seeds: int = 0
    seeds_per_look: int = 1
    spending_power: float = 3.0
    # No look with fewer seeds decides a comparison (0: any look; the last look always may, so a
    # study cut to fewer seeds still decides); a comparison is out of reach when
    # max_final_seeds would decide it with a chance below reach_chance.
    min_decide_seeds: int = 0
    reach_chance: float = 0.5
    # The split that picks each run's best epoch (and so each cell's configuration): "full",
    # WBC_100's whole selection split for every budget; "scaled", a stratified part of it as
    # large as the budget (WBC_1: 1%), as a researcher with that budget would have.
    selection: Literal["full", "scaled"] = "full"
    redraw_subsets: bool = False  # final seeds redraw WBC_50/10/1 from WBC_100 with their seed
    seed: int = 0  # seeds the samplers; trial seeds derive from it
    pretrain_epochs: int = 8  # CAM16, once per study
    pretrain_lr: float = 2e-3  # AdamW, as the WBC runs of the quick preset
    # Self-supervised pretraining (the ssl strategies); its image_size and seed follow the
    # study's. An epoch sees at least ssl_min_epoch_images images (pRCC tiled).
    ssl: SSLConfig = field(default_factory=lambda: SSLConfig(
        epochs=20, batch_size=64, lr=2e-3, warmup_epochs=2.0, probe_steps=50))
    ssl_min_epoch_images: int = 256
    ssl_include_wbc: bool = False  # add the WBC_100 training images, labels unused
    # Settings every trial shares (a table of flat TrainConfig names in a spec file); the search
    # overrides its own. The study's own (FROM_STUDY) are not taken from here: a trial's
    # configuration is base_config(), SimCLR's ssl_config().
    train: TrainConfig = field(default_factory=lambda: TrainConfig().replace(
        batch_size=64, bn_recalibrate=128, min_epoch_images=512, warmup_epochs=0.5))
    # Epochs between resumable trial checkpoints; 0: none (a trial cut off by a crash restarts,
    # which costs less than writing ResNet-18 and its optimiser state every epoch on short runs).
    checkpoint_every: int = 0
    space: SearchSpace = field(default_factory=SearchSpace)
    resources: Resources = field(default_factory=Resources)
    exclude_bad: bool = False  # leave out unreadable files instead of failing
    # The classifiers a study keeps (study.results.kept): "best", each cell's final seed with
    # the best selection macro-F1; "all", every final seed; "none".
    keep_models: Literal["best", "all", "none"] = "best"
    # Other trees (the report's layout, or ImageFolder) every kept model is scored on after the
    # study: another microscope, stain or lab (eval.parquet, the report's out-of-domain part).
    eval_data: tuple[str, ...] = ()
    # Masks for all data, for the strategies that paste predicted masks (mask_source
    # "predicted": pretrain_aug_predicted): a segmenter (wbc.segment) trained once per study on
    # the masked images, scored k-fold, its masks written to <results>/masks/. Its encoder
    # starts random, or from this study's CAM16 or SimCLR backbone.
    segmentation: SegmentSettings = field(default_factory=lambda: SegmentSettings(steps=150))
    segment_encoder: Literal["random", "cam16", "prcc_ssl", "wbc_ssl"] = "random"

    def __post_init__(self) -> None:
        for subset in self.subsets:
            if subset_percent(subset) is None:
                raise ValueError(f"subsets: {subset!r} is not a label budget: WBC_100, WBC_50, "
                                 "WBC_10, WBC_1, or WBC_<p> for another percentage p in 1-100 "
                                 "(drawn from WBC_100)")
        for strategy in self.strategies:
            if strategy not in strategy_names():
                raise ValueError(f"strategies: {strategy!r} is not one of: "
                                 f"{', '.join(strategy_names())}")
        if not self.subsets or not self.strategies:
            raise ValueError("a study needs at least one subset and one strategy")
        for name in ("subsets", "strategies"):
            values = getattr(self, name)
            keys = [subset_percent(v) for v in values] if name == "subsets" else list(values)
            twice = sorted({v for v, k in zip(values, keys, strict=True) if keys.count(k) > 1})
            if twice:
                raise ValueError(f"{name}: {', '.join(twice)} given more than once (each cell "
                                 "is one (subset, strategy) pair); list each once")
        # Every choice and range of one field, as every config checks it (wbc.config).
        many = 1 << 20
        check_fields(self, pretrain_epochs=(1, many), pretrain_lr=(1e-8, 10.0),
                     startup_trials=(0, many), image_size=(8, 2048), checkpoint_every=(0, many),
                     epochs=(1, many), final_seeds=(1, MOST_SEEDS), grace_epochs=(1, many),
                     reduction_factor=(2, many), search_trials=(0, many),
                     max_final_seeds=(0, MOST_SEEDS), seeds_per_look=(1, many),
                     seed=(0, 2**31 - 1),
                     spending_power=(1e-3, 10.0), min_decide_seeds=(0, MOST_SEEDS),
                     reach_chance=(1e-3, 0.999), ssl_min_epoch_images=(0, 1 << 40),
                     synthetic_scale=(1e-6, 1.0), synthetic_seed=(0, 2**32 - 1))
        self._check_segmentation()
        self._check_seed_plan()
        if not self.name or "/" in self.name or self.name.startswith("."):
            raise ValueError(f"name={self.name!r}: use a plain folder name")
        for name, derive in (("train", self.base_config), ("ssl", self.ssl_config)):
            try:
                derive()
            except (TypeError, ValueError) as err:
                raise ValueError(f"{name} settings: {err}") from err
        self.space.check_against(self.base_config())
        for scale in ("synthetic_val_scale", "synthetic_tissue_scale",
                      "synthetic_test_scale"):  # None: the scale (test: no test split)
            if getattr(self, scale) is not None:
                check_fields(self, **{scale: (1e-6, 10.0)})
        if self.eval_data and self.keep_models == "none":
            raise ValueError("eval_data scores the kept models, but keep_models is \"none\"; "
                             "set keep_models to \"best\" or \"all\"")
        if len(set(self.eval_data)) != len(self.eval_data) or not all(self.eval_data):
            raise ValueError(f"eval_data={list(self.eval_data)!r}: give each tree once, as a "
                             "folder path")
        for name, dataset in (("cam16", "CAM16"), ("prcc", "pRCC")):
            if getattr(self, name) is not None and not getattr(self, name).strip():
                raise ValueError(f"{name}={getattr(self, name)!r}: give a folder that holds "
                                 f"{dataset}/, or leave {name} unset for the tree's own")

    def _check_seed_plan(self) -> None:
        if self.max_final_seeds and self.max_final_seeds < self.final_seeds:
            raise ValueError(f"max_final_seeds={self.max_final_seeds!r} must be 0 (no sequential"
                             f" seeds) or at least final_seeds={self.final_seeds!r}")
        if self.final_config == "replicates" and self.final_seeds > MOST_REPLICATES:
            raise ValueError(f"final_seeds={self.final_seeds!r}: under final_config "
                             f"\"replicates\" each seed is a search of its own; at most "
                             f"{MOST_REPLICATES}")
        if self.max_final_seeds > self.final_seeds and self.final_config == "replicates" \
                and self.search_trials:
            raise ValueError("max_final_seeds: sequential seeds re-run a cell's chosen "
                             "configuration, but under final_config \"replicates\" each seed "
                             "needs a search of its own; use best or resampled, or set "
                             "max_final_seeds=0")

    @property
    def cells(self) -> tuple[tuple[str, str], ...]:
        """(subset, strategy) pairs, largest subset first: long trials start early."""
        by_size = sorted(self.subsets, key=lambda s: -(subset_percent(s) or 0))
        return tuple((subset, strategy) for subset in by_size for strategy in self.strategies)

    @property
    def needs_cam16(self) -> bool:
        return any(get_strategy(s).pretrain == "cam16" for s in self.strategies)

    def _check_segmentation(self) -> None:
        sources = {get_strategy(s).weights_source for s in self.strategies}
        if self.segment_encoder != "random" and self.segment_encoder not in sources:
            raise ValueError(f"segment_encoder={self.segment_encoder!r}: no strategy of this "
                             f"study pretrains {self.segment_encoder}; use random, or add a "
                             "strategy that starts from it")

    @property
    def needs_segmentation(self) -> bool:
        """Whether a strategy pastes predicted masks (the study trains a segmenter)."""
        return any(get_strategy(s).mask_source == "predicted" for s in self.strategies)

    @property
    def needs_prcc(self) -> bool:
        return any(get_strategy(s).ssl == "prcc" for s in self.strategies)

    @property
    def cell_search_trials(self) -> int:
        """Search trials per cell: ``search_trials``, or under ``"replicates"`` that many for
        each of the ``final_seeds`` replicates."""
        return cell_search_trials({"search_trials": self.search_trials,
                                   "final_seeds": self.final_seeds,
                                   "final_config": self.final_config})

    def base_config(self) -> TrainConfig:
        """The TrainConfig every trial starts from: ``train`` with the study's own image_size,
        epochs, exclude_bad, selection and checkpoints (``FROM_STUDY``), derived here and
        nowhere kept."""
        owned = {name: getattr(self, name) for name in FROM_STUDY["train"]}
        owned["checkpoint_every"] = checkpoint_epochs(self.checkpoint_every, self.epochs)
        return self.train.replace(**owned)

    def ssl_config(self) -> SSLConfig:
        """The SimCLR settings of the study's self-supervised pretraining: ``ssl`` at the
        study's image_size and seed."""
        return dataclasses.replace(self.ssl, **{n: getattr(self, n) for n in FROM_STUDY["ssl"]})

    def pretrain_settings(self) -> PretrainSettings:
        """How the study makes its starting weights (``study.pretraining``)."""
        return PretrainSettings(cam16_epochs=self.pretrain_epochs, cam16_lr=self.pretrain_lr,
                                ssl=self.ssl_config(),
                                ssl_min_epoch_images=self.ssl_min_epoch_images,
                                ssl_include_wbc=self.ssl_include_wbc)

    def to_dict(self) -> dict[str, Any]:
        """Plain data: tables for the nested settings, flat names for ``train`` and ``ssl`` (as
        the trials get them: the study's own fields included)."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        values.update(train=self.base_config(), ssl=self.ssl_config())
        for name, value in values.items():
            if isinstance(value, TrainConfig | SSLConfig):
                values[name] = value.to_flat()
            elif dataclasses.is_dataclass(value):
                values[name] = dataclasses.asdict(value)  # type: ignore[arg-type]
            elif isinstance(value, tuple):
                values[name] = list(value)
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> StudySpec:
        if not isinstance(values, dict):
            raise ValueError(f"a study spec is a table of settings, got {type(values).__name__}")
        _check_from_study(values)
        return cls.from_record(values)

    @classmethod
    def from_record(cls, values: dict[str, Any]) -> StudySpec:
        """The spec of a ``study.json``: its train and ssl tables repeat the study's own settings
        as its trials got them, left out here unchecked (a record written before
        checkpoint_every was the study's keeps the train table's unused value)."""
        values = _without_study_owned(values)
        try:
            spec: StudySpec = _build(cls, values, "")
        except TypeError as err:  # a comparison in a check met a value of the wrong type
            raise ValueError(f"invalid study setting: {err}") from err
        return spec

    def editable(self) -> dict[str, Any]:
        """``to_dict`` without the study's own settings in the ``train`` and ``ssl`` tables
        (``from_dict`` leaves them out of those too): the values a change (a file, ``--set``,
        ``replace``) starts from."""
        return _without_study_owned(self.to_dict())

    def replace(self, **changes: Any) -> StudySpec:
        return StudySpec.from_dict({**self.editable(), **changes})

    def with_overrides(self, assignments: list[str]) -> StudySpec:
        """Apply ``name=value`` strings; dotted names reach nested fields (``space.lr_max``)."""
        values = self.editable()
        for assignment in assignments:
            name, sep, text = assignment.partition("=")
            if not sep:
                raise ValueError(f"--set {assignment!r}: expected name=value")
            target = values
            *parents, leaf = name.strip().split(".")
            for parent in parents:
                if not isinstance(target.get(parent), dict):
                    raise ValueError(f"--set {assignment!r}: {parent!r} has no fields")
                target = target[parent]
            if parents and parents[0] in FROM_STUDY and leaf in FROM_STUDY[parents[0]]:
                raise ValueError(f"--set {assignment!r}: {name} follows the study's {leaf}; "
                                 f"--set {leaf}=... sets it")
            # train and ssl are open tables, checked against TrainConfig / SSLConfig later.
            if parents not in (["train"], ["ssl"]) and leaf not in target:
                raise ValueError(f"--set {assignment!r}: no field {name!r}; valid: "
                                 f"{', '.join(sorted(target))}")
            target[leaf] = _parse_value(text.strip())
        return StudySpec.from_dict(values)


def _without_study_owned(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with the study's own settings (``FROM_STUDY``) left out of its tables."""
    return {**values, **{table: {k: v for k, v in values[table].items() if k not in names}
                         for table, names in FROM_STUDY.items()
                         if isinstance(values.get(table), dict)}}


def _check_from_study(values: dict[str, Any]) -> None:
    """A ``train`` or ``ssl`` table may repeat a setting the study owns (``FROM_STUDY``; a
    ``study.json`` does) only with the study's value."""
    defaults = {f.name: f.default for f in dataclasses.fields(StudySpec)}
    for table, names in FROM_STUDY.items():
        given = values.get(table)
        if not isinstance(given, dict):
            continue
        for name in names:
            study = values.get(name, defaults[name])
            # What to_dict writes: the trials' checkpoint_every, derived from the study's.
            derived = checkpoint_epochs(study, values.get("epochs", defaults["epochs"])) \
                if name == "checkpoint_every" else study
            if name in given and given[name] not in (study, derived):
                raise ValueError(f"{table}.{name}={given[name]!r} differs from the study's "
                                 f"{name}={study!r}, which every run follows: set {name} alone")


def _parse_value(text: str) -> Any:
    """TOML's value syntax for ``--set``: numbers, true/false, [lists], "strings" or bare words."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        bracketed = text.startswith("[") and text.endswith("]")
        if bracketed or "," in text:  # [WBC_10,WBC_1] or WBC_10,WBC_1: a list of bare words
            inner = text[1:-1] if bracketed else text
            return [part.strip().strip("'\"") for part in inner.split(",") if part.strip()]
        return text


def _build(cls: type, values: dict[str, Any], prefix: str) -> Any:
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"unknown study setting(s) {', '.join(prefix + u for u in unknown)}; "
                         f"valid: {', '.join(sorted(prefix + n for n in names))}")
    kwargs: dict[str, Any] = {}
    for name, value in values.items():
        hint = hints[name]
        if hint in (TrainConfig, SSLConfig):
            kwargs[name] = _settings(hint, value, f"{prefix}{name}")
        elif isinstance(hint, type) and dataclasses.is_dataclass(hint):
            if not isinstance(value, dict):
                raise ValueError(f"{prefix}{name} must be a table of settings, got {value!r}")
            kwargs[name] = _build(hint, value, f"{prefix}{name}.")
        elif get_origin(hint) is tuple:
            items = [value] if isinstance(value, str) else value
            if not isinstance(items, list | tuple) or not all(isinstance(v, str) for v in items):
                raise ValueError(f"{prefix}{name} must be a list of names, got {value!r}")
            kwargs[name] = tuple(items)
        else:
            kwargs[name] = _typed(f"{prefix}{name}", hint, value)
    return cls(**kwargs)


def _settings(hint: Any, value: Any, name: str) -> TrainConfig | SSLConfig:
    """A ``train`` or ``ssl`` table (flat setting names) as its typed config."""
    if isinstance(value, hint):
        return value
    if not isinstance(value, dict):
        raise ValueError(f"{name} must be a table of settings, got {value!r}")
    try:
        if hint is TrainConfig:
            return TrainConfig.from_flat(value)
        unknown = sorted(set(value) - {f.name for f in dataclasses.fields(SSLConfig)})
        if unknown:
            raise ValueError(f"unknown {', '.join(unknown)}; valid: "
                             f"{', '.join(f.name for f in dataclasses.fields(SSLConfig))}")
        return SSLConfig(**value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} settings: {err}") from err


def _typed(name: str, hint: Any, value: Any) -> Any:
    """Check a scalar setting against its annotation (``int``, ``float``, ``bool``, ``str``,
    ``str | None``, a ``Literal`` or ``dict``); ints are accepted where floats are."""
    if value is None and hint in (str | None, int | None, float | None):
        return None
    if hint == float | None:
        hint = float
    if get_origin(hint) is Literal:
        return value  # the dataclass names the valid choices
    if hint is bool or get_origin(hint) is dict:
        if not isinstance(value, bool if hint is bool else dict):
            raise ValueError(f"{name} must be {'true or false' if hint is bool else 'a table'},"
                             f" got {value!r}")
        return value
    if hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value!r}")
        return float(value)
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint in (str, str | None) and isinstance(value, str):
        return value
    expected = {float: "a number", int: "a whole number"}.get(hint, "text")
    raise ValueError(f"{name} must be {expected}, got {value!r}")


# The presets are spec files beside this module (study/presets/<name>.toml): each names what it
# changes from the spec's defaults, or from the preset it ``extends``. Listed in this order.
PRESET_NAMES = ("quick", "quick-ssl", "quick-masks", "real", "paper")
_PRESET_DIR = Path(__file__).with_name("presets")


def _merged(start: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """``values`` over ``start``: a table merges into the table it names, the rest replaces."""
    merged = dict(start)
    for key, value in values.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


def _load_preset(name: str) -> StudySpec:
    path = _PRESET_DIR / f"{name}.toml"
    values = tomllib.loads(path.read_text())
    base = values.pop("extends", None)
    start = _load_preset(base) if base else StudySpec()
    try:
        return StudySpec.from_dict(_merged(start.editable(), values))
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from err


PRESETS: dict[str, StudySpec] = {name: _load_preset(name) for name in PRESET_NAMES}


def preset(name: str) -> StudySpec:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return PRESETS[name]


def load_spec(path: Path, *, base: StudySpec | None = None) -> StudySpec:
    """A spec from a TOML or JSON file; its ``preset`` key (or ``base``) gives the defaults."""
    try:
        text = path.read_text()
    except OSError as err:
        raise ValueError(f"{path}: cannot read the study spec ({err.strerror})") from err
    try:
        values = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as err:
        raise ValueError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'TOML'}: "
                         f"{err}") from err
    if not isinstance(values, dict):
        raise ValueError(f"{path}: a study spec is a table of settings, not "
                         f"{type(values).__name__}")
    name = values.get("preset")
    if name is not None and not isinstance(name, str):
        raise ValueError(f"{path}: preset must be a name ({', '.join(PRESETS)}), got {name!r}")
    start = preset(name) if name is not None else (base or PRESETS["quick"])
    try:
        return StudySpec.from_dict(_merged(start.editable(), values))
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: {err}") from err
