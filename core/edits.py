"""Edits on one image: what the fix page shows of it, what a save appends, undo, revert, history.

Entry points: `load_view(con, image_id, user=...)` reads an image's labels in one go;
`plan_shape_edits` and `plan_class_edit` turn what the user left on the canvas into changes;
`save_changes(con, view, plan, based_on=...)` appends them in the user's layer, or raises
`StaleView` when someone changed the image after the view was read; `plan_undo`, `plan_revert`
and `history_table`. Nothing is overwritten: every change is a new label event.
"""
from __future__ import annotations

import json
import math
import time
from collections import Counter
from dataclasses import dataclass
from functools import cached_property

import duckdb
import numpy as np
import pandas as pd

from core import catalog, users
from core.drawing import Shape, polygon_shape
from core.labels import _fit_box, _fit_polygon

RESOLVED_BY = ("review", "given", "consensus", "model")  # tier 0..3, as the resolved_* views


@dataclass(frozen=True)
class Label:
    """The current state of one object (a whole-image class, a box or a polygon) in one layer."""
    event_id: int
    object_id: int
    annotator_id: int
    annotator: str
    annotator_kind: str             # 'import', 'human', 'model'
    kind: str                       # 'class', 'box', 'polygon'
    class_id: int | None
    class_name: str | None
    x: float | None
    y: float | None
    w: float | None
    h: float | None
    points: tuple[tuple[float, float], ...] | None
    source: str                     # 'import', 'edit', 'review', 'model'
    score: float | None
    flag: str | None

    @property
    def tier(self) -> int:
        """0 review, 1 given (an import), 2 a person, 3 a model: the views' precedence."""
        if self.source == "review":
            return 0
        return {"import": 1, "human": 2}.get(self.annotator_kind, 3)

    def shape(self) -> Shape:
        """This box or polygon as a Shape drawn from this event."""
        if self.kind == "polygon":
            return polygon_shape(self.points or (), label=self.class_name, ref=self.event_id)
        return Shape("box", self.class_name, self.x, self.y, self.w, self.h, None, self.event_id)


def _none(value):
    """None for a NULL however pandas shows it (None, NaN, NA), else the value."""
    if value is None or value is pd.NA:
        return None
    return None if isinstance(value, float) and math.isnan(value) else value


def _points(text) -> tuple | None:
    text = _none(text)
    return tuple((float(p[0]), float(p[1])) for p in json.loads(text)) if text else None


def _label(row: dict) -> Label:
    class_id = _none(row["class_id"])
    return Label(int(row["event_id"]), int(row["object_id"]), int(row["annotator_id"]),
                 row["annotator"], row["annotator_kind"], row["kind"],
                 None if class_id is None else int(class_id), _none(row["class"]),
                 _none(row["x"]), _none(row["y"]), _none(row["w"]), _none(row["h"]),
                 _points(row["points"]), row["source"], _none(row["score"]), _none(row["flag"]))


def current_labels(rows: list[dict]) -> tuple[Label, ...]:
    """The current labels in an image's events (rows oldest first): each object's latest event,
    unless it deleted the object (as the current_labels view), in event order."""
    last = {row["object_id"]: row for row in rows}  # later rows replace earlier ones
    return tuple(_label(row) for row in sorted(last.values(), key=lambda r: r["event_id"])
                 if row["op"] == "set")


def resolved_layer(labels) -> tuple[Label, ...]:
    """The boxes and polygons of the layer the resolved_objects view picks: a reviewed layer,
    else the given one, else a person's, else a model's; ties go to the lowest annotator id."""
    objects = [label for label in labels if label.kind != "class"]
    tiers: dict[int, int] = {}
    for label in objects:
        tiers[label.annotator_id] = min(tiers.get(label.annotator_id, 9), label.tier)
    if not tiers:
        return ()
    chosen = min(tiers, key=lambda annotator: (tiers[annotator], annotator))
    return tuple(label for label in objects if label.annotator_id == chosen)


