"""The labelling canvas: the image enlarged (crisp) or fitted, other layers drawn into it, and the
drawable canvas on top holding the objects being edited. `canvas_ui` draws it and returns what
the user left on it (Fabric.js JSON); `background_image` and `class_colours` feed it. The widgets
around it (class keys, the objects table, votes, history) draw and hand clicks to callbacks."""
from __future__ import annotations

import colorsys
import html
import io
import os

import streamlit as st
from PIL import Image, ImageDraw, ImageFont, ImageOps

from core import catalog

PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
           "#17becf", "#bcbd22", "#7f7f7f"]


def class_colours(names: list[str]) -> dict[str, str]:
    """A distinct '#rrggbb' per class name, in order: a fixed palette, then evenly spread hues.
    Distinct strings matter: a polygon's class is read back from its colour."""
    colours, used = {}, set()
    for k, name in enumerate(names):
        colour = PALETTE[k] if k < len(PALETTE) else None
        step = k
        while colour is None or colour in used:
            r, g, b = colorsys.hsv_to_rgb((step * 0.618034) % 1, 0.75, 0.85)
            colour = f"#{int(r * 255):02x}{int(g * 255):02x}{int(b * 255):02x}"
            step += 1
        colours[name] = colour
        used.add(colour)
    return colours


def _dashed(draw: ImageDraw.ImageDraw, points: list, colour: str, *, dash: int = 6) -> None:
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        length = max(((x1 - x0) ** 2 + (y1 - y0) ** 2) ** 0.5, 1)
        for start in range(0, int(length), dash * 2):
            a, b = start / length, min(start + dash, length) / length
            draw.line([(x0 + (x1 - x0) * a, y0 + (y1 - y0) * a),
                       (x0 + (x1 - x0) * b, y0 + (y1 - y0) * b)], fill=colour, width=2)


def _draw_overlay(draw, item: tuple, scale: float, font) -> None:
    """One overlay: (kind, coordinates, colour, caption, dashed); coordinates are (x, y, w, h)
    for a box, the points for a polygon, in image pixels."""
    kind, coords, colour, caption, dashed = item
    if kind == "flag":  # a box too thin to see: a ring round where it is, and why
        x, y, w, h = (v * scale for v in coords)
        cx, cy = x + w / 2, y + h / 2
        radius = max(9.0, abs(w) / 2, abs(h) / 2)
        draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], outline=colour,
                     width=2)
        width, left = draw.textlength(caption, font=font), cx + radius + 3
        if left + width > draw.im.size[0]:  # near the right edge: the caption on the left
            left = max(cx - radius - 3 - width, 0)
        draw.text((left, max(cy - 7, 0)), caption, fill=colour, font=font, stroke_width=2,
                  stroke_fill="white")
        return
    if kind == "box":
        x, y, w, h = (v * scale for v in coords)
        outline = [(x, y), (x + w, y), (x + w, y + h), (x, y + h), (x, y)]
    else:
        outline = [(px * scale, py * scale) for px, py in coords]
        outline.append(outline[0])
    if dashed:
        _dashed(draw, outline, colour)
    else:
        draw.line(outline, fill=colour, width=1)
    left, top = min(p[0] for p in outline), max(min(p[1] for p in outline) - 13, 0)
    draw.text((left + 2, top), caption, fill=colour, font=font, stroke_width=2,
              stroke_fill="white")


def _shown_as_is(image: Image.Image) -> bool:
    """Whether a browser draws this file exactly as the catalog sizes it: a JPEG or PNG in RGB
    or grey, not turned by an EXIF orientation."""
    return (image.format in ("JPEG", "PNG") and image.mode in ("RGB", "L")
            and image.getexif().get(0x0112, 1) == 1)


@st.cache_data(show_spinner=False, max_entries=64)
def background_image(root: str, path: str, raw: bytes | None, *, scale: float,
                     overlays: tuple = ()) -> bytes | None:
    """The image (PNG or JPEG bytes) at `scale` canvas pixels per image pixel, enlarged by
    nearest neighbour so pixels stay crisp squares, with `overlays` drawn in (see
    `_draw_overlay`); None when the file cannot be read."""
    try:
        full = catalog.dataset_file(root, path, raw)  # refuses (and logs) a path outside root
        with Image.open(full) as image:
            if scale == 1 and not overlays and _shown_as_is(image):
                with open(full, "rb") as file:
                    return file.read()  # nothing to change: no decoding, no encoding
            image = ImageOps.exif_transpose(image).convert("RGB")
    except Exception:  # noqa: BLE001 — an unreadable file gets no background
        return None
    size = (max(round(image.width * scale), 1), max(round(image.height * scale), 1))
    resample = Image.Resampling.NEAREST if scale >= 1 else (
        Image.Resampling.BILINEAR if scale > 0.5 else Image.Resampling.LANCZOS)
    if size != image.size:
        image = image.resize(size, resample)
    if overlays:
        draw, font = ImageDraw.Draw(image), ImageFont.load_default(size=11)
        for item in overlays:
            _draw_overlay(draw, item, scale, font)
    buffer = io.BytesIO()
    if scale >= 2:  # enlarged pixel art: PNG keeps the squares sharp and stays small
        image.save(buffer, format="PNG", compress_level=1)
    else:  # a photo: JPEG is 5x smaller, and the canvas resends it on every rerun
        image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


SCROLL_CSS = """<style>
.st-key-sieve_canvas {overflow-x: auto;}
.st-key-sieve_canvas .stElementContainer, .st-key-sieve_canvas .stBidiComponent,
.st-key-sieve_canvas [data-testid="stBidiComponentIsolated"] {width: max-content !important;
  max-width: none !important;}
</style>"""


