"""Review queues: which images the fix page walks through, in what order and why, and where each
reviewer stands in each queue. Entry points: `queue_choices(con, dataset_id)` to pick one,
`queue_images(con, spec)` for its images, `load_position` / `save_position`.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from urllib.parse import parse_qsl, urlencode

import numpy as np
import pandas as pd

from core import catalog, users

KINDS = ("all", "stored", "flagged", "model")
_FILTERS = ("split", "class_id", "annotator", "source")


@dataclass(frozen=True)
class QueueSpec:
    """One queue of a dataset: 'all' images (optionally filtered), a 'stored' queue (such as the
    Agreement page's disagreement list), 'flagged' annotations, or 'model' labels, least
    confident first."""
    dataset_id: int
    kind: str = "all"
    queue_id: int | None = None        # the stored queue ('stored')
    split: str | None = None           # filters of 'all'
    class_id: int | None = None        # a resolved class or object class
    annotator: str | None = None       # a current label by this annotator (name)
    source: str | None = None          # a current label from 'import', 'edit', 'review', 'model'

    @property
    def key(self) -> str:
        """A stable text form, e.g. '2/all?split=train&class_id=1', '1/stored/7', '2/flagged':
        what positions are stored under and the page's `queue` query parameter holds."""
        if self.kind == "stored":
            return f"{self.dataset_id}/stored/{self.queue_id}"
        filters = {name: getattr(self, name) for name in _FILTERS
                   if getattr(self, name) is not None}
        query = f"?{urlencode(filters)}" if filters else ""
        return f"{self.dataset_id}/{self.kind}{query}"


def parse_queue_key(key: str) -> QueueSpec:
    """The QueueSpec whose `key` is `key`; ValueError naming the key when it is not one."""
    try:
        path, _, query = key.partition("?")
        parts = path.split("/")
        dataset_id, kind = int(parts[0]), parts[1]
        if kind not in KINDS or (kind == "stored") != (len(parts) == 3) or len(parts) > 3:
            raise ValueError(kind)
        filters = dict(parse_qsl(query, strict_parsing=bool(query)))
        if set(filters) - set(_FILTERS) or (filters and kind != "all"):
            raise ValueError(query)
        if "class_id" in filters:
            filters["class_id"] = int(filters["class_id"])
        queue_id = int(parts[2]) if kind == "stored" else None
        return QueueSpec(dataset_id, kind, queue_id, **filters)
    except (ValueError, IndexError) as err:
        raise ValueError(f"not a queue: {key!r} (e.g. '1/all', '1/stored/3', '1/flagged')") from err


def queue_images(con, spec: QueueSpec) -> pd.DataFrame:
    """Columns: image_id, reason — the queue's images in review order."""
    if spec.kind == "stored":
        return catalog.queue_items(con, spec.queue_id)[["image_id", "reason"]]
    if spec.kind == "flagged":
        return catalog.flagged_images(con, spec.dataset_id)
    if spec.kind == "model":
        return catalog.model_label_images(con, spec.dataset_id)[["image_id", "reason"]]
    filters = {f.name: getattr(spec, f.name) for f in fields(spec) if f.name in _FILTERS}
    return catalog.filtered_image_ids(con, spec.dataset_id, **filters).assign(reason="")


def queue_choices(con, dataset_id: int) -> list[tuple[str, QueueSpec]]:
    """(title, spec) of the queues worth offering for a dataset: all images, each stored queue,
    flagged annotations and model labels when there are any."""
    facts = catalog.label_event_facts(con, dataset_id)
    choices = [("All images", QueueSpec(dataset_id))]
    for q in catalog.queue_table(con, dataset_id).itertuples():
        by = f", by {q.created_by}" if q.created_by else ""
        choices.append((f"{q.name} ({q.images:,} images{by}, {q.created_at:%Y-%m-%d %H:%M})",
                        QueueSpec(dataset_id, "stored", int(q.queue_id))))
    if facts["flagged"]:
        choices.append(("Flagged annotations", QueueSpec(dataset_id, "flagged")))
    if facts["model"]:
        choices.append(("Model labels, least confident first", QueueSpec(dataset_id, "model")))
    return choices


def locate(image_ids: np.ndarray, *, image_id: int | None, position: int) -> int:
    """Where to stand in a queue: at `image_id` when the queue holds it, else at `position`
    clamped to the queue (0 for an empty queue)."""
    if image_id is not None:
        hits = np.flatnonzero(image_ids == image_id)
        if len(hits):
            return int(hits[0])
    return int(min(max(position, 0), max(len(image_ids) - 1, 0)))


def create_queue(con, dataset_id: int, name: str, kind: str, items: pd.DataFrame, *,
                 created_by: str | None) -> int:
    """A new review queue (`items` columns: image_id, reason, in review order); a lead's act."""
    users.require(con, created_by, "review")
    return catalog.create_queue(con, dataset_id, name, kind, items, created_by=created_by)


def load_position(con, user: str, spec: QueueSpec) -> tuple[int, int | None]:
    """(position, image_id) where `user` last stood in the queue; (0, None) the first time."""
    return catalog.review_position(con, user, spec.key) or (0, None)


def save_position(con, user: str, spec: QueueSpec, position: int, image_id: int | None) -> None:
    catalog.set_review_position(con, user, spec.key, position, image_id)


def duplicate_group_items(groups: pd.DataFrame, *, limit: int | None = None) -> pd.DataFrame:
    """Review items (image_id, reason) for the duplicate clusters in `groups` (columns group,
    size, image_ids, splits — as core.duplicates reports them, largest first): the members of
    each cluster next to each other, so a reviewer sees a cluster's images one after another.
    `limit`: at most this many images in all (whole clusters only, unless the first is bigger)."""
    rows, total = [], 0
    count = len(groups)
    for number, group in enumerate(groups.itertuples(index=False), start=1):
        members = list(group.image_ids)
        if limit is not None and total and total + len(members) > limit:
            break
        members = members[:limit - total] if limit is not None else members
        splits = ", ".join(sorted({str(s) for s in group.splits}))
        reason = f"cluster {number} of {count}: {group.size} images ({splits})"
        rows += [(int(image_id), reason) for image_id in members]
        total += len(members)
    return pd.DataFrame(rows, columns=["image_id", "reason"]).astype({"image_id": "int64"})
