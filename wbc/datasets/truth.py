"""The true masks of a synthetic tree: ``ROOT/truth/``, one mask for every image the generator
drew with one, so that a segmentation model can be scored on all images, not only on the ~10%
that carry a ``mask/`` file.

``ROOT/truth/<dataset>/<split>/<Class>/<stem>.png`` mirrors the image's path below its split's
``data/`` folder (``WBC_100/train/data/Basophil/x.jpg`` -> ``truth/WBC_100/train/Basophil/x.png``),
encoded as the ``mask/`` files are (where an image has both they are byte-identical). The label
budgets WBC_50/10/1 hold the same files as WBC_100/train, so their images' truth is WBC_100's.
The scanners never look in ``truth/``: it is not data, and a tree's samples, fingerprint and
counts are the same with or without it.
"""

from __future__ import annotations

from pathlib import Path

from wbc.datasets.files import DATA_DIRS
from wbc.datasets.layout import subset_name, subset_percent

__all__ = ["TRUTH_DIR", "true_mask", "truth_path"]

TRUTH_DIR = "truth"


def truth_path(root: Path | str, dataset: str, split: str, relative: Path | str) -> Path:
    """Where the true mask of ``<dataset>/<split>/data/<relative>`` is written: the same
    relative path under ``truth/<dataset>/<split>/``, as a PNG."""
    return (Path(root) / TRUTH_DIR / dataset / split / relative).with_suffix(".png")


def _inside(root: Path, image: Path) -> tuple[str, ...]:
    """``image``'s path parts below ``root``; a relative path outside it is taken as below it."""
    for path, base in ((image, root), (image.absolute(), root.absolute())):
        if path.is_relative_to(base):
            return path.relative_to(base).parts
    if not image.is_absolute():
        return image.parts
    raise ValueError(f"{image} is not inside the tree {root}; give an image path below it")


def true_mask(root: Path | str, image: Path | str) -> Path | None:
    """The true mask of ``image`` (a path inside the tree ``root``, absolute or relative to it),
    or None when the tree has none for it (a real tree, pRCC, a tree made with ``--no-truth`` or
    before true masks were written). A WBC_50/10/1 image's truth is its WBC_100 file's.

    Raises ValueError when ``image`` is not an image below a split's data folder of ``root``.
    """
    root = Path(root)
    image = Path(image)
    parts = _inside(root, image)
    if len(parts) < 4 or parts[2].lower() not in DATA_DIRS:
        raise ValueError(f"{image}: expected <dataset>/<split>/data/<Class>/<image> below {root}")
    dataset, split, relative = parts[0], parts[1], Path(*parts[3:])
    candidates = [truth_path(root, dataset, split, relative)]
    percent = subset_percent(dataset)
    if percent is not None and percent != 100:
        candidates.append(truth_path(root, subset_name(100), split, relative))
    return next((p for p in candidates if p.is_file()), None)