@dataclass(frozen=True)
class ResolvedClass:
    """An image's whole-image class and how it was decided."""
    class_id: int
    how: str                 # 'review', 'given', 'consensus', 'model'; 'yours' for the user's
    label: Label | None      # the latest label saying so in the deciding tier; None: consensus


CONSENSUS_WEIGHT = 1_000_000_000  # the stored consensus outweighs any number of people's votes


def resolved_class(labels, *, consensus: int | None = None) -> ResolvedClass | None:
    """The image's class as the resolved_class view decides it: the best tier wins (review,
    given, people, model); among people the most votes, the stored `consensus` class counting
    as CONSENSUS_WEIGHT votes, ties to the earliest; elsewhere the latest label."""
    votes: dict[tuple, list[Label]] = {}
    for label in labels:
        if label.kind == "class":
            votes.setdefault((label.class_id, label.tier), []).append(label)
    if consensus is not None:
        votes.setdefault((consensus, 2), [])
    if not votes:
        return None

    def rank(item):
        (class_id, tier), group = item
        ids = [label.event_id for label in group] + ([0] if class_id == consensus else [])
        if tier != 2:
            return tier, 0, -max(ids)
        return tier, -len(group) - (CONSENSUS_WEIGHT if class_id == consensus else 0), min(ids)

    (class_id, tier), group = min(votes.items(), key=rank)
    latest = max(group, key=lambda label: label.event_id) if group else None
    return ResolvedClass(class_id, RESOLVED_BY[tier], latest)


@dataclass(frozen=True)
class ImageView:
    """One image as the fix page shows it to `user`, read at one moment.

    `events` are every label event on the image, oldest first (catalog.image_label_events);
    `actions` the edit actions on it (catalog.image_edit_actions); `based_on` the newest event id
    when read (0: none), which a save hands back to detect a change made in between.
    """
    image: dict
    user: str
    events: pd.DataFrame
    actions: pd.DataFrame
    based_on: int

    @property
    def image_id(self) -> int:
        return int(self.image["image_id"])

    @property
    def dataset_id(self) -> int:
        return int(self.image["dataset_id"])

    @cached_property
    def rows(self) -> list[dict]:
        """`events` as records, oldest first (a few rows: cheaper to walk than a DataFrame)."""
        return self.events.to_dict("records")

    @cached_property
    def labels(self) -> tuple[Label, ...]:
        """Current labels of every layer."""
        return current_labels(self.rows)

    @cached_property
    def mine(self) -> tuple[Label, ...]:
        return tuple(label for label in self.labels if label.annotator == self.user)

    @property
    def working_is_mine(self) -> bool:
        """Whether the user edits their own layer (it holds a box or polygon) or starts from the
        resolved one (their first save copies it into their layer)."""
        return any(label.kind != "class" for label in self.mine)

    @cached_property
    def working(self) -> tuple[Label, ...]:
        """The boxes and polygons being edited: the user's layer when it holds any, else the
        resolved layer."""
        if self.working_is_mine:
            return tuple(label for label in self.mine if label.kind != "class")
        return resolved_layer(self.labels)

    @cached_property
    def others(self) -> tuple[Label, ...]:
        """Boxes and polygons of every other layer (other people's, imports', models'), but for
        those the user's own events copied, changed or deleted."""
        shown = {label.annotator_id for label in self.working}
        adopted = {int(row["replaces"]) for row in self.rows
                   if row["annotator"] == self.user and _none(row["replaces"]) is not None}
        return tuple(label for label in self.labels if label.kind != "class"
                     and label.annotator_id not in shown and label.event_id not in adopted)

    @cached_property
    def my_class(self) -> Label | None:
        return next((label for label in self.mine if label.kind == "class"), None)

    @cached_property
    def shown_class(self) -> ResolvedClass | None:
        """The user's own whole-image class ('yours'), else the resolved one, else None."""
        if self.my_class is not None:
            return ResolvedClass(self.my_class.class_id, "yours", self.my_class)
        consensus = _none(self.image.get("consensus_class"))
        return resolved_class(self.labels,
                              consensus=None if consensus is None else int(consensus))


