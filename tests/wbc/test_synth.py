from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from wbc.cli import build_parser
from wbc.datasets import TRUTH_DIR, scan_tree, true_mask
from wbc.datasets.layout import CAM16_CLASSES, REPORT_TABLE1, WBC_CLASSES
from wbc.datasets.subsets import floor_count, subset_count
from wbc.synth import (
    SynthSummary,
    planned_counts,
    render_cam16,
    render_prcc,
    render_wbc,
    synthesize,
)

# The report's Table 1 for the subsets: class -> (data, mask) in WBC_50, WBC_10, WBC_1.
REPORT_SUBSETS = {
    "WBC_50": {"Basophil": (88, 8), "Eosinophil": (309, 30), "Lymphocyte": (1007, 100),
               "Monocyte": (233, 23), "Neutrophil": (2586, 258)},
    "WBC_10": {"Basophil": (17, 1), "Eosinophil": (61, 6), "Lymphocyte": (201, 20),
               "Monocyte": (46, 4), "Neutrophil": (517, 51)},
    "WBC_1": {"Basophil": (1, 0), "Eosinophil": (6, 0), "Lymphocyte": (20, 2),
              "Monocyte": (4, 0), "Neutrophil": (51, 5)},
}


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _on_disk(root: Path) -> dict[str, dict[str, dict[str, tuple[int, int]]]]:
    """dataset -> split -> class -> (data, mask) counted from the files."""
    counts: dict[str, dict[str, dict[str, tuple[int, int]]]] = {}
    for image in root.rglob("*.jpg"):
        rel = image.relative_to(root).parts
        dataset, split = rel[0], rel[1]
        cls = rel[3] if len(rel) == 5 else ""
        mask = image.parents[2] / "mask" / cls / f"{image.stem}.png"
        d, m = counts.setdefault(dataset, {}).setdefault(split, {}).get(cls, (0, 0))
        counts[dataset][split][cls] = (d + 1, m + mask.is_file())
    return counts


def _nonzero(counts: dict[str, dict[str, dict[str, tuple[int, int]]]]
             ) -> dict[str, dict[str, dict[str, tuple[int, int]]]]:
    # A subset may lack a class entirely; then its folder does not exist.
    kept = {d: {s: {c: v for c, v in pc.items() if v[0]} for s, pc in sp.items()}
            for d, sp in counts.items()}
    kept = {d: {s: pc for s, pc in sp.items() if pc} for d, sp in kept.items()}
    return {d: sp for d, sp in kept.items() if sp}


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> SynthSummary:
    messages: list[str] = []
    summary = synthesize(tmp_path_factory.mktemp("synth") / "tree", scale=0.01, image_size=48,
                         seed=5, workers=1, progress=messages.append)
    assert messages and "images" in messages[-1]
    return summary


def test_full_scale_counts_are_the_reports_tables() -> None:
    counts = planned_counts(1.0)
    for cls, (n_train, n_mask, n_val) in REPORT_TABLE1.items():
        assert counts["WBC_100"]["train"][cls] == (n_train, n_mask)
        assert counts["WBC_100"]["val"][cls] == (n_val, 0)
    for subset, per_class in REPORT_SUBSETS.items():
        assert counts[subset]["train"] == per_class
    totals = {s: tuple(map(sum, zip(*counts[s]["train"].values(), strict=True)))
              for s in REPORT_SUBSETS}
    assert totals == {"WBC_50": (4223, 419), "WBC_10": (842, 82), "WBC_1": (82, 7)}
    assert counts["CAM16"] == {
        "train": {"normal": (379, 37), "tumor": (378, 37)},
        "val": {"normal": (54, 0), "tumor": (54, 0)},
        "test": {"normal": (108, 0), "tumor": (108, 0)},
    }
    assert counts["pRCC"] == {"train": {"": (1419, 0)}}


