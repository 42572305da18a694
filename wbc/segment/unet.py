"""A U-Net (Ronneberger et al. 2015) on the ResNet-18 encoder: the classifier's own backbone, so
that a segmenter can start from the CAM16 or SimCLR weights a study already made.

The encoder is torchvision's ResNet-18 without its pooling head; its five feature maps (strides
2, 4, 8, 16, 32) feed a decoder that upsamples by two at each step, concatenates the encoder map
of that stride and applies two 3x3 convolutions (the "U-Net with a ResNet encoder" of
segmentation-models-pytorch, in its few lines). One output channel: the logit that a pixel is
cell (nucleus and cytoplasm alike).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models import ResNet

from wbc.training.resnet import build_resnet18

__all__ = ["DECODER_CHANNELS", "UNet18", "build_unet18"]

# Per decoder step, from the deepest: the width smp's Unet uses for a ResNet encoder, halved;
# a WBC crop at 64-128 px has little need for more.
DECODER_CHANNELS = (128, 64, 32, 32, 16)
_ENCODER_CHANNELS = (64, 64, 128, 256, 512)  # conv1, layer1, layer2, layer3, layer4


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
    )


class UNet18(nn.Module):
    """ResNet-18 encoder + U-Net decoder; ``forward`` maps ``(N, 3, H, W)`` normalised images
    (H and W multiples of 32) to ``(N, H, W)`` logits."""

    def __init__(self, encoder: ResNet) -> None:
        super().__init__()
        self.encoder = encoder
        skips = (*_ENCODER_CHANNELS[::-1][1:], 0)  # layer3, layer2, layer1, conv1, none
        blocks, cin = [], _ENCODER_CHANNELS[-1]
        for skip, cout in zip(skips, DECODER_CHANNELS, strict=True):
            blocks.append(_block(cin + skip, cout))
            cin = cout
        self.decoder = nn.ModuleList(blocks)
        self.head = nn.Conv2d(cin, 1, 1)

    def _features(self, x: Tensor) -> list[Tensor]:
        e = self.encoder
        f0 = e.relu(e.bn1(e.conv1(x)))  # stride 2
        f1 = e.layer1(e.maxpool(f0))  # 4
        f2 = e.layer2(f1)  # 8
        f3 = e.layer3(f2)  # 16
        f4 = e.layer4(f3)  # 32
        return [f0, f1, f2, f3, f4]

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] % 32 or x.shape[-2] % 32:
            raise ValueError(f"UNet18: image sides must be multiples of 32, got "
                             f"{tuple(x.shape[-2:])}")
        features = self._features(x)
        y = features[-1]
        skips = [*features[-2::-1], None]
        for block, skip in zip(self.decoder, skips, strict=True):
            y = F.interpolate(y, scale_factor=2.0, mode="bilinear", align_corners=False)
            if skip is not None:
                y = torch.cat([y, skip], dim=1)
            y = block(y)
        return self.head(y)[:, 0]


def build_unet18(*, encoder_weights: Path | str | None = None) -> UNet18:
    """A U-Net on a random ResNet-18 encoder, or on the backbone of a local ResNet-18 state
    dict (a study's CAM16 or SimCLR ``model.pt``, torchvision's ImageNet file); never
    downloads. The file's classifier head is ignored; a file that is no ResNet-18 raises
    ``wbc.training.resnet.WeightsError`` naming it."""
    encoder = build_resnet18(1, weights_path=encoder_weights)
    encoder.fc = nn.Identity()  # unused: the decoder reads the stages
    return UNet18(encoder)
