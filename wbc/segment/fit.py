"""Training and running the U-Net on decoded images: the segmenter's settings, ``fit_segmenter``
and ``predict_masks``.

Images and masks are the decode cache's (uint8 NHWC at the working resolution, bool masks),
on the device the whole time like classification's. Each step draws a batch with replacement,
applies one of the square's 8 symmetries to image and mask alike and a mild colour jitter to the
image (stains vary between slides), and takes an AdamW step on binary cross-entropy plus soft
Dice (Milletari et al. 2016: the Dice term keeps a small cell from being traded for background).
The rate warms up over the first 5% of the steps and then follows a cosine to 0.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from wbc.augment.tensors import color_jitter, flip_rot90, normalize, to_float_nchw
from wbc.config import SegmentSettings
from wbc.segment.unet import UNet18, build_unet18
from wbc.training.loop import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["SegmentSettings", "fit_segmenter", "predict_probabilities"]


def _inputs(images_u8: Tensor) -> Tensor:
    return normalize(to_float_nchw(images_u8), IMAGENET_MEAN, IMAGENET_STD)


def _loss(logits: Tensor, target: Tensor) -> Tensor:
    bce = F.binary_cross_entropy_with_logits(logits, target)
    p = torch.sigmoid(logits)
    inter = (p * target).sum((1, 2))
    dice = 1 - (2 * inter + 1) / (p.sum((1, 2)) + target.sum((1, 2)) + 1)
    return bce + dice.mean()


def _rate(step: int, steps: int) -> float:
    warm = max(1, round(0.05 * steps))
    if step < warm:
        return (step + 1) / warm
    return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, steps - warm)))


def fit_segmenter(images: Tensor, masks: Tensor, settings: SegmentSettings, *,
                  seed: int | None = None, encoder_weights: Path | str | None = None,
                  device: torch.device | str = "cpu") -> UNet18:
    """A U-Net trained on ``images`` (uint8 ``(N, S, S, 3)``) and ``masks`` (bool
    ``(N, S, S)``) for ``settings.steps`` steps; returned in eval mode on ``device``."""
    if images.shape[0] != masks.shape[0] or images.shape[0] == 0:
        raise ValueError(f"fit_segmenter: {images.shape[0]} images and {masks.shape[0]} masks; "
                         "need the same number, at least one")
    device = torch.device(device)
    seed = settings.seed if seed is None else seed
    torch.manual_seed(seed)
    model = build_unet18(encoder_weights=encoder_weights).to(device)
    model = model.to(memory_format=torch.channels_last)
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    rest = [p for n, p in model.named_parameters() if p.ndim <= 1]
    optimiser = torch.optim.AdamW([{"params": decay, "weight_decay": settings.weight_decay},
                                   {"params": rest, "weight_decay": 0.0}], lr=settings.lr)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    images, masks = images.to(device), masks.to(device)
    model.train()
    for step in range(settings.steps):
        for group in optimiser.param_groups:
            group["lr"] = settings.lr * _rate(step, settings.steps)
        index = torch.randint(images.shape[0], (settings.batch_size,), generator=generator)
        x, y = flip_rot90(to_float_nchw(images[index.to(device)]), generator=generator,
                          masks=masks[index.to(device)].float())
        if settings.jitter > 0:
            x = color_jitter(x, generator=generator, brightness=settings.jitter,
                             contrast=settings.jitter, saturation=settings.jitter,
                             hue=settings.jitter / 5)
        x = normalize(x, IMAGENET_MEAN, IMAGENET_STD).contiguous(
            memory_format=torch.channels_last)
        loss = _loss(model(x), y)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
    return model.eval()


@torch.inference_mode()
def predict_probabilities(model: UNet18, images: Tensor | np.ndarray, *, batch_size: int = 64
                          ) -> np.ndarray:
    """The cell probability of every pixel of uint8 ``(N, S, S, 3)`` images: float32
    ``(N, S, S)`` in [0, 1], on the CPU."""
    device = next(model.parameters()).device
    out = np.empty(tuple(images.shape[:3]), dtype=np.float32)
    for start in range(0, images.shape[0], batch_size):
        batch = images[start:start + batch_size]
        if isinstance(batch, np.ndarray):  # a read-only memory map: copy the batch
            batch = torch.from_numpy(np.array(batch))
        x = _inputs(batch.to(device))
        x = x.contiguous(memory_format=torch.channels_last)
        out[start:start + batch_size] = torch.sigmoid(model(x)).float().cpu().numpy()
    return out
