"""Snapshots: named points in a dataset's label history, and what changed between two of them.

Entry points: `create_snapshot(con, dataset, name)`, `resolve_point(con, dataset, name)` (a
snapshot's point, or now), and `diff_snapshots(con, dataset, "v1", "v2")` → `LabelDiff`.
"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from core import catalog, users

NOW = "now"  # the name that means "the catalog as it is"
CHANGES = ["added", "removed", "changed"]


@dataclass(frozen=True)
class LabelDiff:
    """Labels of every annotator that differ between two points. `changes`: one row per label
    (columns of `catalog.label_changes`); `by_class` and `by_annotator`: counts with columns
    class (or annotator), added, removed, changed — a label counts under its new class, a
    removed one under its old; `images`: path, added, removed, changed per touched image."""
    dataset: str
    before: str
    after: str
    changes: pd.DataFrame
    by_class: pd.DataFrame
    by_annotator: pd.DataFrame
    images: pd.DataFrame


def create_snapshot(con, dataset: catalog.Dataset, name: str, *, author: str | None = None,
                    note: str | None = None) -> catalog.Point:
    """Name the dataset's current state; returns its point. Names are unique per dataset."""
    users.require(con, author, "snapshot")
    name = name.strip()
    if not name or name == NOW:
        raise catalog.CatalogError(f"snapshot name {name!r} is empty or reserved: choose another")
    point = catalog.current_point(con)
    catalog.insert_snapshot(con, dataset.dataset_id, name, point, author=author, note=note)
    return point


def list_snapshots(con, dataset: catalog.Dataset) -> pd.DataFrame:
    """Columns of `catalog.snapshot_table`, newest first."""
    return catalog.snapshot_table(con, dataset.dataset_id)


def resolve_point(con, dataset: catalog.Dataset, name: str | None) -> catalog.Point:
    """The point of snapshot `name`; None or 'now' is the current state."""
    if name in (None, NOW):
        return catalog.current_point(con)
    point = catalog.snapshot_point(con, dataset.dataset_id, name)
    if point is None:
        known = ", ".join(catalog.snapshot_names(con, dataset.dataset_id)) or "none yet"
        raise catalog.CatalogError(f"dataset {dataset.name!r} has no snapshot named {name!r} "
                                   f"(snapshots: {known})")
    return point


def _counts(changes: pd.DataFrame, key: str) -> pd.DataFrame:
    if not len(changes):
        return pd.DataFrame(columns=[key, *CHANGES])
    table = changes.groupby([key, "change"]).size().unstack(fill_value=0)
    table = table.reindex(columns=CHANGES, fill_value=0).reset_index()
    table.columns.name = None
    return table.sort_values(key, ignore_index=True)


def diff_snapshots(con, dataset: catalog.Dataset, before: str,
                   after: str | None = None) -> LabelDiff:
    """What changed in every annotator's labels from snapshot `before` to `after` (default now)."""
    after = after or NOW
    changes = catalog.label_changes(con, dataset.dataset_id, resolve_point(con, dataset, before),
                                    resolve_point(con, dataset, after))
    changes["class"] = changes["new_class"].fillna(changes["old_class"])
    return LabelDiff(dataset.name, before, after, changes, _counts(changes, "class"),
                     _counts(changes, "annotator"), _counts(changes, "path"))


def diff_json(diff: LabelDiff, *, max_images: int = 1000) -> dict:
    """A JSON-ready summary: totals, per class, per annotator, and up to `max_images` images."""
    totals = diff.changes["change"].value_counts().reindex(CHANGES, fill_value=0)
    return {"dataset": diff.dataset, "from": diff.before, "to": diff.after,
            "totals": {k: int(v) for k, v in totals.items()},
            "by_class": diff.by_class.to_dict("records"),
            "by_annotator": diff.by_annotator.to_dict("records"),
            "images": diff.images.head(max_images).to_dict("records"),
            "images_total": len(diff.images)}


def format_diff(diff: LabelDiff, *, max_rows: int = 20) -> str:
    summary = diff_json(diff, max_images=max_rows)
    totals = summary["totals"]
    lines = [f"{diff.dataset}: {diff.before} -> {diff.after}: {totals['added']} added, "
             f"{totals['removed']} removed, {totals['changed']} changed labels"]
    for title, table, key in (("per class", diff.by_class, "class"),
                              ("per annotator", diff.by_annotator, "annotator"),
                              ("images", diff.images, "path")):
        if len(table):
            more = f", first {max_rows} of {len(table)}; --json lists more" \
                if len(table) > max_rows else ""
            lines.append(f"  {title}{more}:")
            lines.extend(f"    {str(r[key]):<40}{r['added']:>8}{r['removed']:>8}{r['changed']:>8}"
                         for r in table.head(max_rows).to_dict("records"))
    return "\n".join(lines)
