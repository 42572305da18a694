from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from tests.treegen import write_class_folder
from wbc.cli import main
from wbc.datasets import DatasetError, scan_tree
from wbc.datasets.importer import import_imagefolder, stratified_val_split
from wbc.datasets.layout import REPORT_TABLE1, WBC_CLASSES


def _imagefolder(src: Path, counts: dict[str, int], *, masks: int = 0) -> Path:
    for label, (folder, n) in enumerate(counts.items()):
        write_class_folder(src / folder, n, label=label, suffix=".jpg", sizes=((40, 40), (52, 44)),
                           masks=src / "masks" / folder, n_masks=masks, seed=1)
    return src


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_val_split_reproduces_the_report_ratio() -> None:
    labels = [i for i, c in enumerate(WBC_CLASSES) for _ in range(sum(REPORT_TABLE1[c][::2]))]
    is_val = stratified_val_split(labels, 0.17, seed=0)
    for label, cls in enumerate(WBC_CLASSES):
        n_val = sum(v for v, lab in zip(is_val, labels, strict=True) if lab == label)
        assert n_val == REPORT_TABLE1[cls][2], cls


def test_tiny_classes_keep_one_image_on_each_side() -> None:
    is_val = stratified_val_split([0, 0, 1, 2, 2, 2], 0.17, seed=0)
    assert is_val[:2].sum() == 1 and not is_val[2] and is_val[3:].sum() == 1


def test_import_makes_a_checkable_tree_and_leaves_the_source_alone(tmp_path: Path) -> None:
    src = _imagefolder(tmp_path / "src", {"basophils": 3, "Eosinophil": 12, "LYMPHOCYTE": 10,
                                          "Monocytes": 8, "neutrophil": 30}, masks=2)
    before = _digest(src)
    root = tmp_path / "root"
    result = import_imagefolder(src, root, seed=4)
    assert _digest(src) == before
    assert result.train + result.val == 63 and result.masks == 10
    tree = scan_tree(root)
    assert tree.usable, tree.problems
    assert not tree.wbc.derived  # the subsets are written out
    train = tree.wbc.subset(100)
    assert len(train) == result.train
    assert {s.label for s in tree.wbc.val} == set(range(5))
    assert len(tree.wbc.subset(50)) == sum(n // 2 for n in (2, 10, 9, 7, 25))
    # Subset files are links to (or copies of) WBC_100's, masks included.
    for sample in tree.wbc.subset(10):
        twin = root / "WBC_100/train" / sample.path.relative_to(root / "WBC_10/train")
        assert twin.read_bytes() == sample.path.read_bytes()
    record = json.loads((root / "import.json").read_text())
    assert record["seed"] == 4 and record["val_fraction"] == 0.17


def test_import_refuses_a_non_empty_target_and_bad_sources(tmp_path: Path) -> None:
    src = _imagefolder(tmp_path / "src", {c: 4 for c in WBC_CLASSES})
    root = tmp_path / "root"
    root.mkdir()
    (root / "keep.txt").write_text("x")
    with pytest.raises(DatasetError, match="not empty"):
        import_imagefolder(src, root)
    (src / "Monocyte/img0001.jpg").write_bytes(b"")
    with pytest.raises(DatasetError, match="zero-byte") as info:
        import_imagefolder(src, tmp_path / "new")
    assert "--exclude-bad" in str(info.value)
    assert not (tmp_path / "new").exists()
    result = import_imagefolder(src, tmp_path / "new", exclude_bad=True)
    assert result.excluded == (src / "Monocyte/img0001.jpg",)
    assert result.train + result.val == 19


def test_import_cli_then_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = _imagefolder(tmp_path / "src", {c: 6 for c in WBC_CLASSES})
    assert main(["import", str(src), str(tmp_path / "root"), "--quiet"]) == 0
    assert "imported into" in capsys.readouterr().out
    assert main(["check", str(tmp_path / "root"), "--quiet"]) == 0
    assert main(["import", str(src), str(tmp_path / "root"), "--quiet"]) == 2
    assert "not empty" in capsys.readouterr().err


def test_copies_of_one_image_stay_on_one_side_of_the_split(tmp_path: Path) -> None:
    src = _imagefolder(tmp_path / "src", {c: 12 for c in WBC_CLASSES})
    for cls in WBC_CLASSES:  # six pairs of copies in each class, under other names
        for i in range(6):
            shutil.copyfile(src / cls / f"img{i:04d}.jpg", src / cls / f"copy{i:04d}.jpg")
    for seed in range(4):
        root = tmp_path / f"root{seed}"
        result = import_imagefolder(src, root, seed=seed)
        assert result.train + result.val == 90
        sides: dict[str, set[str]] = {}
        for split in ("train", "val"):
            for path in (root / "WBC_100" / split / "data").rglob("*.jpg"):
                sides.setdefault(hashlib.sha256(path.read_bytes()).hexdigest(), set()).add(split)
        assert all(len(s) == 1 for s in sides.values()), seed
        assert scan_tree(root).usable


def test_val_split_keeps_groups_whole_and_each_side_filled() -> None:
    labels = [0] * 10
    groups = [0, 0, 0, 0, 0, 0, 1, 1, 2, 3]  # floor(10 * .17) = 1 image: one singleton
    is_val = stratified_val_split(labels, 0.17, seed=0, groups=groups)
    assert is_val.sum() == 1 and not is_val[:8].any()
    bigger = stratified_val_split([0] * 8, 0.17, seed=0, groups=[0] * 4 + [1] * 4)
    assert bigger.sum() == 4 and len(set(bigger[:4])) == len(set(bigger[4:])) == 1
    plain = stratified_val_split([0] * 10 + [1] * 7, 0.3, seed=3)
    assert (plain == stratified_val_split([0] * 10 + [1] * 7, 0.3, seed=3,
                                          groups=list(range(17)))).all()


def test_import_refuses_the_same_bytes_under_two_classes(tmp_path: Path) -> None:
    src = _imagefolder(tmp_path / "src", {c: 4 for c in WBC_CLASSES})
    copy = src / "Monocyte/from_basophil.jpg"
    shutil.copyfile(src / "Basophil/img0002.jpg", copy)
    with pytest.raises(DatasetError, match="the same image is under Basophil, Monocyte"):
        import_imagefolder(src, tmp_path / "root")
    result = import_imagefolder(src, tmp_path / "root", exclude_bad=True)
    assert set(result.excluded) == {src / "Basophil/img0002.jpg", copy}
