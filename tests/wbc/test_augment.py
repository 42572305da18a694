from __future__ import annotations

import time

import pytest
import torch
import torch.nn.functional as F

from wbc.augment import (
    PasteParams,
    color_jitter,
    expand_with_pastes,
    flip_rot90,
    inpaint_cells,
    mask_paste,
    normalize,
    to_float_nchw,
)

BACKGROUND = (0.9, 0.85, 0.8)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _cells(n: int = 4, size: int = 48, radius: float = 8.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain background with a patterned disk per image at an integer centre near the middle."""
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    images = torch.tensor(BACKGROUND).view(1, 3, 1, 1).repeat(n, 1, size, size)
    masks = torch.zeros(n, size, size, dtype=torch.bool)
    for i in range(n):
        cy, cx = size // 2 - 2 + i, size // 2 + 1 - i
        disk = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
        masks[i] = disk
        # Stripes and a gradient: rotations and shifts show up in every channel.
        pattern = torch.stack(
            [0.2 + 0.3 * ((xx // 2) % 2), 0.1 + 0.02 * (yy % 8), torch.full_like(xx, 0.6) + 0.05 * i]
        ).float()
        images[i] = torch.where(disk, pattern, images[i])
    return images, masks


def _params(k: int, *, angle: float = 0.0, shift: tuple[float, float] = (0.0, 0.0), flip: bool = False,
            background_index: torch.Tensor | None = None) -> PasteParams:
    return PasteParams(
        angles=torch.full((k,), angle),
        shifts=torch.tensor(shift).repeat(k, 1),
        flips=torch.full((k,), flip),
        background_index=background_index,
    )


def _dilate(masks: torch.Tensor, r: int) -> torch.Tensor:
    return F.max_pool2d(masks.float().unsqueeze(1), 2 * r + 1, stride=1, padding=r).squeeze(1) > 0


def test_integer_shift_copies_the_cell_exactly() -> None:
    images, masks = _cells(2)
    out, new_masks, src = mask_paste(
        images, masks, generator=_gen(), factor=1, params=_params(2, shift=(5, -3))
    )
    expected_masks = torch.roll(masks, shifts=(-3, 5), dims=(1, 2))
    assert torch.equal(new_masks, expected_masks)
    expected = torch.roll(images, shifts=(-3, 5), dims=(2, 3))
    sel = expected_masks.unsqueeze(1).expand_as(out)
    torch.testing.assert_close(out[sel], expected[sel], atol=1e-4, rtol=0)
    assert torch.equal(src, torch.arange(2))


def test_quarter_turn_keeps_the_cell_pixels() -> None:
    images, masks = _cells(1)
    out, new_masks, _ = mask_paste(images, masks, generator=_gen(), factor=1, params=_params(1, angle=90))
    # A disk about its (integer) centre maps onto itself.
    assert torch.equal(new_masks, masks)
    for c in range(3):
        before = images[0, c][masks[0]].sort().values
        after = out[0, c][new_masks[0]].sort().values
        torch.testing.assert_close(after, before, atol=1e-4, rtol=0)
    # ... and it did turn: the stripes now run the other way.
    assert not torch.allclose(out[0, 0][masks[0]], images[0, 0][masks[0]], atol=0.1)


def test_flip_mirrors_about_the_centroid() -> None:
    images, masks = _cells(1)
    out, new_masks, _ = mask_paste(images, masks, generator=_gen(), factor=1, params=_params(1, flip=True))
    cx = 48 // 2 + 1
    mirrored = images[0].flip(-1).roll(2 * cx - 47, dims=-1)
    assert torch.equal(new_masks[0], masks[0])
    sel = masks[0].expand(3, -1, -1)
    torch.testing.assert_close(out[0][sel], mirrored[sel], atol=1e-4, rtol=0)


@pytest.mark.parametrize("background", ["none", "own", "other"])
def test_random_pastes_keep_area_and_colour(background: str) -> None:
    images, masks = _cells(4)
    out, new_masks, src = mask_paste(
        images, masks, generator=_gen(1), factor=3, background=background  # type: ignore[arg-type]
    )
    area = masks.sum((1, 2)).float()[src]
    new_area = new_masks.sum((1, 2)).float()
    assert ((new_area / area - 1).abs() < 0.05).all()
    # The rim blends with the new background: compare the interiors.
    inner, new_inner = ~_dilate(~masks, 1), ~_dilate(~new_masks, 1)
    for k in range(out.shape[0]):
        i = int(src[k])
        before = images[i][:, inner[i]].mean(1)
        after = out[k][:, new_inner[k]].mean(1)
        torch.testing.assert_close(after, before, atol=0.02, rtol=0)
    # The cell stays inside the frame.
    assert not new_masks[:, [0, -1], :].any() and not new_masks[:, :, [0, -1]].any()
    # ... and moved somewhere.
    assert not all(torch.equal(new_masks[k], masks[int(src[k])]) for k in range(out.shape[0]))


def test_background_none_is_the_fill() -> None:
    images, masks = _cells(3)
    fill = torch.tensor([0.1, 0.2, 0.3])
    for kw, value in (({}, torch.ones(3)), ({"fill": fill}, fill), ({"fill": 0.0}, torch.zeros(3))):
        out, new_masks, _ = mask_paste(images, masks, generator=_gen(), factor=2, background="none", **kw)
        outside = ~_dilate(new_masks, 2)
        for c in range(3):
            assert torch.equal(out[:, c][outside], torch.full_like(out[:, c][outside], float(value[c])))


def test_background_own_moves_the_cell_and_fills_its_old_place() -> None:
    images, masks = _cells(2)
    # Random texture so "unchanged" is meaningful.
    noise = torch.rand(images.shape, generator=_gen(5)) * 0.05
    images = torch.where(masks.unsqueeze(1), images, images - noise)
    out, new_masks, src = mask_paste(
        images, masks, generator=_gen(), factor=1, background="own", params=_params(2, shift=(12, 0))
    )
    far = ~_dilate(masks | new_masks, 3)
    sel = far.unsqueeze(1).expand_as(out)
    assert torch.equal(out[sel], images[src][sel])
    # The part of the old cell that the moved one does not cover looks like background.
    vacated = masks[src] & ~_dilate(new_masks, 1)
    assert vacated.sum() > 20
    bg = torch.tensor(BACKGROUND).view(3, 1)
    for k in range(2):
        assert (out[k][:, vacated[k]] - bg).abs().max() < 0.08


def test_background_other_uses_the_chosen_background() -> None:
    images, masks = _cells(3)
    backgrounds = torch.rand((5, *images.shape[1:]), generator=_gen(7))
    index = torch.tensor([4, 0, 2, 2, 1, 3])
    out, new_masks, _ = mask_paste(
        images, masks, generator=_gen(), factor=2, background="other", backgrounds=backgrounds,
        params=_params(6, shift=(2, 1), background_index=index),
    )
    outside = (~new_masks).unsqueeze(1).expand_as(out)
    assert torch.equal(out[outside], backgrounds[index][outside])

    # Random choice: every output's background is one of the candidates.
    out, new_masks, _ = mask_paste(
        images, masks, generator=_gen(3), factor=4, background="other", backgrounds=backgrounds
    )
    outside = ~_dilate(new_masks, 2)
    for k in range(out.shape[0]):
        diffs = (out[k] - backgrounds)[:, :, outside[k]].abs().amax((1, 2))
        assert (diffs == 0).sum() == 1


def test_background_other_defaults_to_another_input() -> None:
    images, masks = _cells(3)
    for i in range(3):
        images[i] = torch.where(masks[i], images[i], torch.full_like(images[i], 0.2 * (i + 1)))
    out, new_masks, src = mask_paste(images, masks, generator=_gen(2), factor=8, background="other")
    outside = ~_dilate(new_masks | masks.any(0), 3)
    for k in range(out.shape[0]):
        value = out[k, 0][outside[k]]
        chosen = round(float(value[0]) / 0.2) - 1
        assert chosen != int(src[k])
        assert torch.equal(value, torch.full_like(value, 0.2 * (chosen + 1)))


@pytest.mark.parametrize("factor", [0, 1, 5])
def test_exactly_factor_new_images_per_masked_image(factor: int) -> None:
    images, masks = _cells(3, size=32, radius=5)
    out, new_masks, src = mask_paste(images, masks, generator=_gen(), factor=factor, background="own")
    assert out.shape == (3 * factor, 3, 32, 32) and out.dtype == images.dtype
    assert new_masks.shape == (3 * factor, 32, 32) and new_masks.dtype == torch.bool
    assert src.shape == (3 * factor,) and src.dtype == torch.long
    assert torch.equal(torch.bincount(src, minlength=3), torch.full((3,), factor))
    assert not out.isnan().any()


def test_expand_with_pastes_keeps_originals_first_and_unchanged() -> None:
    images, masks = _cells(5, size=32, radius=5)
    images[1] = torch.rand(3, 32, 32, generator=_gen(9))
    has_mask = torch.tensor([True, False, True, False, True])
    labels = torch.tensor([3, 1, 4, 1, 0])
    for m in (masks, masks[has_mask]):
        original = images.clone()
        out, out_labels = expand_with_pastes(
            images, m, has_mask, labels, generator=_gen(), factor=2, background="other"
        )
        assert torch.equal(images, original)
        assert out.shape == (5 + 3 * 2, 3, 32, 32)
        assert torch.equal(out[:5], images)
        assert torch.equal(out_labels, torch.tensor([3, 1, 4, 1, 0, 3, 3, 4, 4, 0, 0]))
    with pytest.raises(ValueError, match="masks has 2 rows"):
        expand_with_pastes(images, masks[:2], has_mask, labels, generator=_gen(), factor=1)


@pytest.mark.parametrize("background", ["none", "own", "other"])
def test_seeded(background: str) -> None:
    images, masks = _cells(3, size=32, radius=5)
    a = mask_paste(images, masks, generator=_gen(4), factor=2, background=background)  # type: ignore[arg-type]
    b = mask_paste(images, masks, generator=_gen(4), factor=2, background=background)  # type: ignore[arg-type]
    c = mask_paste(images, masks, generator=_gen(5), factor=2, background=background)  # type: ignore[arg-type]
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a[0], c[0])


def test_dtype_and_empty_masks() -> None:
    images, masks = _cells(2, size=32, radius=5)
    masks[1] = False
    for dtype in (torch.float64, torch.bfloat16):
        out, new_masks, _ = mask_paste(images.to(dtype), masks, generator=_gen(), factor=2, background="own")
        assert out.dtype == dtype and not out.isnan().any()
        assert not new_masks[2:].any()
    with pytest.raises(TypeError, match="to_float_nchw"):
        mask_paste((images * 255).byte(), masks, generator=_gen(), factor=1)
    with pytest.raises(ValueError, match="background must be one of"):
        mask_paste(images, masks, generator=_gen(), factor=1, background="black")  # type: ignore[arg-type]


def test_inpaint_keeps_background_and_fills_the_cell() -> None:
    images, masks = _cells(2)
    out = inpaint_cells(images, masks)
    far = ~_dilate(masks, 2)
    sel = far.unsqueeze(1).expand_as(out)
    assert torch.equal(out[sel], images[sel])
    torch.testing.assert_close(
        out[:, :, 24, 24], torch.tensor(BACKGROUND).expand(2, 3), atol=1e-5, rtol=0
    )


@pytest.mark.slow
def test_mask_paste_is_fast() -> None:
    # A wall-clock bound: flaky on a shared, busy CPU, hence slow-marked and best of three.
    g = _gen()
    images = torch.rand(16, 3, 128, 128, generator=g)
    yy, xx = torch.meshgrid(torch.arange(128), torch.arange(128), indexing="ij")
    masks = ((yy - 60) ** 2 + (xx - 70) ** 2 < 30**2).expand(16, -1, -1).clone()
    mask_paste(images, masks, generator=g, factor=5, background="own")
    times = []
    for _ in range(3):
        start = time.perf_counter()
        mask_paste(images, masks, generator=g, factor=5, background="own")
        times.append(time.perf_counter() - start)
    assert min(times) < 1.0


def test_flip_rot90_is_a_symmetry_and_moves_masks_along() -> None:
    g = _gen()
    images = torch.rand(16, 3, 8, 8, generator=g)
    masks = torch.rand(16, 8, 8, generator=g) > 0.5
    out, out_masks = flip_rot90(images, generator=_gen(1), masks=masks)
    seen = set()
    for i in range(16):
        candidates = []
        for t in (False, True):
            x = images[i].transpose(-1, -2) if t else images[i]
            m = masks[i].T if t else masks[i]
            for dims in ((), (-2,), (-1,), (-2, -1)):
                candidates.append((x.flip(dims) if dims else x, m.flip(dims) if dims else m))
        match = [j for j, (x, m) in enumerate(candidates) if torch.equal(out[i], x)]
        assert len(match) == 1
        assert torch.equal(out_masks[i], candidates[match[0]][1])
        seen.add(match[0])
    assert len(seen) >= 5
    assert torch.equal(flip_rot90(images, generator=_gen(1)), out)


def test_flip_rot90_non_square_uses_flips_only() -> None:
    images = torch.rand(8, 3, 6, 10, generator=_gen())
    out = flip_rot90(images, generator=_gen(2))
    assert out.shape == images.shape
    for i in range(8):
        assert any(torch.equal(out[i], images[i].flip(d) if d else images[i])
                   for d in ((), (-2,), (-1,), (-2, -1)))


def test_color_jitter() -> None:
    images = torch.rand(6, 3, 16, 16, generator=_gen())
    same = color_jitter(images, generator=_gen(), brightness=0, contrast=0, saturation=0, hue=0)
    assert torch.equal(same, images)
    out = color_jitter(images, generator=_gen(1), brightness=0.3, contrast=0.3, saturation=0.3, hue=0.1)
    assert out.shape == images.shape and out.dtype == images.dtype
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    # Each image gets its own draw.
    ratio = (out.mean((1, 2, 3)) / images.mean((1, 2, 3)))
    assert ratio.std() > 0.01
    assert torch.equal(out, color_jitter(images, generator=_gen(1), brightness=0.3, contrast=0.3,
                                         saturation=0.3, hue=0.1))
    # Grey stays grey under saturation and hue.
    grey = torch.rand(4, 1, 8, 8, generator=_gen()).expand(-1, 3, -1, -1)
    out = color_jitter(grey, generator=_gen(), brightness=0, contrast=0, saturation=0.5, hue=0.5)
    torch.testing.assert_close(out, grey, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="hue"):
        color_jitter(images, generator=_gen(), hue=0.7)


def test_to_float_nchw_and_normalize() -> None:
    raw = torch.randint(0, 256, (2, 8, 8, 3), dtype=torch.uint8, generator=_gen())
    x = to_float_nchw(raw)
    assert x.shape == (2, 3, 8, 8) and x.dtype == torch.float32
    assert x.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(x[1, 2, 3, 4], raw[1, 3, 4, 2].float() / 255)
    y = normalize(x, (0.5, 0.4, 0.3), (0.2, 0.2, 0.25))
    torch.testing.assert_close(y[:, 2], (x[:, 2] - 0.3) / 0.25)
    with pytest.raises(ValueError, match="std"):
        normalize(x, (0.5, 0.4, 0.3), (0.2, 0.0, 0.25))
