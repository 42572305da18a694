"""What a training loop needs to know about data parallelism, in one place.

With ``torch.distributed`` initialised (a Ray Train DDP worker, or any ``torchrun``), every rank
runs the same loop on its shard; without it the loop is one rank of one. Also the mixed-precision
context, which depends on the device the same way for the supervised and the self-supervised
loops.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

from wbc.training.hardware import resolve_precision

__all__ = ["autocast", "gather", "world"]


def world() -> tuple[int, int]:
    """``(rank, world_size)``: ``(0, 1)`` when ``torch.distributed`` is not initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def autocast(device: torch.device, precision: str) -> torch.autocast:
    """bf16 autocast (AMP; bf16 needs no loss scaling) when asked, and for "auto" where
    ``wbc.training.hardware.resolve_precision`` says bf16 (a GPU, or a CPU measured faster in
    bf16)."""
    enabled = resolve_precision(device, precision) == "bf16"
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


def gather(tensor: Tensor) -> Tensor:
    """Concatenate equal-or-shorter 1-D shards from every rank, in rank order.

    Shards are padded to the longest with -1 for ``all_gather`` and the padding dropped after,
    so ranks may hold different counts (an evaluation split that does not divide evenly).
    """
    _, size = world()
    if size == 1:
        return tensor
    count = torch.tensor([tensor.numel()], device=tensor.device)
    counts = [torch.zeros_like(count) for _ in range(size)]
    dist.all_gather(counts, count)
    longest = int(max(c.item() for c in counts))
    padded = torch.full((longest,), -1, dtype=tensor.dtype, device=tensor.device)
    padded[: tensor.numel()] = tensor
    parts = [torch.empty_like(padded) for _ in range(size)]
    dist.all_gather(parts, padded)
    return torch.cat([p[: int(c.item())] for p, c in zip(parts, counts, strict=True)])