def load_view(con, image_id: int, *, user: str) -> ImageView:
    """Read one image and all its label events and actions (three small queries)."""
    image = catalog.edit_image(con, image_id)
    events = catalog.image_label_events(con, image_id)
    actions = catalog.image_edit_actions(con, image_id)
    based_on = int(events["event_id"].max()) if len(events) else 0
    return ImageView(image, user, events, actions, based_on)


# ---------------------------------------------------------------- planning changes


@dataclass(frozen=True)
class Change:
    """One event to append in the user's layer."""
    what: str                        # 'added', 'moved', 'copied', 'deleted', 'restored', ...
    kind: str                        # 'class', 'box', 'polygon'
    op: str                          # 'set' or 'delete'
    class_id: int | None
    x: float | None = None
    y: float | None = None
    w: float | None = None
    h: float | None = None
    points: tuple | None = None
    object_id: int | None = None     # the user's own object it changes; None: a new object
    replaces: int | None = None      # the event it supersedes, in any layer
    source: str | None = None        # set only where it must differ from the save's source


@dataclass(frozen=True)
class EditPlan:
    """What a save would append (`changes`) and what was fixed or refused on the way (`notes`)."""
    changes: tuple[Change, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def summary(self) -> str:
        """e.g. '1 added, 2 moved'."""
        counts = Counter(change.what for change in self.changes)
        return ", ".join(f"{n} {what}" for what, n in counts.items())


def _where(shape: Shape) -> str:
    return f"{shape.kind} at ({shape.x:g}, {shape.y:g})"


def _class_of(shape: Shape, class_ids: dict[str, int], stored: Label | None):
    """(class_id, note, refused) for a shape's label: exact, else one case-insensitive match,
    else the stored object's class for an unlabelled polygon."""
    label = (shape.label or "").strip()
    if not label and stored is not None and shape.kind == "polygon":
        return stored.class_id, None, False
    if label in class_ids:
        return class_ids[label], None, False
    folded = [name for name in class_ids if name.lower() == label.lower()]
    if label and len(folded) == 1:
        note = f"{_where(shape)}: class {label!r} read as {folded[0]!r}"
        return class_ids[folded[0]], note, False
    known = ", ".join(class_ids)
    what = f"unknown class {label!r}" if label else "no class"
    return None, f"{_where(shape)}: {what} (classes: {known})", True


def _fit(shape: Shape, width, height) -> tuple[Shape | None, str | None]:
    """(the shape kept inside the image, or None when refused; a note for the user or None)."""
    if shape.kind == "polygon":
        points = [[float(px), float(py)] for px, py in shape.points or ()]
        fitted, why, action = _fit_polygon(points, width, height)
        if fitted is None:
            return None, f"{_where(shape)}: {why}: not saved"
        if _area(fitted) <= 0:
            return None, f"{_where(shape)}: polygon of zero area: not saved"
        kept = polygon_shape(fitted, label=shape.label, ref=shape.ref)
        return kept, (f"{_where(shape)}: partly outside the {width}x{height} image, clipped"
                      if action == "clipped" else None)
    box, why, action = _fit_box(shape.x, shape.y, shape.w, shape.h, width, height)
    if action in ("flagged", "skipped"):
        return None, f"{_where(shape)}: {why}: not saved"
    kept = Shape("box", shape.label, *(round(v, 2) for v in box), None, shape.ref)
    if action == "clipped":
        return kept, (f"{_where(shape)}: partly outside the {width}x{height} image, clipped to "
                      f"({kept.x:g}, {kept.y:g}) {kept.w:g} x {kept.h:g}")
    return kept, None


def _area(points) -> float:
    """Shoelace area of a polygon, in square pixels."""
    xs, ys = np.array([p[0] for p in points]), np.array([p[1] for p in points])
    return abs(float(np.dot(xs, np.roll(ys, -1)) - np.dot(ys, np.roll(xs, -1)))) / 2


def _difference(old: Label, shape: Shape, class_id: int, tolerance: float) -> str | None:
    """How `shape` differs from the stored object: 'moved', 'resized', 'reshaped',
    'reclassified' (joined with ', '), or None when it does not."""
    parts = []
    if old.kind == "box":
        if abs(shape.w - old.w) > tolerance or abs(shape.h - old.h) > tolerance:
            parts.append("resized")
        elif abs(shape.x - old.x) > tolerance or abs(shape.y - old.y) > tolerance:
            parts.append("moved")
    else:
        new, stored = np.array(shape.points), np.array(old.points)
        if new.shape != stored.shape:
            parts.append("reshaped")
        elif np.abs(new - stored).max() > tolerance:
            shift = new - stored
            parts.append("moved" if np.abs(shift - shift[0]).max() <= tolerance else "reshaped")
    if class_id != old.class_id:
        parts.append("reclassified")
    return ", ".join(parts) or None


def _change(what: str, shape: Shape | Label, class_id, *, object_id=None, replaces=None,
            op: str = "set", source: str | None = None) -> Change:
    return Change(what, shape.kind, op, class_id, shape.x, shape.y, shape.w, shape.h,
                  shape.points, object_id, replaces, source)


def _checked_shapes(view: ImageView, shapes, class_ids, working) -> tuple[list, set, list]:
    """([(shape, class_id, stored label or None)], refs refused (kept as stored), notes)."""
    width, height = view.image["width"], view.image["height"]
    kept, refused, notes = [], set(), []
    for shape in shapes:
        stored = working.get(shape.ref) if shape.ref is not None else None
        if stored is not None and stored.kind != shape.kind:
            stored = None
        class_id, note, bad = _class_of(shape, class_ids, stored)
        fitted, fit_note = (None, None) if bad else _fit(shape, width, height)
        kept_note = "; the stored one is kept" if fitted is None and stored else ""
        notes += [text + kept_note for text in (note, fit_note) if text]
        if fitted is None:
            if stored is not None:
                refused.add(stored.event_id)
            continue
        kept.append((fitted, class_id, stored))
    return kept, refused, notes


def plan_shape_edits(view: ImageView, shapes, *, class_ids: dict[str, int], source: str = "edit",
                     accept: bool = False, tolerance: float = 0.05) -> EditPlan:
    """The changes that make the user's layer hold `shapes` (what the canvas shows).

    Drawn shapes carry the event id they were drawn from (`ref`); a working object no shape
    refers to was deleted. When the user starts from another layer, any change (or `accept`)
    also copies the unchanged objects, so the user's layer is complete; every new event
    `replaces` the one it changes. A reviewing save (`source='review'`) restates the user's
    unreviewed objects as reviewed. Degenerate shapes, shapes outside the image and unknown
    classes are refused with a note (a stored object keeps its state); shapes partly outside
    are clipped with a note. `tolerance`: pixels under which a coordinate counts as unchanged.
    """
    working = {label.event_id: label for label in view.working}
    kept, refused, notes = _checked_shapes(view, shapes, class_ids, working)
    mine, changes, seen, unchanged = view.working_is_mine, [], set(), []
    for shape, class_id, stored in kept:
        if stored is None or stored.event_id in seen:
            changes.append(_change("added", shape, class_id))
            continue
        seen.add(stored.event_id)
        what = _difference(stored, shape, class_id, tolerance)
        if what is None:
            unchanged.append(stored)
        else:
            changes.append(_change(what, shape, class_id, replaces=stored.event_id,
                                   object_id=stored.object_id if mine else None))
    for stored in working.values():
        if stored.event_id not in seen and stored.event_id not in refused:
            changes.append(_change("deleted", stored, stored.class_id, op="delete",
                                   replaces=stored.event_id,
                                   object_id=stored.object_id if mine else None))
    if changes or accept:  # copies first: what the user changed gets the newest events (on top)
        changes = _restated(unchanged, mine=mine, source=source) + changes
    return EditPlan(tuple(changes), tuple(notes))


def _restated(unchanged, *, mine: bool, source: str) -> list[Change]:
    """Unchanged objects a save writes too: copies from another layer; the user's own ones when
    a review confirms what they had not reviewed yet."""
    if not mine:
        return [_change("copied", s, s.class_id, replaces=s.event_id) for s in unchanged]
    if source != "review":
        return []
    return [_change("confirmed", s, s.class_id, replaces=s.event_id, object_id=s.object_id)
            for s in unchanged if s.source != "review"]


def plan_class_edit(view: ImageView, class_name: str, *, class_ids: dict[str, int],
                    source: str = "edit") -> EditPlan:
    """The change that sets the user's whole-image class to `class_name` (nothing when their
    label already says so with this source); a first label replaces the resolved one."""
    if class_name not in class_ids:
        return EditPlan(notes=(f"unknown class {class_name!r} (classes: {', '.join(class_ids)})",))
    class_id, mine = class_ids[class_name], view.my_class
    if mine is not None:
        if mine.class_id == class_id and (mine.source == source or source != "review"):
            return EditPlan()
        what = "reclassified" if mine.class_id != class_id else "confirmed"
        return EditPlan((Change(what, "class", "set", class_id, object_id=mine.object_id,
                                replaces=mine.event_id),))
    base = view.shown_class
    return EditPlan((Change("labelled", "class", "set", class_id,
                            replaces=base.label.event_id if base and base.label else None),))


# ---------------------------------------------------------------- saving


class StaleView(Exception):
    """The image changed after the view a save was based on; nothing was written."""

    def __init__(self, author: str | None, changed_at, event_id: int):
        self.author, self.changed_at, self.event_id = author, changed_at, event_id
        when = f" at {changed_at:%Y-%m-%d %H:%M:%S} UTC" if changed_at is not None else ""
        super().__init__(f"This image was changed by {author or 'someone else'}{when}: "
                         "reload, or keep yours.")


def _event_frame(view: ImageView, changes, *, annotator_id: int, source: str,
                 event_ids: list[int]) -> pd.DataFrame:
    """The changes as rows of catalog.EVENT_COLUMNS; a new object's id is its first event's."""
    def column(name: str, dtype: str) -> pd.api.extensions.ExtensionArray:
        return pd.array([getattr(c, name) for c in changes], dtype=dtype)

    nothing = [None] * len(changes)
    object_ids = [e if c.object_id is None else c.object_id for c, e in zip(changes, event_ids)]
    points = [json.dumps([list(p) for p in c.points]) if c.points else None for c in changes]
    return pd.DataFrame({
        "event_id": pd.array(event_ids, dtype="Int64"),
        "object_id": pd.array(object_ids, dtype="Int64"), "dataset_id": view.dataset_id,
        "image_id": view.image_id, "annotator_id": annotator_id,
        "kind": [c.kind for c in changes], "op": [c.op for c in changes],
        "class_id": column("class_id", "Int64"), "x": column("x", "Float64"),
        "y": column("y", "Float64"), "w": column("w", "Float64"), "h": column("h", "Float64"),
        "points": pd.Series(points, dtype=object), "source": [c.source or source for c in changes],
        "model_run_id": pd.array(nothing, dtype="Int64"),
        "score": pd.array(nothing, dtype="Float64"),
        "replaces": column("replaces", "Int64"), "flag": pd.Series(nothing, dtype=object),
        "job_id": pd.array(nothing, dtype="Int64"), "created_at": catalog.now()})


def _stale(con, image_id: int, based_on: int, *, wait: float = 0.5) -> StaleView:
    """StaleView naming the newest event after `based_on`; a save that lost a write-write
    conflict waits up to `wait` seconds for the winner to commit, to say who it was."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        latest = catalog.latest_image_event(con, image_id)
        if latest and latest[0] > based_on:
            event_id, author, changed_at = latest
            return StaleView(author, changed_at, event_id)
        time.sleep(0.02)
    return StaleView(None, None, based_on)


def save_changes(con, view: ImageView, plan: EditPlan, *, based_on: int, source: str = "edit",
                 action: str = "save", undoes: int | None = None,
                 reverts_to: int | None = None) -> int:
    """Append `plan`'s changes as events in the user's layer, with one action row; returns the
    action id. `based_on` is the newest event id the user's view showed (`view.based_on`, or
    `StaleView.event_id` to keep yours over a newer change). In one transaction: raise
    StaleView if the image has a newer event; write the image's edit head, which a concurrent
    save of the image also writes, so DuckDB fails one of them (caught, rolled back, reported
    as StaleView)."""
    if not plan.changes:
        raise ValueError("nothing to save: the plan has no changes")
    if not (view.user or "").strip():
        raise ValueError("no user: every edit carries who made it")
    users.require(con, view.user, "review" if source == "review" else "annotate")
    annotator_id = _annotator_id(con, view.user)
    con.begin()
    try:
        latest = catalog.latest_image_event(con, view.image_id)
        if latest and latest[0] > based_on:
            event_id, author, changed_at = latest
            raise StaleView(author, changed_at, event_id)
        event_ids = catalog.next_event_ids(con, len(plan.changes))
        catalog.claim_image(con, view.image_id, max(event_ids), annotator_id)
        catalog.append_label_events(con, _event_frame(
            view, plan.changes, annotator_id=annotator_id, source=source, event_ids=event_ids))
        action_id = catalog.add_edit_action(
            con, dataset_id=view.dataset_id, image_id=view.image_id, annotator_id=annotator_id,
            kind=action, event_ids=event_ids, based_on=based_on, undoes=undoes,
            reverts_to=reverts_to, summary=plan.summary)
        con.commit()
    except StaleView:
        _rollback(con)
        raise
    except (duckdb.TransactionException, duckdb.ConstraintException) as err:
        _rollback(con)
        raise _stale(con, view.image_id, based_on) from err
    except Exception:
        _rollback(con)
        raise
    return action_id


def _annotator_id(con, user: str) -> int:
    """The user's annotator id, created as a person on their first save."""
    try:
        return catalog.get_or_create_annotators(con, [user], kind="human")[user]
    except (duckdb.TransactionException, duckdb.ConstraintException):
        return catalog.get_or_create_annotators(con, [user], kind="human")[user]  # made meanwhile