@pytest.mark.parametrize("scale", [0.001, 0.01, 0.05, 0.3, 0.5])
def test_small_scale_counts_follow_the_rule(scale: float) -> None:
    counts = planned_counts(scale)
    for cls, (n_train, n_mask, n_val) in REPORT_TABLE1.items():
        images, masks = counts["WBC_100"]["train"][cls]
        assert images == max(1, int(n_train * scale + 0.5))
        assert counts["WBC_100"]["val"][cls][0] == max(1, int(n_val * scale + 0.5))
        assert masks <= images
        assert masks >= int(n_mask * scale + 0.5) or masks == images
        if scale >= 0.05 and images >= 2:
            assert masks >= 1
        for p in (50, 10, 1):
            # wbc.datasets.subsets' rule: subset_count images, of them floor(masks * p) masked
            # unless the class has too few unmasked images to make up the rest.
            data = subset_count(images, p)
            assert counts[f"WBC_{p}"]["train"][cls] == (
                data, max(floor_count(masks, p), data - (images - masks)))
    for cls in CAM16_CLASSES:
        for split in ("train", "val", "test"):
            assert counts["CAM16"][split][cls][0] >= 1
    assert counts["pRCC"]["train"][""][0] >= 1


@pytest.mark.parametrize("scale", [0.0, -1.0, float("nan")])
def test_bad_scale_is_refused(scale: float) -> None:
    with pytest.raises(ValueError, match="scale"):
        planned_counts(scale)


def test_files_on_disk_match_the_plan(tree: SynthSummary) -> None:
    expected = _nonzero({d: {s: dict(pc) for s, pc in sp.items()}
                         for d, sp in planned_counts(0.01).items()})
    assert _on_disk(tree.out) == expected
    assert _nonzero({d: {s: dict(pc) for s, pc in sp.items()}
                     for d, sp in tree.counts.items()}) == expected
    wbc = planned_counts(0.01)["WBC_100"]
    assert tree.images == sum(len(list((tree.out / d).rglob("*.jpg")))
                              for d in ("WBC_100", "CAM16", "pRCC"))
    assert tree.masks == sum(m for pc in wbc.values() for _, m in pc.values()) + sum(
        m for _, m in planned_counts(0.01)["CAM16"]["train"].values())
    assert not list(tree.out.rglob("*.tmp")), "temporary files left behind"


def test_images_decode_at_the_requested_size(tree: SynthSummary) -> None:
    for image in tree.out.rglob("*.jpg"):
        with Image.open(image) as im:
            assert (im.format, im.mode, im.size) == ("JPEG", "RGB", (48, 48))


def test_masks_pair_with_images_and_have_three_levels(tree: SynthSummary) -> None:
    masks = list((tree.out / "WBC_100").rglob("*.png"))
    assert masks
    for mask_path in masks:
        image = mask_path.parents[2] / "data" / mask_path.parent.name / f"{mask_path.stem}.jpg"
        assert image.is_file(), f"{mask_path} has no image"
        mask = np.asarray(Image.open(mask_path))
        assert mask.shape == (48, 48)
        assert set(np.unique(mask).tolist()) == {0, 128, 255}
    for mask_path in (tree.out / "CAM16").rglob("*.png"):
        image = mask_path.parents[2] / "data" / mask_path.parent.name / f"{mask_path.stem}.jpg"
        assert image.is_file()
        assert set(np.unique(np.asarray(Image.open(mask_path))).tolist()) <= {0, 255}


def test_subsets_are_links_to_wbc100_and_nested(tree: SynthSummary) -> None:
    names: dict[str, set[str]] = {}
    for subset in ("WBC_50", "WBC_10", "WBC_1"):
        files = [p for p in (tree.out / subset).rglob("*") if p.is_file()]
        for p in files:
            original = tree.out / "WBC_100" / p.relative_to(tree.out / subset)
            assert original.is_file(), f"{p} is not a WBC_100 file"
            assert p.samefile(original) or p.read_bytes() == original.read_bytes()
        names[subset] = {str(p.relative_to(tree.out / subset)) for p in files}
    assert names["WBC_1"] <= names["WBC_10"] <= names["WBC_50"]
    assert names["WBC_50"]


def _contrast(feature: np.ndarray, region: np.ndarray) -> float:
    return float(feature[region].mean() - feature[~region].mean())


