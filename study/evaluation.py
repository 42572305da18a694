"""Out of domain: every kept model scored on each of the spec's ``eval_data`` trees.

The study's figures are in-domain: the reporting split comes from the same microscope, stain
and lab as the training images. A classifier that is 98.5% right there can be 34.6% right on
another microscope's images (Tsutsui et al., ICASSP 2023), and whether pretraining or pasting
helps more or less out of domain is a question of its own. So after the Tune run each kept
model (``study.results.kept``) is scored on every ``eval_data`` tree, on that tree's
reporting split (its test split, else half B of its val: the same definition as in-domain),
through ``wbc.classifier.inference.evaluate_model``: the training's decode and preprocessing.

One Ray task per tree (decoded once, every model scored on it), with a trial's resources (a GPU if trials had one), after the
trials are done. Rows land in ``eval.parquet`` as each tree ends, keyed by (trial, tree): a
resumed study scores only what is missing. A tree that cannot be scored (unreadable, other
class names) gives a row with its ``error`` and the study goes on; the report says so.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from study.results import ResultsStore
from study.results.kept import KeptModel, kept_models
from study.spec import StudySpec
from wbc.classifier.model_file import Card

__all__ = ["EVAL_SPLIT", "eval_problem", "score_kept_models"]

EVAL_SPLIT = "reporting"


def eval_problem(spec: StudySpec) -> str | None:
    """Why an ``eval_data`` tree cannot be used, or None: checked before Ray starts."""
    for tree in spec.eval_data:
        path = Path(tree)
        if not path.is_absolute():
            return (f"eval_data {tree!r}: give an absolute path (under `ray job submit` the "
                    "working folder is a temporary copy)")
        if not path.is_dir():
            return f"eval_data {tree}: no such folder; give trees in the report's layout " \
                   "(or ImageFolder trees) that every node can read"
    return None


def _score_tree(models: list[str], tree: str, cache_dir: str | None, device: str,
                threads: int) -> list[dict[str, Any]]:
    """In a Ray task: one tree decoded once, every model scored on it; per model its figures
    or its error (a tree that cannot be loaded gives every model that error)."""
    import torch

    from wbc.classifier.inference import load_split, score_split
    from wbc.classifier.model_file import load_classifier

    torch.set_num_threads(max(1, threads))
    outcomes: list[dict[str, Any]] = []
    loaded: dict[tuple[tuple[str, ...], int], Any] = {}
    for model in models:
        try:
            classifier = load_classifier(model, device=device)
            card = classifier.card
            key = (card.classes, card.image_size)
            if key not in loaded:
                loaded[key] = load_split(tree, card.classes, card.image_size, split=EVAL_SPLIT,
                                         cache_dir=cache_dir)
            figures = score_split(classifier, loaded[key])
        except Exception as err:  # the row records it; the study goes on
            outcomes.append({"error": f"{type(err).__name__}: {err}"})
            continue
        outcomes.append({"figures": figures})
    return outcomes


# What a row keeps of a result besides its scalars: per-image lists stay, file lists do not.
_LISTS = ("confusion_matrix", "predictions", "targets")


def _row(spec: StudySpec, kept: KeptModel, card: Card, tree: str, outcome: dict[str, Any],
         results: Path) -> dict[str, Any]:
    figures = outcome.get("figures") or {}
    row: dict[str, Any] = {
        "study": spec.name, "cell": kept.cell, "subset": card.subset,
        "strategy": card.strategy, "seed": kept.seed, "trial_id": card.trial_key,
        "eval_data": tree, "eval_split": figures.get("split", EVAL_SPLIT),
        "model": str(kept.file.relative_to(results)),
        "in_domain_accuracy": card.figures.get("test_accuracy"),
        "in_domain_macro_f1": card.figures.get("test_macro_f1"),
        "eval_fingerprint": figures.get("data_fingerprint"),
        "error": outcome.get("error"),
    }
    for key, value in figures.items():
        keep = key in _LISTS or (isinstance(value, bool | int | float | str) or value is None)
        if keep and key not in ("split", "model", "data", "data_fingerprint", "layout",
                                "split_kind", "device", "model_data_fingerprint"):
            row.setdefault(key, value)
    return row


def score_kept_models(spec: StudySpec, results: Path, *, cache_dir: str | None,
                      say: Callable[[str], None]) -> int:
    """Score what is not scored yet; returns how many (model, tree) pairs were scored now."""
    if not spec.eval_data:
        return 0
    import ray

    store = ResultsStore(results)
    done = store.evaluations()
    have = set()
    if len(done):
        ok = done[done["error"].isna()] if "error" in done else done
        have = set(zip(ok["trial_id"], ok["eval_data"], strict=True))
    cards = {kept.file: kept.card() for kept in kept_models(results)}  # each header read once
    todo = [(kept, tree) for kept in kept_models(results) for tree in spec.eval_data
            if (cards[kept.file].trial_key, tree) not in have]
    if not todo:
        return 0
    resources = spec.resources
    gpus = resources.gpus_per_trial if resources.gpus_per_trial > 0 else 0
    task = ray.remote(_score_tree).options(num_cpus=resources.cpus_per_trial, num_gpus=gpus)
    device = "cuda" if gpus else "cpu"
    say(f"out of domain: scoring {len({k.file for k, _ in todo})} kept model(s) on "
        f"{len({t for _, t in todo})} tree(s)")
    by_tree: dict[str, list[KeptModel]] = {}
    for kept, tree in todo:
        by_tree.setdefault(tree, []).append(kept)
    pending = {task.remote([str(k.file) for k in models], tree, cache_dir, device,
                           int(resources.cpus_per_trial)): tree
               for tree, models in by_tree.items()}
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        tree = pending.pop(ready[0])
        rows = [_row(spec, kept, cards[kept.file], tree, outcome, results)
                for kept, outcome in zip(by_tree[tree], ray.get(ready[0]), strict=True)]
        store.write_evaluations(rows)  # as each tree ends: a crash keeps what is done
        say(_tree_line(tree, rows))
    return len(todo)


def _tree_line(tree: str, rows: list[dict[str, Any]]) -> str:
    """One console line per tree: the spread of the models' figures there and in domain."""
    failed = [r for r in rows if r["error"]]
    good = [r for r in rows if not r["error"]]
    parts = [f"out of domain: {Path(tree).name}"]
    if good:
        def spread(key: str) -> str:
            values = [100 * float(r[key]) for r in good if r.get(key) is not None]
            return f"{min(values):.1f}-{max(values):.1f}" if values else "n/a"

        parts.append(f"{len(good)} model(s) on {good[0]['n']} images, macro-F1 "
                     f"{spread('macro_f1')} (in domain {spread('in_domain_macro_f1')})")
    if failed:
        parts.append(f"{len(failed)} could not be scored: {failed[0]['error']}")
    return ": ".join(parts[:2]) + ("; " + parts[2] if len(parts) > 2 else "")
