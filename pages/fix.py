"""Fix labels: walk a review queue image by image with the keyboard; draw, move, resize, delete
and reclassify boxes and polygons on a canvas; set whole-image classes with number keys; see the
image's history; undo and revert. Every change is a new label event in the user's layer."""
from dataclasses import replace

import numpy as np
import streamlit as st

import ui
from core import catalog, edits, queues, users
from core.drawing import display_scale, shapes_from_drawing, to_drawing
from ui import canvas


@st.cache_data(show_spinner=False, max_entries=32)
def queue_frame(path: str, key: str, generation: int, _con=None):
    """The queue's images, read once per queue and refresh (not on every save: a queue is a
    worklist that does not reshuffle while one works through it)."""
    return queues.queue_images(_con, queues.parse_queue_key(key))


@st.cache_data(show_spinner=False, max_entries=16)
def dataset_facts(path: str, version: tuple, dataset_id: int, _con=None) -> dict:
    """Classes, splits, label facts (catalog.label_event_facts) and queue choices of a dataset,
    read once per `version` (catalog.review_version)."""
    return {"classes": catalog.class_table(_con, dataset_id),
            "splits": catalog.split_names(_con, dataset_id),
            "choices": queues.queue_choices(_con, dataset_id),
            **catalog.label_event_facts(_con, dataset_id)}


def note(level: str, text: str) -> None:
    """A message about the last action, shown until the next one (reruns come in between)."""
    st.session_state.setdefault("fix_notes", []).append((level, text))


def action(callback):
    """A button callback that starts a new action: the last action's notes go."""
    def run(*args):
        st.session_state["fix_notes"] = []
        callback(*args)
    return run


# ---------------------------------------------------------------- actions (button callbacks)


def _state() -> dict:
    return st.session_state["fix_state"]


def _source() -> str:
    return "review" if st.session_state.get("fix_review") else "edit"


def go(step: int) -> None:
    """Move `step` images along the queue and remember the place (catalog, per user + queue)."""
    state, nav = _state(), st.session_state["fix_nav"]
    nav["pos"] = int(min(max(nav["pos"] + step, 0), len(state["ids"]) - 1))
    if state["view"].user:
        queues.save_position(ui.get_cursor(), state["view"].user, state["spec"], nav["pos"],
                             int(state["ids"][nav["pos"]]))


def drawn_plan(*, accept: bool = False) -> edits.EditPlan:
    """What the canvas (and the class column of the objects table) would save now."""
    state = _state()
    value = st.session_state.get(state["canvas_key"]) or {}
    raw = (value.get("drawing") or {}).get("raw") or state["drawing"]
    shapes, notes = shapes_from_drawing(raw, scale=state["scale"],
                                        classes_by_colour=state["by_colour"])
    edited = (st.session_state.get(state["editor_key"]) or {}).get("edited_rows", {})
    renamed = {state["refs"][int(row)]: c["class"] for row, c in edited.items() if c.get("class")}
    shapes = [replace(s, label=renamed.get(s.ref, s.label)) for s in shapes]
    plan = edits.plan_shape_edits(state["view"], shapes, class_ids=state["class_ids"],
                                  source=_source(), accept=accept,
                                  tolerance=max(0.05, 0.05 / state["scale"]))
    return replace(plan, notes=tuple(notes) + plan.notes)


def save(plan: edits.EditPlan, kind: str, *, based_on: int | None = None, **how) -> bool:
    """Save `plan`; report notes, success, or a conflict (kept for "keep yours")."""
    view = _state()["view"]
    for text in plan.notes:
        note("warning", text)
    if not plan.changes:
        return True
    if not view.user:
        note("error", "Enter your name in the sidebar (\"You are\") first: every edit carries it.")
        return False
    try:
        edits.save_changes(ui.get_cursor(), view, plan, source=_source(), action=kind,
                           based_on=view.based_on if based_on is None else based_on, **how)
    except edits.StaleView as err:
        st.session_state["fix_conflict"] = {"message": str(err), "plan": plan, "kind": kind,
                                            "based_on": err.event_id, "how": how}
        return False
    except users.PermissionDenied as err:  # the core check; the page also disables the buttons
        note("error", f"Not saved: {err}.")
        return False
    st.session_state["fix_reload"] = True
    st.toast(f"Saved ({kind}): {plan.summary}.", icon=":material/check_circle:")
    return True