@pytest.mark.parametrize("cls", WBC_CLASSES)
def test_mask_marks_the_drawn_cell(cls: str) -> None:
    rng = np.random.default_rng(11)
    at_mask, shifted = 0.0, np.zeros(4)
    for _ in range(4):
        image, mask = render_wbc(cls, rng, 64)
        assert image.shape == (64, 64, 3) and image.dtype == np.uint8
        assert mask.shape == (64, 64) and mask.dtype == np.uint8
        nucleus, cell = mask == 255, mask > 0
        assert nucleus.sum() > 20 and (mask == 128).sum() > 20
        # One connected cell: its centroid lies inside it.
        ys, xs = np.nonzero(cell)
        assert cell[round(ys.mean()), round(xs.mean())]
        # Blue minus red picks out the stained nucleus against red cells and plasma.
        blue = image[..., 2].astype(float) - image[..., 0].astype(float)
        at_mask += _contrast(blue, nucleus)
        shifted += [_contrast(blue, np.roll(nucleus, s, axis=a)) for s in (-3, 3) for a in (0, 1)]
    # Summed over a few crops, because a basophil's granules may hide its nucleus in one: a mask
    # off by 3 px would lose contrast.
    assert at_mask > shifted.max()


def test_tissue_renderers() -> None:
    rng = np.random.default_rng(3)
    for cls in CAM16_CLASSES:
        image, mask = render_cam16(cls, rng, 64)
        assert image.shape == (64, 64, 3) and mask.shape == (64, 64)
        assert set(np.unique(mask).tolist()) == {0, 255}
    assert render_prcc(rng, 64).shape == (64, 64, 3)
    with pytest.raises(ValueError, match="Basophil"):
        render_wbc("Platelet", rng, 64)


def test_same_seed_same_bytes_across_worker_counts(tmp_path: Path) -> None:
    one = synthesize(tmp_path / "one", scale=0.003, image_size=48, seed=2, workers=1)
    two = synthesize(tmp_path / "two", scale=0.003, image_size=48, seed=2, workers=2)
    other = synthesize(tmp_path / "other", scale=0.003, image_size=48, seed=3, workers=1)
    a, b, c = _files(one.out), _files(two.out), _files(other.out)
    assert a == b
    # Another seed draws other images (and other masks and subsets) under the same names.
    images = [k for k in a if k.endswith(".jpg") and not k.startswith(("WBC_50", "WBC_10", "WBC_1/"))]
    assert images and all(k in c and a[k] != c[k] for k in images)


def test_non_empty_out_is_refused_unless_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match=str(out)):
        synthesize(out, scale=0.001, image_size=32, workers=1)
    first = synthesize(out, scale=0.001, image_size=32, workers=1, overwrite=True)
    again = synthesize(out, scale=0.001, image_size=32, workers=1, overwrite=True)
    assert _on_disk(first.out) == _on_disk(again.out)
    assert (out / "keep.txt").read_text() == "mine"


# ---------------------------------------------------------------------------------------------
# val_scale and tissue_scale


def test_val_and_tissue_scales_change_only_their_own_counts() -> None:
    base = planned_counts(0.01)
    mixed = planned_counts(0.01, val_scale=0.2, tissue_scale=0.5)
    # scale alone decides WBC_100/train and so the subsets.
    for name in ("WBC_50", "WBC_10", "WBC_1"):
        assert mixed[name] == base[name]
    assert mixed["WBC_100"]["train"] == base["WBC_100"]["train"]
    assert mixed["WBC_100"]["val"] == planned_counts(0.2)["WBC_100"]["val"]
    assert mixed["CAM16"] == planned_counts(0.5)["CAM16"]
    assert mixed["pRCC"] == planned_counts(0.5)["pRCC"]
    # Above 1.0 draws more than the report's val set and Table 2.
    assert planned_counts(0.01, val_scale=2.0)["WBC_100"]["val"]["Neutrophil"] == (
        2 * planned_counts(1.0)["WBC_100"]["val"]["Neutrophil"][0], 0)
    assert planned_counts(0.3, val_scale=None, tissue_scale=None) == planned_counts(0.3)
    assert planned_counts(0.3, val_scale=0.3, tissue_scale=0.3) == planned_counts(0.3)


@pytest.mark.parametrize("option", ["val_scale", "tissue_scale"])
@pytest.mark.parametrize("value", [0.0, -0.5, float("inf")])
def test_bad_val_or_tissue_scale_is_refused(option: str, value: float) -> None:
    with pytest.raises(ValueError, match=option):
        planned_counts(0.1, **{option: value})


