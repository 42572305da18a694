"""Small image trees for tests, written as real files in every format and mode real data uses."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image

from wbc.datasets.layout import WBC_CLASSES

FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP", ".tif": "TIFF",
           ".tiff": "TIFF"}


def cell_image(size: tuple[int, int], *, seed: int, label: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A pale field with a coloured disc (the 'cell'); returns (RGB uint8, 3-level mask)."""
    width, height = size
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    cy, cx = height / 2 + rng.uniform(-2, 2), width / 2 + rng.uniform(-2, 2)
    radius = min(width, height) * 0.3
    dist = np.hypot(yy - cy, xx - cx)
    image = np.empty((height, width, 3), np.uint8)
    image[:] = (225, 215, 220)
    hue = np.array([(120 + 25 * label) % 256, 60, 160 - 20 * label], np.uint8)
    image[dist < radius] = hue
    image = np.clip(image + rng.integers(-6, 7, image.shape), 0, 255).astype(np.uint8)
    mask = np.zeros((height, width), np.uint8)
    mask[dist < radius] = 128
    mask[dist < radius * 0.5] = 255
    return image, mask


def write_image(path: Path, array: np.ndarray, *, mode: str = "RGB") -> Path:
    """Write ``array`` (RGB uint8) in ``path``'s format, converted to ``mode``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array, "RGB")
    if mode == "I;16":
        grey = np.asarray(image.convert("L"), np.uint16) * 257
        image = Image.fromarray(grey)
    elif mode == "P":
        image = image.convert("P", palette=Image.Palette.ADAPTIVE, colors=256)
    elif mode != "RGB":
        image = image.convert(mode)
    image.save(path, FORMATS[path.suffix.lower()])
    return path


def write_mask(path: Path, mask: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask, "L").save(path, FORMATS[path.suffix.lower()])
    return path


def write_class_folder(
    folder: Path,
    n: int,
    *,
    label: int,
    suffix: str = ".png",
    sizes: Iterable[tuple[int, int]] = ((40, 40),),
    masks: Path | None = None,
    n_masks: int = 0,
    mask_suffix: str = ".png",
    seed: int = 0,
    stem: str = "img",
) -> list[Path]:
    """``n`` images in ``folder`` cycling through ``sizes``; the first ``n_masks`` get masks.

    Every (seed, label, stem, index) draws other pixels, so the splits of a tree hold no copies
    of each other (the checker flags those).
    """
    sizes = list(sizes)
    written = []
    offset = zlib.crc32(stem.encode()) * 1_000_003
    for i in range(n):
        image, mask = cell_image(sizes[i % len(sizes)],
                                 seed=offset + seed * 100_003 + label * 1009 + i, label=label)
        written.append(write_image(folder / f"{stem}{i:04d}{suffix}", image))
        if masks is not None and i < n_masks:
            write_mask(masks / f"{stem}{i:04d}{mask_suffix}", mask)
    return written


def make_wbc_tree(
    root: Path,
    counts: dict[str, tuple[int, int, int]] | None = None,
    *,
    suffix: str = ".png",
    sizes: Iterable[tuple[int, int]] = ((40, 40),),
    val_name: str = "val",
    class_folder: dict[str, str] | None = None,
    seed: int = 0,
) -> Path:
    """WBC_100 with train (data + masks) and val: ``counts[class] = (train, masks, val)``."""
    counts = counts or {c: (6, 2, 3) for c in WBC_CLASSES}
    class_folder = class_folder or {}
    sizes = list(sizes)
    for label, cls in enumerate(WBC_CLASSES):
        if cls not in counts:
            continue
        n_train, n_mask, n_val = counts[cls]
        folder = class_folder.get(cls, cls)
        write_class_folder(root / "WBC_100/train/data" / folder, n_train, label=label,
                           suffix=suffix, sizes=sizes, masks=root / "WBC_100/train/mask" / folder,
                           n_masks=n_mask, seed=seed, stem="tr")
        write_class_folder(root / f"WBC_100/{val_name}/data" / folder, n_val, label=label,
                           suffix=suffix, sizes=sizes, seed=seed, stem="va")
    return root


def make_cam16_prcc(root: Path, *, n: int = 4, seed: int = 0) -> Path:
    for label, cls in enumerate(("normal", "tumor")):
        write_class_folder(root / "CAM16/train/data" / cls, n, label=label, suffix=".jpg",
                           masks=root / "CAM16/train/mask" / cls, n_masks=1, seed=seed, stem="c")
        write_class_folder(root / "CAM16/val/data" / cls, 2, label=label, suffix=".jpg",
                           seed=seed, stem="v")
        write_class_folder(root / "CAM16/test/data" / cls, 2, label=label, suffix=".jpg",
                           seed=seed, stem="t")
    write_class_folder(root / "pRCC/train/data/slideA", 3, label=0, suffix=".jpg", seed=seed,
                       stem="p")
    write_class_folder(root / "pRCC/train/data/slideB/deeper", 2, label=1, suffix=".tif",
                       seed=seed, stem="q")
    return root


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def write_png_bomb(path: Path, side: int = 30_000) -> Path:
    """A valid 1-bit PNG of ``side x side`` black pixels: ~110 KB on disk for 30000, 900 MB
    once Pillow decodes it (one byte per pixel). Written row by row, never held whole."""
    compressor = zlib.compressobj(9)
    row = bytes(1 + (side + 7) // 8)  # filter byte, then the packed bits of one row
    idat = b"".join([*(compressor.compress(row) for _ in range(side)), compressor.flush()])
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)  # 1 bit, greyscale
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header)
                     + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b""))
    return path


def write_jpeg_declaring(path: Path, width: int, height: int) -> Path:
    """A small valid JPEG whose frame header (SOF0) is patched to declare ``width x height``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    Image.fromarray(cell_image((16, 16), seed=0)[0], "RGB").save(buffer, "JPEG")
    data = bytearray(buffer.getvalue())
    sof = data.index(b"\xff\xc0")  # marker, length (2), precision (1), height (2), width (2)
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    path.write_bytes(bytes(data))
    return path