def canvas_ui(background: bytes | None, drawing: dict, *, width: int, height: int, mode: str,
              class_name: str, colour: str, key: str) -> dict | None:
    """Draw the canvas: `background` behind, `drawing` (Fabric.js JSON, see
    core.drawing.to_drawing) to edit; `mode` 'box' or 'polygon' for new shapes, drawn in
    `colour` and, for boxes, labelled `class_name`. Returns the canvas's drawing: `drawing`
    until the user changes something. The component keeps its state in st.session_state[key]
    ({'drawing': {'raw': <Fabric JSON>}}), which is how tests hand it a drawing."""
    from streamlit_drawable_canvas import st_canvas  # a component: works only in a running app

    box = mode == "box"
    st.html(SCROLL_CSS)  # a zoomed canvas wider than its column scrolls instead of being cut
    with st.container(key="sieve_canvas"):
        result = st_canvas(
            fill_color=colour + "26", stroke_width=2, stroke_color=colour,
            background_image=background, background_color="#f0f0f0", update_streamlit=True,
            width=width, height=height, drawing_mode="labeled_rect" if box else "polygon",
            initial_drawing=drawing, label=class_name if box else "", font_size=13, key=key)
    return result.json_data


def legend_ui(colours: dict[str, str]) -> None:
    """Which colour is which class (a polygon on the canvas shows its class by colour only)."""
    chips = "".join(f'<span style="margin-right:1em"><span style="display:inline-block;'
                    f'width:0.8em;height:0.8em;background:{colour};margin-right:0.3em"></span>'
                    f"{html.escape(name)}</span>" for name, colour in colours.items())
    st.html(f'<div style="font-size:0.85rem">{chips}</div>')


FLAG_COLOUR = "#d62728"


def flag_markers(labels) -> tuple:
    """Overlays for the boxes being edited that have no area to see (zero width or height, or
    inverted), each ringed with its flag: the canvas cannot show them."""
    return tuple(("flag", (o.x, o.y, o.w, o.h), FLAG_COLOUR, f"{o.class_name}: {o.flag}", False)
                 for o in labels if o.kind == "box" and o.flag and min(o.w, o.h) <= 0)


def overlays(labels, colours: dict[str, str], *, people: bool, models: bool) -> tuple:
    """Other layers' boxes and polygons for `background_image`: people's and imports' drawn
    solid with their author, models' dashed with their score."""
    items = []
    for label in labels:
        model = label.annotator_kind == "model" or label.source == "model"
        if (model and models) or (not model and people):
            box = (label.x, label.y, label.w, label.h)
            coords = label.points if label.kind == "polygon" else box
            caption = (f"{label.class_name} {label.score:.2f}" if model and label.score is not None
                       else f"{label.annotator}: {label.class_name}")
            items.append((label.kind, coords, colours.get(label.class_name, "#31333f"), caption,
                          model))
    return tuple(items)


NUMBER_KEYS = "1234567890"


def class_keys_ui(names: list[str], current: str | None, *, whole_image: bool, on_pick) -> None:
    """A button per class, the first ten on the number keys; `on_pick(name)` on a click."""
    st.caption("Image class (number keys)" if whole_image else "Class of new shapes (number keys)")
    keys = st.container(horizontal=True)
    for k, name in enumerate(names):
        keys.button(name, key=f"fix_class_{k}", on_click=on_pick, args=(name,),
                    shortcut=NUMBER_KEYS[k] if k < len(NUMBER_KEYS) else None,
                    type="primary" if name == current else "secondary")


def objects_ui(view, names: list[str], *, key: str) -> None:
    """The objects being edited, their class editable (a polygon has no label on the canvas);
    edits land in st.session_state[key]['edited_rows'], rows in `view.working` order."""
    working = view.working
    owner = "your layer" if view.working_is_mine else (
        f"the resolved layer ({working[0].annotator}); a save copies it into yours"
        if working else "nothing yet")
    st.caption(f"Editing {owner}. Draw, move, resize and delete on the canvas (the pencil in "
               "its toolbar toggles editing); change a class here or in a box's label.")
    if working:
        st.data_editor(
            [{"kind": o.kind, "class": o.class_name, "x": o.x, "y": o.y, "w": o.w, "h": o.h,
              "by": o.annotator, "source": o.source, "flag": o.flag} for o in working],
            key=key, disabled=["kind", "x", "y", "w", "h", "by", "source", "flag"],
            column_config={"class": st.column_config.SelectboxColumn(options=names, required=True)})


def votes_ui(labels) -> None:
    """Every layer's whole-image label of the image."""
    votes = [{"annotator": v.annotator, "class": v.class_name, "source": v.source,
              "score": v.score} for v in labels if v.kind == "class"]
    if votes:
        st.dataframe(votes, hide_index=True, key="fix_votes", height=min(35 * len(votes) + 40, 220))


def history_ui(history, *, on_undo, on_revert) -> None:
    """Undo (U), Revert to an event, and the image's events (core.edits.history_table)."""
    row = st.container(horizontal=True, vertical_alignment="bottom")
    row.button("Undo", key="fix_undo", shortcut="U", on_click=on_undo,
               help="Undo your last action on this image (with new events)")
    described = {int(r["event_id"]): f"#{r['event_id']} {r['who']}: {r['what']}"[:80]
                 for r in history.to_dict("records")}  # the history table's own words
    row.selectbox("Revert your labels to after event", list(described), key="fix_revert_to",
                  format_func=described.get, width=320)
    row.button("Revert", key="fix_revert", on_click=on_revert, disabled=history.empty)
    with st.expander(f"History ({len(history):,} events)", expanded=True):
        st.dataframe(history, hide_index=True, key="fix_history", height=260)
