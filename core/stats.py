"""Dataset statistics for the `stats` command and the pages: images, unreadable files, classes,
and label counts per class x split x annotator.

Entry point: `dataset_stats(con, dataset)` → a JSON-ready dict; `format_stats` prints it.
"""
from __future__ import annotations

from core import catalog
from core.balance import imbalance


def dataset_stats(con, dataset: catalog.Dataset) -> dict:
    """Keys: images, unreadable, labelled, unlabelled, annotators, events, classes (name →
    {labels: resolved whole-image labels, boxes: resolved boxes, polygons, flagged}),
    imbalance, by_split_annotator (rows of class, split, annotator, kind, labels)."""
    overview = catalog.dataset_overview(con, dataset.dataset_id)
    resolved = catalog.resolved_counts(con, dataset.dataset_id)
    names = catalog.class_table(con, dataset.dataset_id)["name"]
    classes = {}
    for name in names:
        rows = resolved[resolved["class"] == name]
        total = rows.groupby("kind")["count"].sum()
        classes[name] = {"labels": int(total.get("class", 0)), "boxes": int(total.get("box", 0)),
                         "polygons": int(total.get("polygon", 0)),
                         "flagged": int(rows["flagged"].sum())}
    detail = catalog.label_counts(con, dataset.dataset_id)
    per_class = resolved.groupby("class")["count"].sum().reindex(names, fill_value=0)
    shape = imbalance(per_class)
    return {**overview, "classes": classes,
            "imbalance": {"ratio": shape.ratio, "effective_classes": shape.effective_classes},
            "by_split_annotator": detail[["class", "split", "annotator", "kind", "labels",
                                          "flagged"]].to_dict("records")}


def _count(n: int, noun: str) -> str:
    """'1 class', '2 classes', '1,204 images'."""
    return f"{n:,} {noun if n == 1 else noun + ('es' if noun.endswith('s') else 's')}"


def format_stats(name: str, item: dict) -> str:
    lines = [f"{name}: {_count(item['images'], 'image')} ({item['unreadable']:,} unreadable), "
             f"{item['labelled']:,} labelled, {_count(len(item['classes']), 'class')}, "
             f"{_count(item['annotators'], 'annotator')}, {_count(item['events'], 'label event')}",
             f"  {'class':<16}{'labels':>9}{'boxes':>9}{'polygons':>9}{'flagged':>9}"]
    for cls, counts in item["classes"].items():
        lines.append(f"  {cls:<16}{counts['labels']:>9}{counts['boxes']:>9}"
                     f"{counts['polygons']:>9}{counts['flagged']:>9}")
    rows = item["by_split_annotator"]
    if rows:
        more = ", first 30; --json lists all" if len(rows) > 30 else ""
        lines.append(f"  per class x split x annotator ({len(rows)} rows{more}):")
        lines.append(f"    {'class':<14} {'split':<8} {'annotator':<28} {'kind':<8}{'labels':>8}")
        for row in rows[:30]:
            split = row["split"] if isinstance(row["split"], str) else "-"  # none (NaN or None)
            lines.append(f"    {row['class']:<14} {split:<8} {row['annotator']:<28}"
                         f" {row['kind']:<8}{row['labels']:>8}")
    return "\n".join(lines)