def test_tree_with_val_and_tissue_scales(tmp_path: Path) -> None:
    plain = synthesize(tmp_path / "plain", scale=0.003, image_size=32, seed=4, workers=1)
    mixed = synthesize(tmp_path / "mixed", scale=0.003, image_size=32, seed=4, workers=1,
                       val_scale=0.01, tissue_scale=0.02)
    expected = planned_counts(0.003, val_scale=0.01, tissue_scale=0.02)
    assert _on_disk(mixed.out) == _nonzero({d: {s: dict(pc) for s, pc in sp.items()}
                                            for d, sp in expected.items()})
    assert (mixed.val_scale, mixed.tissue_scale) == (0.01, 0.02)
    assert (plain.val_scale, plain.tissue_scale) == (0.003, 0.003)
    recorded = json.loads((mixed.out / "synth.json").read_text())
    assert [recorded[k] for k in ("scale", "val_scale", "tissue_scale")] == [0.003, 0.01, 0.02]
    cam16 = recorded["counts"]["CAM16"]["train"]["tumor"]
    assert cam16 == list(expected["CAM16"]["train"]["tumor"])
    # Left at their defaults they are not recorded: synth.json keeps its old keys.
    assert list(json.loads((plain.out / "synth.json").read_text())) == [
        "generator", "seed", "scale", "image_size", "truth", "counts"]
    # An image's bytes depend on its place in the tree, not on the scales: the training set and
    # its subsets are the same files, and the larger splits begin with the smaller ones' images.
    a, b = _files(plain.out), _files(mixed.out)
    train = [k for k in a if k.startswith(("WBC_100/train", "WBC_50", "WBC_10", "WBC_1/"))]
    assert train and all(a[k] == b[k] for k in train)
    assert all(a[k] == b[k] for k in a if k.startswith(("WBC_100/val", "CAM16", "pRCC")))
    assert sum(k.startswith("CAM16") for k in b) > sum(k.startswith("CAM16") for k in a)


def test_cli_synth_takes_val_and_tissue_scales() -> None:
    args = build_parser().parse_args(["synth", "out", "--scale", "0.05", "--val-scale", "0.5",
                                      "--tissue-scale", "2"])
    assert (args.scale, args.val_scale, args.tissue_scale) == (0.05, 0.5, 2.0)
    args = build_parser().parse_args(["synth", "out"])
    assert (args.val_scale, args.tissue_scale) == (None, None)


def test_test_scale_adds_a_test_split_in_val_proportions() -> None:
    base = planned_counts(0.15, val_scale=0.2)
    withtest = planned_counts(0.15, val_scale=0.2, test_scale=0.8)
    assert "test" not in base["WBC_100"]
    assert {k: v for k, v in withtest.items()} | {"WBC_100": base["WBC_100"]} == base
    assert {s: withtest["WBC_100"][s] for s in ("train", "val")} == base["WBC_100"]
    # The report's val counts at 0.8: four times the val split at 0.2, the rare classes too.
    assert withtest["WBC_100"]["test"] == planned_counts(0.8)["WBC_100"]["val"]
    test = withtest["WBC_100"]["test"]
    assert test["Basophil"][0] >= 4 * base["WBC_100"]["val"]["Basophil"][0] - 2
    assert all(masks == 0 for _, masks in test.values())
    with pytest.raises(ValueError, match="test_scale"):
        planned_counts(0.1, test_scale=0.0)


def test_tree_with_a_test_split_reports_on_it(tmp_path: Path) -> None:
    from wbc.training.inputs import evaluation_splits

    plain = synthesize(tmp_path / "plain", scale=0.003, image_size=32, seed=4, workers=1)
    tested = synthesize(tmp_path / "tested", scale=0.003, image_size=32, seed=4, workers=1,
                        test_scale=0.02)
    expected = planned_counts(0.003, test_scale=0.02)
    assert _on_disk(tested.out) == _nonzero({d: {s: dict(pc) for s, pc in sp.items()}
                                             for d, sp in expected.items()})
    assert tested.test_scale == 0.02 and plain.test_scale is None
    assert json.loads((tested.out / "synth.json").read_text())["test_scale"] == 0.02
    # The other splits are the same files; the test split's are its own.
    a, b = _files(plain.out), _files(tested.out)
    assert all(b[k] == v for k, v in a.items() if k != "synth.json")
    test_files = [k for k in b if k.startswith("WBC_100/test")]
    assert test_files and not set(b[k] for k in test_files) & set(a.values())
    # A tree with a test split reports on it and picks epochs on all of val.
    wbc = scan_tree(tested.out).wbc
    selection, reporting = evaluation_splits(wbc.val, wbc.test)
    assert (selection.name, reporting.name) == ("WBC_100/val", "WBC_100/test")
    assert len(reporting.samples) == sum(n for n, _ in expected["WBC_100"]["test"].values())
    args = build_parser().parse_args(["synth", "out", "--test-scale", "0.8"])
    assert args.test_scale == 0.8
    assert build_parser().parse_args(["synth", "out"]).test_scale is None


