"""What a study will cost, said before its trials start.

The cost of a CPU study is the images its trials and pretraining pass through ResNet-18, so the
estimate counts them from the spec and the tree (every cell's epochs at its training-set size,
``min_epoch_images`` and ``max_epoch_images`` applied, pastes added for the strategies that make
them; SimCLR's two views; the CAM16 epochs), and divides by a training rate measured here, at
the study's resolution, batch and threads per trial, on random images (a few steps: a second or
two at 32 px). Search trials are counted at full length, so ASHA's early stops make a study
shorter than said, not longer. A GPU study is not measured from the driver: none is said.
"""

from __future__ import annotations

from dataclasses import dataclass

from study.spec import StudySpec
from wbc.datasets import Tree
from wbc.datasets.layout import subset_percent
from wbc.strategies import get_strategy
from wbc.training.hardware import cpu_precision, train_step_seconds
from wbc.training.loop import epoch_images

__all__ = ["Estimate", "estimate", "measure_rate", "training_images"]

# What a trial costs besides its training steps (set-up, evaluation, the driver's work),
# seconds; measured as 1.0-1.8 s on the synthetic quick tree (docs/benchmarks.md).
TRIAL_OVERHEAD = 2.0


@dataclass(frozen=True)
class Estimate:
    images: int  # images passed through the model by trials and pretraining
    rate: float  # images a second, one trial's
    slots: int  # trials at once
    trials: int
    precision: str = "fp32"  # what the trials compute in on this CPU
    why: str = ""  # why that precision (wbc.training.hardware.cpu_precision)

    @property
    def seconds(self) -> float:
        return self.images / (self.rate * self.slots) + self.trials * TRIAL_OVERHEAD / self.slots

    def line(self) -> str:
        return (f"estimated: at most {_duration(self.seconds)} of training on this machine "
                f"({self.trials} trials and the pretraining, {self.images:,} training images "
                f"at {self.rate:.0f} images/s a trial in {self.precision}, {self.slots} at once"
                + (f"; {self.precision}: {self.why})" if self.why else ")"))


def _duration(seconds: float) -> str:
    minutes = seconds / 60
    return f"{minutes:.0f} min" if minutes < 90 else f"{minutes / 60:.1f} h"


def training_images(spec: StudySpec, tree: Tree) -> tuple[int, int]:
    """(images the study's trials and pretraining train on, trials)."""
    images = trials = 0
    # At most: every label budget given its sequential seeds up to max_final_seeds.
    per_cell = spec.cell_search_trials + max(spec.final_seeds, spec.max_final_seeds)
    for subset, strategy in spec.cells:
        percent = subset_percent(subset) or 100
        n = len(tree.wbc.subset(percent)) or round(len(tree.wbc.subset(100)) * percent / 100)
        if get_strategy(strategy).mask_augment:
            pasted = (n if get_strategy(strategy).mask_source == "predicted"
                      else sum(s.mask is not None for s in tree.wbc.subset(percent)))
            n += pasted * spec.train.augment.aug_factor
        images += per_cell * spec.epochs * epoch_images(n, spec.train.optim)
        trials += per_cell
    sources = {get_strategy(s).weights_source for s in spec.strategies} - {None}
    ssl_sets = {"wbc": len(tree.wbc.subset(100)), "prcc": len(tree.prcc)}
    for source in sources:
        for part in str(source).split("+"):
            if part.endswith("_ssl"):
                n = max(ssl_sets.get(part[:-4], 0), spec.ssl_min_epoch_images)
                images += 2 * spec.ssl.epochs * n
            elif part == "cam16":
                images += spec.pretrain_epochs * epoch_images(len(tree.cam16.train),
                                                              spec.train.optim)
    return images, trials


def measure_rate(image_size: int, batch_size: int, threads: int, *, steps: int = 3,
                 precision: str = "fp32") -> float:
    """Training images a second of ResNet-18 on this CPU at ``image_size``, ``batch_size`` and
    ``threads`` torch threads, in ``precision`` (``wbc.training.hardware.train_step_seconds``)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(max(1, threads))
    try:
        return batch_size / train_step_seconds(image_size, batch_size, precision=precision,
                                               steps=steps)
    finally:
        torch.set_num_threads(before)


def estimate(spec: StudySpec, tree: Tree, slots: int, *, rate: float | None = None
             ) -> Estimate | None:
    """The study's cost on this machine (``rate`` measured when not given), or None for a GPU
    study."""
    if spec.resources.gpus_per_trial > 0:
        return None
    threads = max(1, int(spec.resources.cpus_per_trial))
    precision: str = spec.train.precision
    why = ""
    if precision == "auto":
        precision, why = cpu_precision(threads)
    if rate is None:
        rate = measure_rate(spec.image_size, spec.train.optim.batch_size, threads,
                            precision=precision)
        if spec.resources.mode == "train":  # DDP ranks, each with its CPUs
            rate *= spec.resources.workers_per_trial
    images, trials = training_images(spec, tree)
    return Estimate(images=images, rate=rate, slots=max(1, slots), trials=trials,
                    precision=precision, why=why)
