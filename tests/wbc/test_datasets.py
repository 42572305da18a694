from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tests.treegen import (
    cell_image,
    make_cam16_prcc,
    make_wbc_tree,
    write_class_folder,
    write_image,
    write_jpeg_declaring,
    write_mask,
    write_png_bomb,
)
from wbc.cli import main
from wbc.datasets import DatasetError, scan_tree
from wbc.datasets.layout import WBC_CLASSES
from wbc.datasets.tables import format_tables, tree_summary


def _real_like_tree(root: Path) -> Path:
    """The course's shape: BMP images of two sizes, three-level PNG masks, 'validation',
    class folders spelled in other ways, a small subset on disk that lacks Basophils."""
    counts = {c: (5, 2, 2) for c in WBC_CLASSES}
    make_wbc_tree(root, counts, suffix=".bmp", sizes=((48, 48), (64, 56)),
                  val_name="validation",
                  class_folder={"Eosinophil": "Eosinophils", "Lymphocyte": "LYMPHOCYTE"})
    full = root / "WBC_100/train"
    for label, cls in enumerate(WBC_CLASSES):
        if cls == "Basophil":
            continue
        folder = {"Eosinophil": "Eosinophils", "Lymphocyte": "LYMPHOCYTE"}.get(cls, cls)
        src = full / "data" / folder / "tr0000.bmp"
        dst = root / "WBC_10/train/data" / folder / src.name
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.link(src, dst)
        if label == 4:
            m = root / "WBC_10/train/mask" / folder / "tr0000.png"
            m.parent.mkdir(parents=True, exist_ok=True)
            os.link(full / "mask" / folder / "tr0000.png", m)
    make_cam16_prcc(root)
    return root


def test_real_like_tree_counts(tmp_path: Path) -> None:
    tree = scan_tree(_real_like_tree(tmp_path / "t"))
    assert tree.usable, tree.problems
    summary = tree_summary(tree)
    assert summary["wbc"]["WBC_100/train"]["total"] == 25
    assert summary["wbc"]["WBC_100/train"]["mask_total"] == 10
    assert summary["wbc"]["WBC_100/val"]["total"] == 10
    assert summary["wbc"]["WBC_100/train"]["data"]["Eosinophil"] == 5
    on_disk = summary["wbc"]["WBC_10/train"]
    assert on_disk["derived_seed"] is None
    assert on_disk["data"] == {"Basophil": 0, "Eosinophil": 1, "Lymphocyte": 1, "Monocyte": 1,
                               "Neutrophil": 1}
    assert on_disk["mask"]["Neutrophil"] == 1
    # WBC_50 and WBC_1 are not on disk: derived by the floor rule (floor(5 * .5) = 2 per class),
    # which keeps at least one image of every class (floor(5 * .01) = 0 becomes 1).
    assert summary["wbc"]["WBC_50/train"]["derived_seed"] == 0
    assert summary["wbc"]["WBC_50/train"]["total"] == 10
    assert summary["wbc"]["WBC_1/train"]["total"] == 5
    assert set(summary["wbc"]["WBC_1/train"]["data"].values()) == {1}
    assert summary["cam16"]["train"]["total"] == 8
    assert summary["cam16"]["train"]["mask_total"] == 2
    assert summary["cam16"]["test"]["total"] == 4
    assert summary["prcc"] == {"train": 5}
    assert not tree.warnings
    text = format_tables(summary)
    assert "Table 1" in text and "Table 2" in text and "WBC_50*" in text


def test_derived_subsets_keep_masks_with_their_images(tmp_path: Path) -> None:
    make_wbc_tree(tmp_path, {c: (40, 10, 2) for c in WBC_CLASSES})
    tree = scan_tree(tmp_path, verify=False, subset_seed=5)
    half = tree.wbc.subset(50)
    assert len(half) == 100 and sum(s.mask is not None for s in half) == 25
    for sample in half:
        if sample.mask is not None:
            assert sample.mask.stem == sample.path.stem
    again = scan_tree(tmp_path, verify=False, subset_seed=5).wbc.subset(50)
    other = scan_tree(tmp_path, verify=False, subset_seed=6).wbc.subset(50)
    assert [s.path for s in again] == [s.path for s in half]
    assert [s.path for s in other] != [s.path for s in half]