def _rollback(con) -> None:
    try:
        con.rollback()
    except duckdb.Error:
        pass  # a failed commit has already ended the transaction


# ---------------------------------------------------------------- undo and revert


def _object_events(view: ImageView) -> dict[int, pd.DataFrame]:
    """The user's layer: object_id → its events, oldest first."""
    own = view.events[view.events["annotator"] == view.user]
    return {int(k): group for k, group in own.groupby("object_id", sort=False)}


def _restore(events: pd.DataFrame, target: dict | None) -> Change | None:
    """The change that brings one object (its `events`) back to `target` (an event row, or None
    for "absent"), or None when it is already there."""
    current = events.iloc[-1].to_dict()
    wanted = target if target is not None and target["op"] == "set" else None
    if wanted is None:
        if current["op"] == "delete":
            return None
        label = _label(current)
        return _change("removed", label, label.class_id, op="delete", object_id=label.object_id,
                       replaces=label.event_id, source=current["source"])
    if current["op"] == "set" and _same_state(current, wanted):
        return None
    label = _label(wanted)
    return _change("restored", label, label.class_id, object_id=int(current["object_id"]),
                   replaces=int(current["event_id"]), source=wanted["source"])


def _same_state(a: dict, b: dict) -> bool:
    keys = ("kind", "class_id", "x", "y", "w", "h", "points")
    return all(_none(a[k]) == _none(b[k]) for k in keys)


