from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.treegen import (
    cell_image,
    write_image,
    write_jpeg_declaring,
    write_mask,
    write_png_bomb,
)
from wbc.datasets.imageio import (
    MAX_PIXELS_ENV,
    ImageError,
    inspect_image,
    mask_to_working,
    max_image_pixels,
    read_mask,
    read_rgb,
    to_working,
)


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".bmp", ".tif"])
@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "P", "I;16"])
def test_every_format_and_mode_reads_as_rgb_uint8(tmp_path: Path, suffix: str, mode: str) -> None:
    if suffix == ".jpg" and mode in ("RGBA", "P", "I;16"):
        pytest.skip("JPEG stores none of these modes")
    if suffix == ".bmp" and mode == "I;16":
        pytest.skip("BMP has no 16-bit grey")
    image, _ = cell_image((48, 40), seed=1)
    path = write_image(tmp_path / f"x{suffix}", image, mode=mode)
    rgb = read_rgb(path)
    assert rgb.dtype == np.uint8
    assert rgb.shape == (40, 48, 3)
    grey_expected = np.asarray(Image.fromarray(image).convert("L"), np.float64)
    grey_got = rgb.astype(np.float64).mean(axis=-1)
    # Lossy formats and palettes move values a little; a wrong bit depth moves them a lot.
    assert np.abs(grey_got - grey_expected).mean() < 12


def test_sixteen_bit_keeps_full_scale(tmp_path: Path) -> None:
    grey = np.full((8, 8), 65535, np.uint16)
    grey[:4] = 32896  # 128 * 257
    path = tmp_path / "deep.png"
    Image.fromarray(grey).save(path)
    rgb = read_rgb(path)
    assert rgb[0, 0].tolist() == [128, 128, 128]
    assert rgb[-1, -1].tolist() == [255, 255, 255]


def test_transparent_pixels_become_white(tmp_path: Path) -> None:
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:2, :, 3] = 255
    path = tmp_path / "a.png"
    Image.fromarray(rgba, "RGBA").save(path)
    rgb = read_rgb(path)
    assert rgb[0, 0].tolist() == [200, 0, 0]
    assert rgb[-1, -1].tolist() == [255, 255, 255]


@pytest.mark.parametrize("levels", [(0, 1), (0, 255), (0, 128, 255)])
def test_masks_binary_or_multilevel_nonzero_is_cell(tmp_path: Path, levels: tuple[int, ...]) -> None:
    mask = np.zeros((10, 10), np.uint8)
    mask[2:8, 2:8] = levels[1]
    mask[4:6, 4:6] = levels[-1]
    path = write_mask(tmp_path / "m.png", mask)
    got = read_mask(path)
    assert got.dtype == bool
    assert got.sum() == 36


def test_bad_files_raise_with_a_reason(tmp_path: Path) -> None:
    zero = tmp_path / "zero.jpg"
    zero.write_bytes(b"")
    text = tmp_path / "text.png"
    text.write_text("not pixels")
    good = write_image(tmp_path / "good.jpg", cell_image((64, 64), seed=0)[0])
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    dangling = tmp_path / "gone.png"
    dangling.symlink_to(tmp_path / "nowhere.png")
    cases = {zero: "zero-byte", text: "not an image", cut: "truncated", dangling: "unreadable"}
    for path, reason in cases.items():
        with pytest.raises(ImageError) as info:
            inspect_image(path)
        assert reason in info.value.reason
        assert info.value.path == path
    assert inspect_image(good).width == 64


def test_working_resolution_pads_to_square_and_keeps_masks_aligned() -> None:
    image, mask = cell_image((80, 40), seed=2)  # wide: 40 rows, 80 columns
    work = to_working(image, 32)
    work_mask = mask_to_working(mask != 0, 32, image_shape=image.shape[:2])
    assert work.shape == (32, 32, 3)
    assert work_mask.shape == (32, 32)
    # Padding above and below uses the background colour, not black.
    assert work[0].mean() > 180 and work[-1].mean() > 180
    # The cell's pixels in the resized image are the cell colour where the mask says so.
    cell = work[work_mask].astype(float).mean(axis=0)
    background = work[~work_mask].astype(float).mean(axis=0)
    assert np.abs(cell - background).sum() > 100
    rows = np.flatnonzero(work_mask.any(axis=1))
    assert rows.min() > 8 and rows.max() < 24  # vertically centred by the padding


