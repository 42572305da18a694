"""Regenerate docs/contact-sheets/*.png from wbc.synth: ``python docs/make_contact_sheets.py``.

Synthetic images only: the real BCCD crops the generator was tuned against must not be committed.
Each WBC sheet shows eight crops of one class above their masks; CAM16 shows a row per class.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    # Runs from a plain checkout, without the package installed.
    sys.path.insert(0, str(ROOT))

from wbc.datasets.layout import CAM16_CLASSES, WBC_CLASSES  # noqa: E402
from wbc.synth import render_cam16, render_prcc, render_wbc  # noqa: E402

OUT = ROOT / "docs" / "contact-sheets"
TILE = 112  # px per image; eight tiles a row keep each sheet well under 200 KB
PER_ROW = 8
SEED = 2024
LABEL_W = 64


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([SEED, *key]))


def _mask_rgb(mask: np.ndarray) -> np.ndarray:
    return np.repeat(mask[:, :, None], 3, axis=2)


def _sheet(rows: list[tuple[str, list[np.ndarray]]]) -> Image.Image:
    sheet = Image.new("RGB", (LABEL_W + PER_ROW * TILE, len(rows) * TILE), "white")
    draw = ImageDraw.Draw(sheet)
    for r, (label, tiles) in enumerate(rows):
        draw.text((4, r * TILE + TILE // 2 - 6), label, fill=(40, 40, 40))
        for c, tile in enumerate(tiles):
            sheet.paste(Image.fromarray(tile), (LABEL_W + c * TILE, r * TILE))
    return sheet


def _save(sheet: Image.Image, name: str) -> Path:
    # An adaptive 256-colour palette keeps the PNGs small; these are previews, not data.
    path = OUT / f"{name}.png"
    sheet.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
        path, optimize=True
    )
    return path


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    written = []
    for class_id, cls in enumerate(WBC_CLASSES):
        pairs = [render_wbc(cls, _rng(0, class_id, i), TILE) for i in range(PER_ROW)]
        written.append(_save(_sheet([(cls[:10], [im for im, _ in pairs]),
                                     ("mask", [_mask_rgb(m) for _, m in pairs])]), cls))
    rows = []
    for class_id, cls in enumerate(CAM16_CLASSES):
        rows.append((cls, [render_cam16(cls, _rng(1, class_id, i), TILE)[0]
                           for i in range(PER_ROW)]))
    written.append(_save(_sheet(rows), "CAM16"))
    written.append(_save(_sheet([("pRCC", [render_prcc(_rng(2, 0, i), TILE)
                                           for i in range(PER_ROW)])]), "pRCC"))
    for path in written:
        print(f"{path.relative_to(ROOT)}  {path.stat().st_size // 1024} KB")


if __name__ == "__main__":
    main()
