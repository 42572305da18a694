"""The counts of a tree as the report's Table 1 (WBC) and Table 2 (CAM16, pRCC), text or JSON."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from wbc.datasets import Sample, Tree, class_counts
from wbc.datasets.layout import CAM16_CLASSES, WBC_CLASSES, subset_percent

__all__ = ["format_tables", "tree_summary"]


def _split_counts(samples: Sequence[Sample], classes: tuple[str, ...]) -> dict[str, Any]:
    data, mask = class_counts(samples, len(classes))
    return {
        "data": {c: int(n) for c, n in zip(classes, data, strict=True)},
        "mask": {c: int(n) for c, n in zip(classes, mask, strict=True)},
        "total": int(data.sum()),
        "mask_total": int(mask.sum()),
    }


def tree_summary(tree: Tree) -> dict[str, Any]:
    """Everything ``wbc check`` reports, as plain JSON-able data."""
    wbc = {}
    for name, samples in tree.wbc.groups():
        entry = _split_counts(samples, WBC_CLASSES)
        percent = subset_percent(name.split("/")[0])
        entry["derived_seed"] = tree.wbc.derived.get(percent) if name.endswith("/train") and \
            percent is not None else None
        wbc[name] = entry
    return {
        "root": str(tree.root),
        "usable": tree.usable,
        "verified": tree.verified,
        "wbc": wbc,
        "cam16": {name: _split_counts(s, CAM16_CLASSES) for name, s in tree.cam16.groups()},
        "prcc": {"train": len(tree.prcc)} if tree.prcc else {},
        "problems": [
            {"severity": p.severity, "path": str(p.path), "reason": p.reason}
            for p in tree.problems
        ],
        "excluded": {
            "count": len(tree.excluded_files),
            "files": [str(p) for p in tree.excluded_files],
            "problems": [{"path": str(p.path), "reason": p.reason} for p in tree.excluded],
        },
    }


def _render(header_rows: list[list[str]], body: list[list[str]], first_width: int) -> list[str]:
    widths = [first_width] + [
        max(len(row[i]) for row in header_rows + body) for i in range(1, len(body[0]))
    ]
    lines = []
    for row in header_rows + body:
        cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:],
                                                                          strict=True)]
        lines.append("  ".join(cells).rstrip())
    return lines


def _group_headers(groups: list[tuple[str, str, list[str]]]) -> list[list[str]]:
    """Three header rows (dataset, split, data/mask) with each label on its group's first column."""
    rows: list[list[str]] = [[""], [""], ["Class"]]
    for dataset, split, subcols in groups:
        for i, sub in enumerate(subcols):
            rows[0].append(dataset if i == 0 else "")
            rows[1].append(split if i == 0 else "")
            rows[2].append(sub)
    return rows


def _table(
    title: str,
    classes: tuple[str, ...],
    columns: list[tuple[str, str, dict[str, Any], bool]],
    extra: list[tuple[str, str, int]] = (),  # type: ignore[assignment]
) -> list[str]:
    groups = [(d, s, ["data", "mask"] if with_mask else ["data"]) for d, s, _, with_mask in columns]
    groups += [(d, s, ["data"]) for d, s, _ in extra]
    body: list[list[str]] = []
    for cls in classes:
        row = [cls]
        for _, _, counts, with_mask in columns:
            row.append(str(counts["data"][cls]))
            if with_mask:
                row.append(str(counts["mask"][cls]))
        row += [""] * len(extra)
        body.append(row)
    total = ["Total#"]
    for _, _, counts, with_mask in columns:
        total.append(str(counts["total"]))
        if with_mask:
            total.append(str(counts["mask_total"]))
    total += [str(n) for _, _, n in extra]
    body.append(total)
    width = max(len(c) for c in (*classes, "Total#", "Class"))
    return [title, *_render(_group_headers(groups), body, width)]


def format_tables(summary: dict[str, Any]) -> str:
    """Table 1 and Table 2 of the report, filled with this tree's counts."""
    out: list[str] = []
    wbc = summary["wbc"]
    if wbc:
        columns = []
        for name, counts in wbc.items():
            subset, split = name.split("/")
            mark = "*" if counts["derived_seed"] is not None else ""
            with_mask = split == "train" or counts["mask_total"] > 0
            columns.append((subset + mark, "validation" if split == "val" else split, counts,
                            with_mask))
        out += _table("Table 1: WBC", WBC_CLASSES, columns)
        seeds = {c["derived_seed"] for c in wbc.values() if c["derived_seed"] is not None}
        if seeds:
            out.append(
                "* not on disk: drawn from WBC_100/train by the report's rule, floor(n * p) per "
                f"class and per masked/unmasked, seed {', '.join(map(str, sorted(seeds)))}"
            )
    cam16 = summary["cam16"]
    if cam16 or summary["prcc"]:
        out.append("")
        columns = [
            ("CAM16", "validation" if split == "val" else split, counts,
             split == "train" or counts["mask_total"] > 0)
            for split, counts in cam16.items()
        ]
        extra = [("pRCC", "train", summary["prcc"]["train"])] if summary["prcc"] else []
        if columns:
            out += _table("Table 2: CAM16 and pRCC", CAM16_CLASSES, columns, extra)
        else:
            out += ["Table 2: pRCC", f"train data  {summary['prcc']['train']}"]
    return "\n".join(out)
