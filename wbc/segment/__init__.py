"""Cell masks for the images that have none: the report's "getting masks for all data".

- ``unet``: a U-Net decoder on the ResNet-18 encoder (can start from a study's CAM16 or SimCLR
  backbone);
- ``fit``: its settings (``SegmentSettings``), training on decoded images and masks with
  flips, quarter turns and colour jitter, and prediction;
- ``classical``: the baseline without training (CIELAB blueness, Otsu, morphology);
- ``pseudo``: which classical masks are confident enough to self-train on, for a tree with no
  given masks;
- ``pipeline``: a tree segmented (k-fold scores of the model and the baselines on the masked images,
  or, with none, self-training on the confident classical masks; then every other WBC image
  predicted; cached), and the masks written as PNGs (``wbc segment``).

No Ray here; ``study`` runs it once per study for the strategies that paste predicted masks.
"""

from wbc.segment.classical import classical_mask
from wbc.segment.fit import SegmentSettings, fit_segmenter, predict_probabilities
from wbc.segment.pipeline import (
    METHOD_NAMES,
    OUT_RECORD,
    PATH_GIVEN,
    PATH_SELF,
    SEGMENT_VERSION,
    Segmentation,
    iou_dice,
    mask_map,
    mask_path,
    segment_tree,
    with_predicted_masks,
    write_masks,
)
from wbc.segment.pseudo import (
    PSEUDO_RULE,
    MaskShape,
    PseudoRule,
    classical_pseudo_labels,
    confident,
    mask_shape,
)
from wbc.segment.unet import UNet18, build_unet18

__all__ = [
    "METHOD_NAMES",
    "OUT_RECORD",
    "PATH_GIVEN",
    "PATH_SELF",
    "PSEUDO_RULE",
    "SEGMENT_VERSION",
    "MaskShape",
    "PseudoRule",
    "SegmentSettings",
    "Segmentation",
    "UNet18",
    "build_unet18",
    "classical_mask",
    "classical_pseudo_labels",
    "confident",
    "fit_segmenter",
    "iou_dice",
    "mask_map",
    "mask_path",
    "mask_shape",
    "predict_probabilities",
    "segment_tree",
    "with_predicted_masks",
    "write_masks",
]