def test_draft_decoding_gives_at_least_the_requested_size(tmp_path: Path) -> None:
    path = write_image(tmp_path / "big.jpg", cell_image((400, 400), seed=3)[0])
    small = read_rgb(path, draft_size=64)
    assert 64 <= small.shape[0] < 400


@pytest.mark.parametrize("kind", ["png-bomb", "jpeg-header"])
def test_decompression_bombs_are_refused_from_the_header(tmp_path: Path, kind: str) -> None:
    # A real 30000x30000 PNG (110 KB, 900 MB decoded), or a JPEG declaring 60000x60000: refused
    # before any pixel is decoded, so the test costs no memory, with no Pillow warning.
    path = (write_png_bomb(tmp_path / "bomb.png") if kind == "png-bomb"
            else write_jpeg_declaring(tmp_path / "bomb.jpg", 60_000, 60_000))
    side = "30000x30000" if kind == "png-bomb" else "60000x60000"
    pillow_limit = Image.MAX_IMAGE_PIXELS
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for read in (inspect_image, read_rgb, read_mask):
            with pytest.raises(ImageError) as info:
                read(path)
            assert info.value.path == path
            assert side in info.value.reason and "declared in its header" in info.value.reason
            assert "67,108,864" in info.value.reason and MAX_PIXELS_ENV in info.value.reason
    assert pillow_limit == Image.MAX_IMAGE_PIXELS  # Pillow's own guard is left as it was


def test_the_pixel_limit_is_raised_or_lowered_through_the_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_image(tmp_path / "cell.png", cell_image((40, 30), seed=0)[0])
    monkeypatch.setenv(MAX_PIXELS_ENV, "1000")
    with pytest.raises(ImageError, match=r"40x30 = 1,200 pixels.*limit of 1,000"):
        read_rgb(path)
    monkeypatch.setenv(MAX_PIXELS_ENV, "40x30")
    assert max_image_pixels() == 1200 and read_rgb(path).shape == (30, 40, 3)
    monkeypatch.setenv(MAX_PIXELS_ENV, "lots")
    with pytest.raises(ValueError, match=f"{MAX_PIXELS_ENV}='lots'"):
        max_image_pixels()


def test_a_blank_mask_is_known_as_blank(tmp_path: Path) -> None:
    blank = write_mask(tmp_path / "blank.png", np.zeros((10, 10), np.uint8))
    rgba = np.zeros((10, 10, 4), np.uint8)
    rgba[..., 3] = 255  # opaque black: still no cell, as read_mask sees it
    opaque = tmp_path / "opaque.png"
    Image.fromarray(rgba, "RGBA").save(opaque)
    one = np.zeros((10, 10), np.uint8)
    one[5, 5] = 1
    cell = write_mask(tmp_path / "cell.png", one)
    assert inspect_image(blank).blank and inspect_image(opaque).blank
    assert not inspect_image(cell).blank and read_mask(cell).sum() == 1


def test_paths_may_be_given_as_text(tmp_path: Path) -> None:
    image, mask = cell_image((48, 40), seed=3)
    path = write_image(tmp_path / "cell.png", image)
    mask_path = write_mask(tmp_path / "cell-mask.png", mask)
    np.testing.assert_array_equal(read_rgb(str(path)), read_rgb(path))
    np.testing.assert_array_equal(read_mask(str(mask_path)), read_mask(mask_path))
    assert (inspect_image(str(path)).width, inspect_image(str(path)).height) == (48, 40)
    with pytest.raises(ImageError) as info:
        read_rgb(str(tmp_path / "missing.png"))
    assert info.value.path == tmp_path / "missing.png"  # a Path, whatever was given