@action
def on_save() -> None:
    plan = drawn_plan()
    if not plan.changes and not plan.notes:
        note("info", "Nothing to save: the canvas shows the stored labels.")
    save(plan, "save")


@action
def on_accept() -> None:
    state = _state()
    plan = drawn_plan(accept=True)
    shown = state["view"].shown_class
    if state["whole_image"] and shown is not None:
        name = {i: n for n, i in state["class_ids"].items()}[shown.class_id]
        extra = edits.plan_class_edit(state["view"], name, class_ids=state["class_ids"],
                                      source=_source())
        plan = edits.EditPlan(plan.changes + extra.changes, plan.notes + extra.notes)
    if save(plan, "accept"):
        go(+1)


@action
def on_move(step: int) -> None:
    if drawn_plan().changes:
        note("warning", "Unsaved changes on this image: Save (Ctrl+Enter), or Skip (S) to drop "
                        "them.")
    else:
        go(step)


@action
def on_class(name: str) -> None:
    state = _state()
    if not state["whole_image"]:
        st.session_state["fix_new_class"] = name
        return
    plan = edits.plan_class_edit(state["view"], name, class_ids=state["class_ids"],
                                 source=_source())
    if save(plan, "class") and st.session_state.get("fix_advance", True):
        go(+1)


@action
def on_undo() -> None:
    plan, action_id = edits.plan_undo(_state()["view"])
    save(plan, "undo", undoes=action_id)


@action
def on_revert() -> None:
    event_id = int(st.session_state["fix_revert_to"])
    save(edits.plan_revert(_state()["view"], event_id), "revert", reverts_to=event_id)


@action
def on_keep_mine() -> None:
    conflict = st.session_state.pop("fix_conflict")
    save(conflict["plan"], conflict["kind"], based_on=conflict["based_on"], **conflict["how"])


@action
def on_reload() -> None:
    st.session_state.pop("fix_conflict", None)
    st.session_state["fix_reload"] = True


def on_open_linked(name: str) -> None:
    """Switch the sidebar to the dataset of the ?queue= link and open that queue."""
    st.session_state["dataset"], st.session_state["fix_link_offer"] = name, None
    for key in ("fix_queue", "fix_nav", "fix_state"):
        st.session_state.pop(key, None)


# ---------------------------------------------------------------- widgets


def queue_ui(facts: dict) -> queues.QueueSpec:
    """Pick a queue (and the filters of "All images"); ?queue= in the URL preselects one."""
    choices = facts["choices"]
    wanted = st.query_params.get("queue")
    if wanted and "fix_queue" not in st.session_state:
        try:
            spec = queues.parse_queue_key(wanted)
        except ValueError:
            spec = None
        plain = spec and replace(spec, **dict.fromkeys(FILTERS))
        for title, choice in choices:
            if choice == plain:
                st.session_state["fix_queue"] = title
                st.session_state.update({f"fix_{k}": getattr(spec, k) for k in FILTERS})
    left, refresh = st.columns([6, 1], vertical_alignment="bottom")
    title = left.selectbox("Queue", [t for t, _ in choices], key="fix_queue")
    spec = dict(choices)[title]
    if spec.kind == "all":
        filters = st.columns(4)
        names = dict(zip(facts["classes"]["class_id"], facts["classes"]["name"]))
        options = [facts["splits"], list(names), facts["annotators"], facts["sources"]]
        for col, name, values in zip(filters, FILTERS, options):
            text = (lambda v: names.get(v, v)) if name == "class_id" else str
            value = col.selectbox({"class_id": "Class"}.get(name, name.capitalize()),
                                  [None, *values], key=f"fix_{name}",
                                  format_func=lambda v, text=text: "any" if v is None else text(v))
            spec = replace(spec, **{name: value})
    if refresh.button("Refresh", key="fix_refresh_queue", help="Read the queue again"):
        st.session_state["fix_generation"] = st.session_state.get("fix_generation", 0) + 1
    return spec