def test_not_a_folder_is_a_dataset_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no such folder"):
        scan_tree(tmp_path / "missing")


# The bad-input corpus: each case damages a good tree one way and names the file and reason.
def _zero_byte(root: Path) -> Path:
    path = root / "WBC_100/train/data/Monocyte/tr0001.png"
    path.write_bytes(b"")
    return path


def _truncated(root: Path) -> Path:
    path = write_image(root / "WBC_100/train/data/Monocyte/big.jpg",
                       cell_image((96, 96), seed=9)[0])
    path.write_bytes(path.read_bytes()[:900])
    return path


def _not_an_image(root: Path) -> Path:
    path = root / "WBC_100/val/data/Lymphocyte/notes.png"
    path.write_text("this is a text file with an image name")
    return path


def _unreadable(root: Path) -> Path:
    path = root / "WBC_100/train/data/Basophil/link.bmp"
    path.symlink_to(root / "elsewhere/missing.bmp")
    return path


def _mask_without_image(root: Path) -> Path:
    return write_mask(root / "WBC_100/train/mask/Neutrophil/orphan.png",
                      np.zeros((40, 40), np.uint8))


def _mask_wrong_size(root: Path) -> Path:
    return write_mask(root / "WBC_100/train/mask/Neutrophil/tr0003.png",
                      np.zeros((20, 30), np.uint8))


def _unknown_class(root: Path) -> Path:
    folder = root / "WBC_100/train/data/Platelet"
    write_class_folder(folder, 2, label=0)
    return folder


def _empty_class(root: Path) -> Path:
    folder = root / "WBC_100/val/data/Basophil"
    for path in folder.iterdir():
        path.unlink()
    return folder


def _png_bomb(root: Path) -> Path:
    return write_png_bomb(root / "WBC_100/train/data/Monocyte/bomb.png")


def _jpeg_bomb(root: Path) -> Path:
    return write_jpeg_declaring(root / "WBC_100/val/data/Eosinophil/huge.jpg", 60_000, 60_000)


def _blank_mask(root: Path) -> Path:
    return write_mask(root / "WBC_100/train/mask/Neutrophil/tr0000.png",
                      np.zeros((40, 40), np.uint8))


def _empty_subset(root: Path) -> Path:
    (root / "WBC_10/train/data").mkdir(parents=True)
    return root / "WBC_10/train"


def _val_image_in_train(root: Path) -> Path:
    copy = root / "WBC_100/train/data/Lymphocyte/copy.png"
    shutil.copyfile(root / "WBC_100/val/data/Lymphocyte/va0001.png", copy)
    return copy


def _same_bytes_two_classes(root: Path) -> Path:
    original = root / "WBC_100/train/data/Basophil/tr0003.png"
    shutil.copyfile(original, root / "WBC_100/train/data/Monocyte/tr9999.png")
    return original


