from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import socket
import time
from pathlib import Path

import numpy as np
import pytest

from tests.treegen import cell_image, make_wbc_tree, write_image, write_png_bomb
from wbc.cli import main
from wbc.datasets import scan_tree
from wbc.datasets.cache import decode_samples
from wbc.datasets.imageio import MAX_PIXELS_ENV, ImageError
from wbc.datasets.layout import WBC_CLASSES


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


def test_other_bytes_of_the_same_size_and_mtime_rebuild(tmp_path: Path) -> None:
    root = make_wbc_tree(tmp_path / "t", {c: (2, 0, 1) for c in WBC_CLASSES}, suffix=".bmp")
    before = decode_samples(_all_wbc(root), 16, workers=1)
    target = root / "WBC_100/train/data/Monocyte/tr0001.bmp"
    stat = target.stat()
    write_image(target, np.zeros((40, 40, 3), np.uint8))  # a BMP of one size has one length
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert (target.stat().st_size, target.stat().st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)
    after = decode_samples(_all_wbc(root), 16, workers=1)
    assert after.fingerprint != before.fingerprint and after.decoded_now == 15
    assert int(np.asarray(after.images[after.row_of[str(target)]]).max()) == 0


def test_a_fresh_copy_of_the_same_bytes_keeps_its_cache(tmp_path: Path) -> None:
    # As a node with its own copy of the data at the same path sees it: other inodes and change
    # times, other mtimes, the same bytes. The fingerprint is the driver's, nothing is decoded.
    root = make_wbc_tree(tmp_path / "t", {c: (2, 1, 1) for c in WBC_CLASSES})
    first = decode_samples(_all_wbc(root), 16, workers=1)
    shutil.copytree(root, tmp_path / "copy", copy_function=shutil.copyfile)
    shutil.rmtree(root)
    (tmp_path / "copy").rename(root)
    again = decode_samples(_all_wbc(root), 16, workers=1)
    assert again.fingerprint == first.fingerprint and again.decoded_now == 0


def test_the_same_bytes_elsewhere_is_another_cache(tmp_path: Path) -> None:
    a = make_wbc_tree(tmp_path / "a", {c: (1, 0, 1) for c in WBC_CLASSES})
    b = tmp_path / "b"
    shutil.copytree(a, b)
    first, second = (decode_samples(_all_wbc(r), 16, workers=1) for r in (a, b))
    assert second.fingerprint == first.fingerprint  # the same data, moved: the same identity
    assert second.directory != first.directory and second.decoded_now == 10
    assert sorted(set(second.rows(_all_wbc(b)).tolist())) == list(range(10))  # its own paths


def _damage_delete(directory: Path) -> None:
    (directory / "images.npy").unlink()


def _damage_truncate(directory: Path) -> None:
    path = directory / "images.npy"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _damage_zero(directory: Path) -> None:
    path = directory / "images.npy"  # the header stays: only the pixels are zeroed
    data = path.read_bytes()
    path.write_bytes(data[:128] + bytes(len(data) - 128))


def _damage_masks(directory: Path) -> None:
    (directory / "masks.npy").unlink()


def _damage_manifest(directory: Path) -> None:
    path = directory / "manifest.json"
    path.write_text(path.read_text()[:40])


DAMAGE = {"deleted": (_damage_delete, "images.npy is missing"),
          "truncated": (_damage_truncate, "images.npy is"),
          "zeroed": (_damage_zero, "images.npy differs from what was written"),
          "masks-deleted": (_damage_masks, "masks.npy is missing"),
          "manifest-cut": (_damage_manifest, "unreadable")}


@pytest.mark.parametrize("known", [False, True], ids=["scanned", "fingerprint-given"])
@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_a_damaged_cache_is_said_and_rebuilt(tmp_path: Path, case: str, known: bool) -> None:
    root = make_wbc_tree(tmp_path / "t", {c: (2, 1, 1) for c in WBC_CLASSES})
    samples = _all_wbc(root)
    built = decode_samples(samples, 16, workers=1)
    pixels = np.array(built.images)
    damage, reason = DAMAGE[case]
    damage(built.directory)
    said: list[str] = []
    again = decode_samples(samples, 16, workers=1, progress=said.append,
                           fingerprint=built.fingerprint if known else None)
    assert again.decoded_now == 15 and again.directory == built.directory
    np.testing.assert_array_equal(np.asarray(again.images), pixels)
    assert len(said) == 1 and reason in said[0] and "rebuilding it" in said[0], said
    assert decode_samples(samples, 16, workers=1).decoded_now == 0