def linked_elsewhere_ui(con, dataset) -> bool:
    """On arrival with a ?queue= link into another dataset than the session's (a new session
    follows the link: `ui.sidebar_ui`), offer to open it until the user opens it or stays;
    True while the offer shows, so the link is not overwritten."""
    if "fix_link_offer" not in st.session_state:  # first visit of the page in this session
        name = ui.linked_dataset(con, catalog.list_dataset_names(con))
        st.session_state["fix_link_offer"] = (
            {"name": name, "queue": st.query_params.get("queue")}
            if name and name != dataset.name else None)
    offer = st.session_state["fix_link_offer"]
    if not offer or offer["name"] == dataset.name or st.query_params.get("queue") != offer["queue"]:
        st.session_state["fix_link_offer"] = None
        return False
    st.info(f"The link you followed is a queue of dataset {offer['name']}.")
    choice = st.container(horizontal=True)
    choice.button(f"Open it in {offer['name']}", key="fix_open_linked", on_click=on_open_linked,
                  args=(offer["name"],))
    choice.button(f"Stay in {dataset.name}", key="fix_stay",
                  on_click=lambda: st.session_state.update(fix_link_offer=None))
    return True


def position(con, spec, ids, user: str) -> int:
    """Where the user stands in the queue: kept in the session; at first from ?image= or from
    where they last stood (stored per user and queue in the catalog)."""
    nav = st.session_state.get("fix_nav")
    if nav is None or nav["queue"] != spec.key:
        image_id, pos = None, 0
        if st.query_params.get("queue") == spec.key and st.query_params.get("image", "").isdigit():
            image_id = int(st.query_params["image"])
        elif user:
            pos, image_id = queues.load_position(con, user, spec)
        nav = st.session_state["fix_nav"] = {
            "queue": spec.key, "pos": queues.locate(ids, image_id=image_id, position=pos)}
    nav["pos"] = min(nav["pos"], len(ids) - 1)
    return nav["pos"]


def toolbar_ui(pos: int, total: int, reason: str) -> None:
    bar = st.container(horizontal=True, vertical_alignment="center")
    bar.button("Previous", key="fix_prev", icon=":material/arrow_back:", shortcut="Left",
               on_click=on_move, args=(-1,), disabled=pos == 0)
    bar.button("Skip", key="fix_skip", shortcut="S", on_click=action(go), args=(+1,),
               help="Next image, dropping unsaved changes")
    bar.button("Accept", key="fix_accept", shortcut="A", type="primary", on_click=on_accept,
               help="The labels shown are right: save them as yours and go on")
    bar.button("Save", key="fix_save", shortcut="Ctrl+Enter", on_click=on_save)
    bar.button("Next", key="fix_next", icon=":material/arrow_forward:", shortcut="Right",
               on_click=on_move, args=(+1,), disabled=pos >= total - 1)
    bar.markdown(f"**{pos + 1:,} of {total:,}**" + (f" · {reason}" if reason else ""))


def messages_ui(con, view, *, fresh: bool) -> None:
    """A conflict with its two ways out, notes left by the last action, and a change someone
    made after the view was read (not `fresh`: read in an earlier run)."""
    conflict = st.session_state.get("fix_conflict")
    if conflict:
        st.warning(conflict["message"], icon=":material/sync_problem:")
        reload, keep, _ = st.columns([1, 1, 4])
        reload.button("Reload", key="fix_conflict_reload", on_click=on_reload,
                      help="Drop your change and show theirs")
        keep.button("Keep yours", key="fix_keep_mine", on_click=on_keep_mine,
                    help="Save your change on top of theirs (both stay in the history)")
    for level, text in st.session_state.get("fix_notes", []):
        getattr(st, level)(text)
    newer = None if fresh or conflict else catalog.latest_image_event(con, view.image_id)
    if newer and newer[0] > view.based_on:
        st.info(f"{newer[1]} changed this image at {newer[2]:%H:%M:%S} UTC, after you opened it.")
        st.button("Reload", key="fix_reload_newer", on_click=on_reload)


# ---------------------------------------------------------------- the page

FILTERS = ("split", "class_id", "annotator", "source")
con = ui.get_cursor()
dataset = ui.current_dataset(con)
st.title("Fix labels")
if dataset is None:
    st.info("No dataset yet: ingest one on the Overview page.")
    st.stop()
user = (st.session_state.get("user") or "").strip()
facts = dataset_facts(ui.catalog_path(), catalog.review_version(con), dataset.dataset_id,
                      _con=con)
linked_elsewhere = linked_elsewhere_ui(con, dataset)
spec = queue_ui(facts)
generation = st.session_state.get("fix_generation", 0)
frame = queue_frame(ui.catalog_path(), spec.key, generation, _con=con)
if frame.empty:
    st.info("This queue holds no images.")
    st.stop()