def _missing_split(root: Path) -> Path:
    folder = root / "WBC_100/val"
    for path in sorted(folder.rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    folder.rmdir()
    return folder


BAD_CASES: dict[str, tuple[Callable[[Path], Path], str, bool, bool]] = {
    # name: (damage, reason text, fatal, excludable)
    "zero-byte": (_zero_byte, "zero-byte file", True, True),
    "truncated": (_truncated, "truncated image data", True, True),
    "not-an-image": (_not_an_image, "not an image", True, True),
    "unreadable": (_unreadable, "unreadable", True, True),
    "mask-without-image": (_mask_without_image, "mask without image", False, False),
    "mask-size": (_mask_wrong_size, "mask is 30x20 but its image", True, True),
    "unknown-class": (_unknown_class, "unknown class folder 'Platelet'", True, True),
    "empty-class": (_empty_class, "empty class: no images of Basophil", True, False),
    "missing-split": (_missing_split, "missing split WBC_100/val", True, False),
    "png-bomb": (_png_bomb, "30000x30000 = 900,000,000 pixels declared", True, True),
    "jpeg-bomb": (_jpeg_bomb, "60000x60000 = 3,600,000,000 pixels declared", True, True),
    "blank-mask": (_blank_mask, "blank mask: every pixel is background", True, True),
    "empty-subset": (_empty_subset, "WBC_10/train holds no images", True, False),
    "val-image-in-train": (_val_image_in_train, "the same image as", True, True),
    "two-classes": (_same_bytes_two_classes, "the same image is under Basophil, Monocyte", True,
                    True),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_input_is_named_with_its_reason(
    tmp_path: Path, case: str, capsys: pytest.CaptureFixture[str]
) -> None:
    damage, reason, fatal, excludable = BAD_CASES[case]
    root = make_wbc_tree(tmp_path / "tree")
    bad = damage(root)
    code = main(["check", str(root), "--quiet"])
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if str(bad) in line]
    assert len(lines) == 1, err
    assert reason in lines[0]
    assert lines[0].startswith("error:" if fatal else "warning:")
    assert code == (1 if fatal else 0)
    assert "Traceback" not in out + err
    if excludable:
        code = main(["check", str(root), "--quiet", "--exclude-bad", "--json"])
        out, _ = capsys.readouterr()
        summary = json.loads(out)
        assert code == 0, summary["problems"]
        assert summary["usable"]
        assert summary["excluded"]["count"] >= 1
        assert any(str(bad) == p["path"] for p in summary["excluded"]["problems"])


def test_excluded_image_takes_its_mask_and_leaves_counts_consistent(tmp_path: Path) -> None:
    root = make_wbc_tree(tmp_path)
    bad = root / "WBC_100/train/data/Neutrophil/tr0000.png"  # has a mask
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    tree = scan_tree(root, exclude_bad=True)
    assert tree.usable
    assert set(tree.excluded_files) == {bad, root / "WBC_100/train/mask/Neutrophil/tr0000.png"}
    counts = tree_summary(tree)["wbc"]["WBC_100/train"]
    assert counts["data"]["Neutrophil"] == 5 and counts["mask"]["Neutrophil"] == 1


def test_excluding_every_image_of_a_class_is_still_an_error(tmp_path: Path) -> None:
    root = make_wbc_tree(tmp_path, {c: (2, 0, 1) for c in WBC_CLASSES})
    (root / "WBC_100/val/data/Monocyte/va0000.png").write_bytes(b"")
    tree = scan_tree(root, exclude_bad=True)
    assert not tree.usable
    assert any("no usable images of Monocyte" in p.reason for p in tree.errors)


def test_a_bad_mask_is_excluded_alone(tmp_path: Path) -> None:
    root = make_wbc_tree(tmp_path)
    mask = root / "WBC_100/train/mask/Basophil/tr0001.png"
    mask.write_bytes(b"")
    tree = scan_tree(root, exclude_bad=True)
    assert tree.usable and tree.excluded_files == (mask,)
    sample = next(s for s in tree.wbc.subset(100) if s.path.stem == "tr0001"
                  and s.label == 0)
    assert sample.mask is None


def test_check_cli_in_a_real_process_prints_no_traceback(tmp_path: Path) -> None:
    root = make_wbc_tree(tmp_path / "tree")
    _truncated(root)
    run = subprocess.run([sys.executable, "-m", "wbc", "check", str(root)],
                         capture_output=True, text=True)
    assert run.returncode == 1
    assert "Traceback" not in run.stderr
    assert "truncated image data" in run.stderr
    assert "Table 1: WBC" in run.stdout and "--exclude-bad" in run.stdout
    missing = subprocess.run([sys.executable, "-m", "wbc", "check", str(tmp_path / "nope")],
                             capture_output=True, text=True)
    assert missing.returncode == 2
    assert "no such folder" in missing.stderr and "Traceback" not in missing.stderr


def test_an_empty_subset_of_empty_class_folders_is_an_error(tmp_path: Path) -> None:
    root = make_wbc_tree(tmp_path)
    for cls in WBC_CLASSES:
        (root / "WBC_1/train/data" / cls).mkdir(parents=True)
    tree = scan_tree(root, verify=False)
    assert not tree.usable
    assert [p.reason for p in tree.errors if p.path == root / "WBC_1/train"] == [
        "WBC_1/train holds no images; a run on it would train on nothing: add its images, or "
        "remove the folder to have it drawn from WBC_100/train"]


def test_exclusions_that_empty_a_subset_are_an_error(tmp_path: Path) -> None:
    root = make_wbc_tree(tmp_path)
    (root / "WBC_1/train/data/Monocyte").mkdir(parents=True)
    (root / "WBC_1/train/data/Monocyte/only.png").write_bytes(b"")
    tree = scan_tree(root, exclude_bad=True)
    assert not tree.usable and tree.wbc.subset(1) == ()
    assert any("no usable images left in WBC_1/train" in p.reason for p in tree.errors)


def test_a_leak_through_a_subset_and_every_copy_is_excluded(tmp_path: Path) -> None:
    root = make_wbc_tree(tmp_path)
    val = root / "WBC_100/val/data/Monocyte/va0000.png"
    in_train = root / "WBC_100/train/data/Monocyte/leak.png"
    in_subset = root / "WBC_10/train/data/Monocyte/leak.png"
    in_subset.parent.mkdir(parents=True)
    shutil.copy2(val, in_train)
    os.link(in_train, in_subset)  # a subset file is a hard link: the same image, unread
    (root / "WBC_10/train/data/Basophil").mkdir()
    shutil.copy2(root / "WBC_100/train/data/Basophil/tr0000.png",
                 root / "WBC_10/train/data/Basophil/tr0000.png")  # not a leak: train in train
    tree = scan_tree(root)
    leaks = [p for p in tree.errors if "the same image as" in p.reason]
    assert len(leaks) == 1 and str(val) in leaks[0].reason
    assert set(leaks[0].excludes) == {in_train, in_subset}
    excluded = scan_tree(root, exclude_bad=True)
    assert excluded.usable and set(excluded.excluded_files) == {in_train, in_subset}
    assert val in {s.path for s in excluded.wbc.val}


def test_subsets_on_disk_are_no_duplicates(tmp_path: Path) -> None:
    root = _real_like_tree(tmp_path)
    for cls in ("Monocyte", "Neutrophil"):
        src = root / "WBC_100/train/data" / cls / "tr0001.bmp"
        shutil.copy2(src, root / "WBC_10/train/data" / cls / "tr0001.bmp")  # a copy, not a link
    tree = scan_tree(root)
    assert tree.usable, tree.errors


def _problems_as(root: Path, uid: int | None) -> list[tuple[str, str, str]]:
    """``scan_tree(root)``'s problems, seen by ``uid`` (root reads any folder, so the scan of a
    chmod 000 folder runs in a forked child that drops to that user first)."""
    def scan() -> list[tuple[str, str, str]]:
        return [(str(p.path), p.reason, p.severity) for p in scan_tree(root, verify=False).problems]

    if uid is None:
        return scan()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop to ``uid``, scan, send the problems back
        code = 1
        try:
            os.close(read)
            with os.fdopen(write, "wb") as out:
                try:
                    os.setgid(uid)
                    os.setuid(uid)
                except OSError:
                    pickle.dump(None, out)
                else:
                    pickle.dump(scan(), out)
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read, "rb") as incoming:
        data = incoming.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    problems = pickle.loads(data)
    if problems is None:
        pytest.skip("running as root, which reads a chmod 000 folder, and cannot become nobody")
    return problems


def test_an_unreadable_class_folder_is_an_error_not_an_empty_class() -> None:
    # Under a world-readable temporary folder: as root the scan runs as nobody (65534).
    base = Path(tempfile.mkdtemp(prefix="wbc-unreadable-"))
    try:
        base.chmod(0o755)
        root = make_wbc_tree(base / "tree")
        write_class_folder(root / "WBC_10/train/data/Monocyte", 1, label=3)
        write_class_folder(root / "WBC_50/train/data/Monocyte", 1, label=3)
        locked = [root / "WBC_100/val/data/Basophil", root / "WBC_10/train/data/Monocyte",
                  root / "WBC_50/train/data"]
        for folder in locked:
            folder.chmod(0)
        try:
            problems = _problems_as(root, 65534 if os.geteuid() == 0 else None)
        finally:
            for folder in locked:
                folder.chmod(0o755)
        for folder in locked:
            said = [(reason, severity) for path, reason, severity in problems
                    if path == str(folder)]
            assert said == [("unreadable folder (Permission denied); its images cannot be "
                             "counted or used: fix its permissions", "error")], problems
        assert not any("empty class" in reason for _, reason, _ in problems), problems
    finally:
        shutil.rmtree(base)