# ---------------------------------------------------------------------------------------------
# CAM16: the class is in the nuclei, not in the colour statistics


def _cam16_tiles(
    seed: int, per_class: int, size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-channel mean and std, the masks, and the labels of ``per_class`` tiles a class."""
    feats, masks, labels = [], [], []
    for label, cls in enumerate(CAM16_CLASSES):
        rng = np.random.default_rng([seed, label])
        for _ in range(per_class):
            image, mask = render_cam16(cls, rng, size)
            pixels = image.reshape(-1, 3).astype(float)
            feats.append(np.concatenate([pixels.mean(0), pixels.std(0)]))
            masks.append(mask)
            labels.append(label)
    return np.array(feats), np.array(masks), np.array(labels)


def test_cam16_colour_statistics_do_not_give_the_class_away() -> None:
    train_x, train_masks, train_y = _cam16_tiles(100, 100, 40)
    test_x, _, test_y = _cam16_tiles(200, 100, 40)
    mu, sd = train_x.mean(0), train_x.std(0)
    train_x, test_x = (train_x - mu) / sd, (test_x - mu) / sd
    centres = np.stack([train_x[train_y == c].mean(0) for c in (0, 1)])
    guess = np.argmin(((test_x[:, None] - centres[None]) ** 2).sum(-1), axis=1)
    accuracy = float((guess == test_y).mean())
    # The old renderer scored 0.78 on this; chance is 0.5.
    assert accuracy < 0.7, f"nearest class mean on colour statistics: {accuracy:.2f}"
    # The same nuclear coverage in both classes, carried by fewer, larger tumour nuclei.
    cover = (train_masks == 255).mean(axis=(1, 2))
    assert abs(cover[train_y == 0].mean() - cover[train_y == 1].mean()) < 0.04
    sizes = []
    for c in (0, 1):
        labelled = [ndimage.label(m == 255)[0] for m in train_masks[train_y == c]]
        sizes.append(np.median(np.concatenate([np.bincount(k.ravel())[1:] for k in labelled])))
    assert sizes[1] > 1.5 * sizes[0], f"median nuclear area normal {sizes[0]}, tumour {sizes[1]}"


# ---------------------------------------------------------------------------------------------
# stain_shift: another lab's stain and microscope


def test_stain_shift_zero_is_the_usual_tree(tmp_path: Path) -> None:
    plain = synthesize(tmp_path / "plain", scale=0.002, image_size=32, seed=6, workers=1)
    zero = synthesize(tmp_path / "zero", scale=0.002, image_size=32, seed=6, workers=1,
                      stain_shift=0.0)
    # Every file, synth.json included, byte for byte: committed results depend on it.
    assert _files(plain.out) == _files(zero.out)
    assert plain.stain_shift == zero.stain_shift == 0.0
    assert "stain_shift" not in json.loads((plain.out / "synth.json").read_text())


def test_stain_shift_changes_the_look_not_the_cells(tmp_path: Path) -> None:
    plain = synthesize(tmp_path / "plain", scale=0.003, image_size=48, seed=2, workers=1)
    # Through the worker pool: the shift must reach the worker processes.
    shifted = synthesize(tmp_path / "shifted", scale=0.003, image_size=48, seed=2, workers=2,
                         stain_shift=1.0)
    again = synthesize(tmp_path / "again", scale=0.003, image_size=48, seed=2, workers=1,
                       stain_shift=1.0)
    a, b = _files(plain.out), _files(shifted.out)
    assert _files(again.out) == b
    assert a.keys() == b.keys()
    masks = [k for k in a if k.endswith(".png")]
    images = [k for k in a if k.endswith(".jpg")]
    assert masks and images
    # The same cells, tissue and masks (the same files carry them), true masks included, in
    # other colours.
    assert any(k.startswith(f"{TRUTH_DIR}/") for k in masks)
    assert all(a[k] == b[k] for k in masks)
    assert all(a[k] != b[k] for k in images)
    recorded = json.loads((shifted.out / "synth.json").read_text())
    assert recorded["stain_shift"] == 1.0 and shifted.stain_shift == 1.0
    assert list(recorded) == ["generator", "seed", "scale", "stain_shift", "image_size", "truth",
                              "counts"]
    assert recorded["counts"] == json.loads((plain.out / "synth.json").read_text())["counts"]


def _renderer(name: str) -> Callable[[np.random.Generator, float], np.ndarray]:
    """The image (mask dropped) of a WBC class, a CAM16 tumour tile or a pRCC tile, at 32 px."""
    def render(rng: np.random.Generator, shift: float) -> np.ndarray:
        if name == "CAM16":
            return render_cam16("tumor", rng, 32, stain_shift=shift)[0]
        if name == "pRCC":
            return render_prcc(rng, 32, stain_shift=shift)
        return render_wbc(name, rng, 32, stain_shift=shift)[0]
    return render


@pytest.mark.parametrize("name", [*WBC_CLASSES, "CAM16", "pRCC"])
def test_stain_shift_moves_the_colour_one_way(name: str) -> None:
    render = _renderer(name)
    means, after = [], []
    for shift in (-1.0, 0.0, 1.0):
        per_image, next_draws = [], []
        for i in range(6):
            rng = np.random.default_rng([8, i])
            per_image.append(render(rng, shift).reshape(-1, 3).mean(0))
            next_draws.append(rng.random())
        means.append(np.mean(per_image, axis=0))
        after.append(next_draws)
    # The shift draws nothing: the stream ends where the unshifted image leaves it.
    assert after[0] == after[1] == after[2]
    cold, usual, warm = means
    # Positive: a warmer lamp and a stain that absorbs less red: redder, less blue; negative the
    # other way. Clearly visible at 1, but the same kind of image.
    warmth = [m[0] - m[2] for m in (cold, usual, warm)]
    assert warmth[0] + 8 < warmth[1] < warmth[2] - 8, warmth
    assert cold[2] > usual[2] > warm[2]
    assert np.abs(warm - usual).max() < 45 and np.abs(cold - usual).max() < 45
    if name in WBC_CLASSES:
        # The same crop, the same mask.
        masks = [render_wbc(name, np.random.default_rng(3), 32, stain_shift=s)[1]
                 for s in (-1.0, 0.0, 1.0)]
        assert all(np.array_equal(masks[1], m) for m in masks)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_stain_shift_is_refused(tmp_path: Path, value: float) -> None:
    with pytest.raises(ValueError, match=f"stain_shift.*{value}"):
        synthesize(tmp_path / "out", scale=0.001, image_size=32, workers=1, stain_shift=value)
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match="stain_shift"):
        render_wbc("Monocyte", np.random.default_rng(0), 32, stain_shift=value)


def test_cli_synth_takes_a_stain_shift(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from wbc.cli import main

    assert build_parser().parse_args(["synth", "out"]).stain_shift == 0.0
    out = tmp_path / "other"
    assert main(["synth", str(out), "--scale", "0.001", "--image-size", "32", "--workers", "1",
                 "--quiet", "--stain-shift", "-0.5"]) == 0
    assert "stain shift -0.5" in capsys.readouterr().out
    assert json.loads((out / "synth.json").read_text())["stain_shift"] == -0.5
    assert main(["synth", str(tmp_path / "bad"), "--scale", "0.001", "--stain-shift", "nan"]) == 2
    assert "stain_shift" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# truth/: the true mask of every image


def test_every_image_has_its_true_mask(tree: SynthSummary) -> None:
    root = tree.out
    images = sorted((root / "WBC_100").rglob("*.jpg")) + sorted((root / "CAM16").rglob("*.jpg"))
    found = [true_mask(root, image) for image in images]
    assert all(p is not None for p in found)
    truth_files = sorted((root / TRUTH_DIR).rglob("*"))
    assert sorted(p for p in found if p is not None) == [p for p in truth_files if p.is_file()]
    assert tree.truth == len(images)
    with_mask = 0
    for image, truth in zip(images, found, strict=True):
        assert truth is not None
        rel = image.relative_to(root).parts
        assert truth == root / TRUTH_DIR / rel[0] / rel[1] / rel[3] / f"{image.stem}.png"
        mask = np.asarray(Image.open(truth))
        assert mask.shape == (48, 48) and mask.any()
        levels = {0, 128, 255} if rel[0] == "WBC_100" else {0, 255}
        assert set(np.unique(mask).tolist()) <= levels
        layout_mask = image.parents[2] / "mask" / rel[3] / f"{image.stem}.png"
        if layout_mask.is_file():
            with_mask += 1
            assert truth.read_bytes() == layout_mask.read_bytes()
    assert with_mask == tree.masks
    # A subset's images are WBC_100's files: so is their truth. pRCC has none.
    subset_image = next((root / "WBC_10").rglob("*.jpg"))
    wbc100 = root / "WBC_100" / subset_image.relative_to(root / "WBC_10")
    assert true_mask(root, subset_image) == true_mask(root, wbc100) is not None
    assert true_mask(root, next((root / "pRCC").rglob("*.jpg"))) is None
    recorded = json.loads((root / "synth.json").read_text())["truth"]
    assert recorded["folder"] == TRUTH_DIR and recorded["datasets"] == ["WBC_100", "CAM16"]


def test_true_mask_takes_relative_and_absolute_paths(tree: SynthSummary,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    image = next((tree.out / "WBC_100" / "val").rglob("*.jpg"))
    truth = true_mask(tree.out, image)
    assert truth is not None
    assert true_mask(tree.out, image.relative_to(tree.out)) == truth
    monkeypatch.chdir(tree.out.parent)
    assert true_mask(Path(tree.out.name), image) == Path(tree.out.name) / truth.relative_to(
        tree.out)
    with pytest.raises(ValueError, match="not inside"):
        true_mask(tree.out, Path("/elsewhere/WBC_100/train/data/Basophil/x.jpg"))
    with pytest.raises(ValueError, match="data"):
        true_mask(tree.out, "WBC_100/train/mask/Basophil/x.png")
    assert true_mask(tree.out, "WBC_100/train/data/Basophil/missing.jpg") is None


def test_scanners_ignore_truth(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from wbc.cli import main

    out = synthesize(tmp_path / "tree", scale=0.002, image_size=32, seed=1, workers=1).out
    with_truth = scan_tree(out, workers=1)
    assert main(["check", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert f"{TRUTH_DIR}/: true masks" in printed and "0 warning(s)" in printed
    (out / TRUTH_DIR).rename(tmp_path / "aside")
    without = scan_tree(out, workers=1)
    assert with_truth.usable and not with_truth.problems
    assert list(with_truth.all_samples()) == list(without.all_samples())
    assert with_truth == without
    assert main(["check", str(out), "--quiet"]) == 0
    assert TRUTH_DIR not in capsys.readouterr().out


def test_no_truth_and_overwrite_removes_it(tmp_path: Path) -> None:
    first = synthesize(tmp_path / "out", scale=0.001, image_size=32, seed=3, workers=1)
    assert (first.out / TRUTH_DIR).is_dir() and first.truth
    before = _files(first.out)
    bare = synthesize(first.out, scale=0.001, image_size=32, seed=3, workers=1, truth=False,
                      overwrite=True)
    assert not (bare.out / TRUTH_DIR).exists() and bare.truth == 0
    # Truth adds files and changes no other: without it the tree is the one made before true
    # masks existed, synth.json included.
    after = _files(bare.out)
    assert after == {k: v for k, v in before.items()
                     if not k.startswith(f"{TRUTH_DIR}/") and k != "synth.json"} | {
        "synth.json": after["synth.json"]}
    recorded = json.loads(after["synth.json"])
    assert list(recorded) == ["generator", "seed", "scale", "image_size", "counts"]
    assert recorded == {k: v for k, v in json.loads(before["synth.json"]).items() if k != "truth"}


def test_cli_synth_no_truth() -> None:
    assert build_parser().parse_args(["synth", "out"]).no_truth is False
    assert build_parser().parse_args(["synth", "out", "--no-truth"]).no_truth is True