def test_a_full_check_finds_one_damaged_chunk_among_many(tmp_path: Path) -> None:
    # 12 images at 512 px make a 9.4 MB array: 9 chunks of 1 MiB, more than a sample checks.
    root = make_wbc_tree(tmp_path / "t", {c: (2, 0, 0) for c in WBC_CLASSES[:3]} |
                         {c: (3, 0, 0) for c in WBC_CLASSES[3:]})
    samples = scan_tree(root, verify=False).wbc.subset(100)
    built = decode_samples(samples, 512, workers=1)
    path = built.directory / "images.npy"
    assert path.stat().st_size > 9 * (1 << 20)
    with path.open("r+b") as handle:
        handle.seek(4 * (1 << 20) + 100)
        handle.write(b"\x00" * 64)
    said: list[str] = []
    again = decode_samples(samples, 512, workers=1, progress=said.append, verify="full")
    assert again.decoded_now == 12 and "at byte 4194304" in said[0]


def test_staging_folders_of_killed_builds_are_swept(tmp_path: Path) -> None:
    samples = _all_wbc(make_wbc_tree(tmp_path / "t", {c: (1, 0, 1) for c in WBC_CLASSES}))
    cache = tmp_path / "cache"
    first = decode_samples(samples, 16, workers=1, cache_dir=cache)
    (first.directory / "manifest.json").unlink()  # killed before the end: built again below
    host = socket.gethostname()
    dead = cache / f"CAM16-16px-0123456789abcdef0123.building-{host}-99999999"
    own_name = cache / f"{first.directory.name}.building-{host}-1"  # pid 1 lives, holds no lock
    alive = cache / f"CAM16-32px-0123456789abcdef0123.building-{host}-{os.getpid()}"
    elsewhere = cache / "CAM16-64px-0123456789abcdef0123.building-otherhost-1"
    long_ago = cache / "CAM16-64px-0123456789abcdef0124.building-otherhost-2"
    for folder in (dead, own_name, alive, elsewhere, long_ago):
        folder.mkdir()
        (folder / "images.npy").write_bytes(b"left by a killed build")
    day_and_more = time.time() - 25 * 3600
    os.utime(long_ago, (day_and_more, day_and_more))
    # The build sweeps its own name's leftovers (no live process can own them while this one
    # holds the lock), this host's whose process is gone, and another host's (a shared cache:
    # its pids mean nothing here) only after a day; a live process's stays.
    assert decode_samples(samples, 16, workers=1, cache_dir=cache).decoded_now == 10
    assert not dead.exists() and not own_name.exists() and alive.exists()
    assert elsewhere.exists() and not long_ago.exists()


def test_decode_cli_refuses_a_bomb_without_a_traceback(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    root = make_wbc_tree(tmp_path / "t", {c: (2, 0, 1) for c in WBC_CLASSES})
    bomb = write_png_bomb(root / "WBC_100/train/data/Monocyte/bomb.png")
    assert main(["decode", str(root), "--quiet", "--image-size", "16"]) == 2
    err = capsys.readouterr().err
    assert f"error: {bomb}: 30000x30000 = 900,000,000 pixels declared" in err
    assert "Traceback" not in err
    assert main(["decode", str(root), "--quiet", "--image-size", "16", "--exclude-bad"]) == 0
    assert "WBC: 15 images" in capsys.readouterr().out


def test_the_cli_pixel_limit_reaches_the_decoding_workers(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(MAX_PIXELS_ENV, raising=False)
    root = make_wbc_tree(tmp_path / "t", {c: (30, 0, 1) for c in WBC_CLASSES})
    write_image(root / "WBC_100/train/data/Monocyte/big.png", cell_image((60, 50), seed=1)[0])
    # 155 files: more than one worker process's share, so the limit must travel to them.
    assert main(["check", str(root), "--quiet", "--workers", "2", "--json",
                 "--max-image-pixels", "50x50"]) == 1
    reasons = [p["reason"] for p in json.loads(capsys.readouterr().out)["problems"]]
    assert len(reasons) == 1 and "60x50 = 3,000 pixels" in reasons[0]
    assert "limit of 2,500" in reasons[0]
    assert MAX_PIXELS_ENV not in os.environ  # the command's limit ends with it