def last_action(view: ImageView) -> dict | None:
    """The user's latest action on the image that is neither an undo nor undone (a row of
    `view.actions`), or None."""
    actions = view.actions[view.actions["annotator"] == view.user]
    undone = set(actions["undoes"].dropna().astype(int))
    candidates = actions[(actions["kind"] != "undo") & ~actions["action_id"].isin(undone)]
    return None if candidates.empty else candidates.iloc[-1].to_dict()


def plan_undo(view: ImageView) -> tuple[EditPlan, int | None]:
    """(the changes that undo the user's last action on this image, that action's id); the
    plan is empty and the id None when there is nothing to undo. Each object the action touched
    returns to its state just before it (absent when the action created it)."""
    action = last_action(view)
    if action is None:
        return EditPlan(notes=("nothing of yours to undo on this image",)), None
    ids = set(int(e) for e in action["event_ids"])
    changes = []
    for events in _object_events(view).values():
        touched = events["event_id"].isin(ids)
        if touched.any():
            before = events[events["event_id"] < events.loc[touched, "event_id"].min()]
            change = _restore(events, before.iloc[-1].to_dict() if len(before) else None)
            changes += [change] if change else []
    notes = () if changes else ("your last action left nothing to undo",)
    return EditPlan(tuple(changes), notes), int(action["action_id"])