ids = frame["image_id"].to_numpy(np.int64)
pos = position(con, spec, ids, user)
image_id = int(ids[pos])
if not linked_elsewhere and (st.query_params.get("queue"), st.query_params.get("image")) != (
        spec.key, str(image_id)):
    st.query_params.update({"queue": spec.key, "image": str(image_id)})

state = st.session_state.get("fix_state")
reload = st.session_state.pop("fix_reload", False)
fresh = reload or not state or (state["view"].image_id, state["view"].user) != (image_id, user)
view = edits.load_view(con, image_id, user=user) if fresh else state["view"]  # kept till a save
names = facts["classes"]["name"].tolist()
colours = canvas.class_colours(names)
whole_image = "class" in facts["kinds"]
if st.session_state.get("fix_new_class") not in names:
    st.session_state["fix_new_class"] = names[0] if names else None

toolbar_ui(pos, len(ids), frame["reason"].iloc[pos])
messages_ui(con, view, fresh=fresh)
image = view.image
left, right = st.columns([8, 4])
with right:
    st.caption(f"`{image['path']}` · split {image['split'] or '-'} · {image['width']} x "
               f"{image['height']} px · image {image_id}")
    shown = view.shown_class
    shown_name = dict(zip(facts["classes"]["class_id"], names)).get(shown.class_id) if shown \
        else None
    if whole_image:
        st.markdown(f"Class: **{shown_name}** ({shown.how})" if shown else "Class: none yet")
    current = shown_name if whole_image else st.session_state["fix_new_class"]
    canvas.class_keys_ui(names, current, whole_image=whole_image, on_pick=on_class)
    st.toggle("Review mode", key="fix_review",
              help="Your saves are reviews: they decide the image's resolved labels")
    if whole_image:
        st.toggle("Next image after a class key", value=True, key="fix_advance")
    show_people = st.toggle("Show other annotators' objects", value=True, key="fix_people")
    show_models = st.toggle("Show model proposals (dashed, with score)", value=True,
                            key="fix_models")
    canvas.votes_ui(view.labels)
    editor_key = f"fix_objects_{image_id}_{view.based_on}"
    canvas.objects_ui(view, names, key=editor_key)
    canvas.history_ui(edits.history_table(view), on_undo=on_undo, on_revert=on_revert)

with left:
    mode, new_class, zoom = st.columns([1.2, 1, 1], vertical_alignment="bottom")
    box = mode.radio("Draw", ["Box", "Polygon"], horizontal=True, key="fix_mode") == "Box"
    new_class = new_class.selectbox("Class of new shapes", names, key="fix_new_class")
    zoom = zoom.select_slider("Zoom", [0.5, 0.75, 1, 1.5, 2, 3, 4], value=1, key="fix_zoom",
                              format_func=lambda z: f"{z:g}x",
                              help="Changing the zoom drops unsaved changes")
    scale = display_scale(image["width"], image["height"], zoom=zoom)
    raw = image["path_bytes"] if isinstance(image["path_bytes"], bytes | bytearray) else None
    background = canvas.background_image(
        image["root"], image["path"], raw, scale=scale,
        overlays=canvas.overlays(view.others, colours, people=show_people, models=show_models)
        + canvas.flag_markers(view.working))
    drawing = to_drawing([o.shape() for o in view.working], scale=scale, colours=colours)
    canvas_key = f"fix_canvas_{image_id}_{view.based_on}_{scale:g}"
    canvas.canvas_ui(background, drawing, width=round(image["width"] * scale),
                     height=round(image["height"] * scale), mode="box" if box else "polygon",
                     class_name=new_class or "", colour=colours.get(new_class, "#31333f"),
                     key=canvas_key)
    canvas.legend_ui(colours)

st.session_state["fix_canvas_key"] = canvas_key  # tests hand the canvas a drawing under this key
st.session_state["fix_state"] = {
    "view": view, "spec": spec, "ids": ids, "canvas_key": canvas_key, "editor_key": editor_key,
    "drawing": drawing, "scale": scale, "refs": [o.event_id for o in view.working],
    "by_colour": {c.lower(): n for n, c in colours.items()}, "whole_image": whole_image,
    "class_ids": dict(zip(facts["classes"]["name"], facts["classes"]["class_id"].astype(int)))}
