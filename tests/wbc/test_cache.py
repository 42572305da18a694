from __future__ import annotations

import multiprocessing
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.treegen import make_wbc_tree, write_image
from wbc.cache import decode_samples
from wbc.datasets import scan_tree
from wbc.imageio import ImageError
from wbc.layout import WBC_CLASSES


def _all_wbc(root: Path) -> list:
    tree = scan_tree(root, verify=False)
    return list(tree.wbc.samples())


def test_second_load_decodes_nothing_and_maps_the_same_pixels(tmp_path: Path) -> None:
    root = make_wbc_tree(tmp_path / "t", {c: (4, 2, 2) for c in WBC_CLASSES}, suffix=".bmp",
                         sizes=((40, 40), (60, 48)))
    samples = _all_wbc(root)
    first = decode_samples(samples, 32, workers=1)
    assert first.decoded_now == 30 == len(first)
    second = decode_samples(samples, 32, workers=1)
    assert second.decoded_now == 0
    assert second.directory == first.directory
    assert isinstance(second.images, np.memmap) and not second.images.flags.writeable
    np.testing.assert_array_equal(np.asarray(first.images), np.asarray(second.images))
    assert second.images.shape == (30, 32, 32, 3) and second.images.dtype == np.uint8
    rows = second.rows(samples)
    assert sorted(set(rows.tolist())) == list(range(30))
    np.testing.assert_array_equal(second.labels[rows], [s.label for s in samples])


def test_masks_align_with_their_images(tmp_path: Path) -> None:
    root = make_wbc_tree(tmp_path / "t", {c: (2, 2, 1) for c in WBC_CLASSES},
                         sizes=((80, 64),))
    samples = scan_tree(root, verify=False).wbc.subset(100)
    decoded = decode_samples(samples, 32, workers=1)
    assert decoded.masks.shape == (10, 32, 32) and decoded.masks.dtype == bool
    for row in decoded.rows(samples):
        mask = decoded.mask_for(int(row))
        assert mask is not None
        image = decoded.images[row].astype(float)
        inside, outside = image[mask].mean(axis=0), image[~mask].mean(axis=0)
        assert np.abs(inside - outside).sum() > 100  # the disc is where the mask says


def test_subset_links_and_copies_share_rows(tmp_path: Path) -> None:
    root = make_wbc_tree(tmp_path / "t", {c: (4, 1, 1) for c in WBC_CLASSES})
    for cls in WBC_CLASSES:
        src = root / "WBC_100/train/data" / cls
        linked = root / "WBC_50/train/data" / cls
        copied = root / "WBC_10/train/data" / cls
        linked.mkdir(parents=True)
        copied.mkdir(parents=True)
        os.link(src / "tr0000.png", linked / "tr0000.png")
        shutil.copy2(src / "tr0001.png", copied / "tr0001.png")
    samples = _all_wbc(root)
    decoded = decode_samples(samples, 24, workers=1)
    assert len(decoded) == 25  # 20 train + 5 val; the 10 subset files are the same images
    tree = scan_tree(root, verify=False)
    sub = decoded.rows(tree.wbc.subset(10))
    full = decoded.rows(tree.wbc.subset(100))
    assert set(sub.tolist()) <= set(full.tolist())


def test_a_changed_file_rebuilds(tmp_path: Path) -> None:
    root = make_wbc_tree(tmp_path / "t", {c: (2, 0, 1) for c in WBC_CLASSES})
    samples = _all_wbc(root)
    before = decode_samples(samples, 24, workers=1)
    target = root / "WBC_100/train/data/Basophil/tr0000.png"
    write_image(target, np.zeros((40, 40, 3), np.uint8))
    after = decode_samples(_all_wbc(root), 24, workers=1)
    assert after.directory != before.directory and after.decoded_now == 15
    row = after.row_of[str(target)]
    assert int(np.asarray(after.images[row]).max()) == 0


def test_another_resolution_is_another_cache(tmp_path: Path) -> None:
    samples = _all_wbc(make_wbc_tree(tmp_path / "t", {c: (1, 0, 1) for c in WBC_CLASSES}))
    a = decode_samples(samples, 16, workers=1)
    b = decode_samples(samples, 24, workers=1)
    assert a.directory != b.directory and b.decoded_now == 10 and b.image_size == 24


def test_leftovers_of_a_killed_build_are_ignored(tmp_path: Path) -> None:
    samples = _all_wbc(make_wbc_tree(tmp_path / "t", {c: (1, 0, 1) for c in WBC_CLASSES}))
    first = decode_samples(samples, 16, workers=1)
    (first.directory / "manifest.json").unlink()  # as if killed before the manifest
    again = decode_samples(samples, 16, workers=1)
    assert again.decoded_now == 10 and (again.directory / "manifest.json").exists()


def test_an_undecodable_file_names_itself(tmp_path: Path) -> None:
    root = make_wbc_tree(tmp_path / "t", {c: (1, 0, 1) for c in WBC_CLASSES})
    bad = root / "WBC_100/val/data/Monocyte/va0000.png"
    bad.write_bytes(b"")
    with pytest.raises(ImageError) as info:
        decode_samples(_all_wbc(root), 16, workers=1)
    assert info.value.path == bad


def _build_in_child(root: str, queue: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    decoded = decode_samples(_all_wbc(Path(root)), 24, workers=2)
    queue.put((decoded.decoded_now, str(decoded.directory), int(np.asarray(decoded.images).sum())))


def test_two_processes_building_at_once_decode_once(tmp_path: Path) -> None:
    root = make_wbc_tree(tmp_path / "t", {c: (14, 2, 4) for c in WBC_CLASSES})
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    children = [context.Process(target=_build_in_child, args=(str(root), queue))
                for _ in range(2)]
    for child in children:
        child.start()
    results = [queue.get(timeout=120) for _ in children]
    for child in children:
        child.join(timeout=60)
        assert child.exitcode == 0
    assert sorted(r[0] for r in results) == [0, 90]
    assert results[0][1:] == results[1][1:]