def plan_revert(view: ImageView, event_id: int) -> EditPlan:
    """The changes that bring the user's layer back to its state right after event `event_id`
    (any event of the image's history): objects made later are removed, the others restored."""
    changes = []
    for events in _object_events(view).values():
        before = events[events["event_id"] <= event_id]
        change = _restore(events, before.iloc[-1].to_dict() if len(before) else None)
        changes += [change] if change else []
    notes = () if changes else (f"your labels already are as they were after event {event_id}",)
    return EditPlan(tuple(changes), notes)


# ---------------------------------------------------------------- history


def _geometry(row: dict) -> str:
    if row["kind"] == "class":
        return ""
    if row["kind"] == "polygon":
        return f" ({len(json.loads(row['points']))} points around ({row['x']:.0f}, {row['y']:.0f}))"
    return f" ({row['x']:.0f}, {row['y']:.0f}) {row['w']:.0f} x {row['h']:.0f}"


def _thing(row: dict) -> str:
    name = _none(row["class"]) or "no class"
    return f"class {name}" if row["kind"] == "class" else f"{row['kind']} {name}"


def _describe(row: dict, before: dict | None, replaced: dict | None) -> str:
    """What one event did, against the object's previous event (or the event it replaces)."""
    if row["op"] == "delete":
        return f"deleted {_thing(row)}"
    base = before if before is not None else replaced
    if base is None:
        return f"added {_thing(row)}{_geometry(row)}"
    if base["op"] == "delete":
        return f"restored {_thing(row)}{_geometry(row)}"
    parts = []
    if _none(row["class_id"]) != _none(base["class_id"]):
        parts.append(f"class {_none(base['class']) or '?'} → {_none(row['class']) or '?'}")
    if _geometry(row) != _geometry(base):
        parts.append(f"{_geometry(base).strip()} → {_geometry(row).strip()}")
    if before is None:  # the user's first event on an object of another layer
        if not parts:
            return f"copied {_thing(row)}{_geometry(row)} from {replaced['annotator']}"
        return f"{_thing(base)} of {replaced['annotator']}: {'; '.join(parts)}"
    return f"{_thing(base)}: {'; '.join(parts) or 'restated'}"


def history_table(view: ImageView) -> pd.DataFrame:
    """Every label event on the image, newest first. Columns: event_id, when, who, source,
    action ('save #12', 'undo #13', ...; empty for imports), what, flag."""
    by_id = {int(r["event_id"]): r for r in view.rows}
    action_of = {int(e): f"{a['kind']} #{a['action_id']}" for a in view.actions.to_dict("records")
                 for e in a["event_ids"]}
    previous: dict[int, dict] = {}
    rows = []
    for row in by_id.values():
        replaced = by_id.get(int(row["replaces"])) if _none(row["replaces"]) is not None else None
        what = _describe(row, previous.get(int(row["object_id"])), replaced)
        previous[int(row["object_id"])] = row
        rows.append({"event_id": int(row["event_id"]), "when": row["created_at"],
                     "who": row["annotator"], "source": row["source"],
                     "action": action_of.get(int(row["event_id"]), ""), "what": what,
                     "flag": _none(row["flag"])})
    columns = ["event_id", "when", "who", "source", "action", "what", "flag"]
    return pd.DataFrame(rows[::-1], columns=columns)
