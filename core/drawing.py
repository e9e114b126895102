"""Canvas drawings: boxes and polygons in image pixels to and from the Fabric.js JSON that the
drawable canvas loads and sends back. Entry points: `to_drawing(shapes, ...)` for the canvas,
`shapes_from_drawing(drawing, ...)` for what the user left on it, `display_scale` for the zoom.

The canvas round-trips only Fabric's own properties, so a stored object's event id rides in
`strokeDashOffset`, which draws nothing while a stroke has no dash pattern.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

DIGITS = 2  # image coordinates are kept to 1/100 pixel


@dataclass(frozen=True)
class Shape:
    """A box or polygon in image pixels (top-left origin) as shown or drawn.

    `label` is its class name (None: the drawing does not say); `ref` the event id of the stored
    object it was drawn from (None: drawn new). A polygon's x, y, w, h are its bounding box.
    """
    kind: str                                         # 'box' or 'polygon'
    label: str | None
    x: float
    y: float
    w: float
    h: float
    points: tuple[tuple[float, float], ...] | None = None
    ref: int | None = None


def polygon_shape(points, *, label: str | None, ref: int | None = None) -> Shape:
    """A polygon Shape with its bounding box worked out from `points` ([[x, y], ...] pixels)."""
    points = tuple((round(float(px), DIGITS), round(float(py), DIGITS)) for px, py in points)
    xs, ys = [p[0] for p in points] or [0.0], [p[1] for p in points] or [0.0]
    return Shape("polygon", label, min(xs), min(ys), round(max(xs) - min(xs), DIGITS),
                 round(max(ys) - min(ys), DIGITS), points, ref)


def display_scale(width: int, height: int, *, fit: tuple[int, int] = (600, 560),
                  zoom: float = 1.0) -> float:
    """Canvas pixels per image pixel: the image fitted into `fit` (width, height), times `zoom`.
    Images smaller than `fit` grow by a whole factor, so each pixel stays a crisp square. The
    default width fits the Fix page's canvas column in a 1,400-pixel-wide window."""
    base = min(fit[0] / width, fit[1] / height)
    if base >= 1:
        base = math.floor(base)
    return base * zoom


def _fill(colour: str) -> str:
    """`colour` ('#rrggbb') at 15% opacity, for a shape's inside."""
    r, g, b = (int(colour[k:k + 2], 16) for k in (1, 3, 5))
    return f"rgba({r}, {g}, {b}, 0.15)"


def _fabric_box(shape: Shape, scale: float, colour: str, *, stroke: int, font: int) -> dict:
    return {"type": "LabeledRect", "label": shape.label or "", "fontSize": font,
            "left": shape.x * scale, "top": shape.y * scale,
            "width": shape.w * scale, "height": shape.h * scale,
            "originX": "left", "originY": "top", "scaleX": 1, "scaleY": 1, "angle": 0,
            "stroke": colour, "strokeWidth": stroke, "strokeUniform": True, "fill": _fill(colour),
            "lockRotation": True, "strokeDashOffset": shape.ref or 0}


def _fabric_polygon(shape: Shape, scale: float, colour: str, *, stroke: int) -> dict:
    points = [{"x": px * scale, "y": py * scale} for px, py in shape.points]
    return {"type": "Polygon", "points": points,
            "left": (shape.x + shape.w / 2) * scale, "top": (shape.y + shape.h / 2) * scale,
            "originX": "center", "originY": "center", "scaleX": 1, "scaleY": 1, "angle": 0,
            "stroke": colour, "strokeWidth": stroke, "strokeUniform": True, "fill": _fill(colour),
            "strokeDashOffset": shape.ref or 0}


def to_drawing(shapes, *, scale: float, colours: dict[str, str], stroke: int = 2,
               font: int = 13) -> dict:
    """The canvas's `initial_drawing` for `shapes`: boxes as labelled rectangles, polygons as
    polygons, in their class colour (`colours`: class name → '#rrggbb')."""
    objects = []
    for shape in shapes:
        colour = colours.get(shape.label or "", "#31333f")
        if shape.kind == "polygon":
            objects.append(_fabric_polygon(shape, scale, colour, stroke=stroke))
        else:
            objects.append(_fabric_box(shape, scale, colour, stroke=stroke, font=font))
    return {"objects": objects}


_ORIGIN = {"left": 0.0, "top": 0.0, "center": 0.5, "right": 1.0, "bottom": 1.0}


def _ref(obj: dict) -> int | None:
    value = obj.get("strokeDashOffset") or 0
    return int(round(value)) if value > 0 else None


def _box_from(obj: dict, scale: float) -> Shape:
    """As `CanvasResult.boxes` reads a rectangle: its origin corner, scaled size, no stroke."""
    w = obj.get("width", 0) * obj.get("scaleX", 1)
    h = obj.get("height", 0) * obj.get("scaleY", 1)
    left = obj.get("left", 0) - _ORIGIN[obj.get("originX", "left")] * w
    top = obj.get("top", 0) - _ORIGIN[obj.get("originY", "top")] * h
    return Shape("box", obj.get("label") or None, round(left / scale, DIGITS),
                 round(top / scale, DIGITS), round(w / scale, DIGITS), round(h / scale, DIGITS),
                 None, _ref(obj))


def _polygon_centre(obj: dict, width: float, height: float) -> tuple[float, float]:
    """Where Fabric puts a polygon's centre: its origin point moved by half its outer size
    (stroke included, as Fabric's `_getTransformedDimensions`), turned by its angle."""
    sx, sy, stroke = obj.get("scaleX", 1), obj.get("scaleY", 1), obj.get("strokeWidth", 0) or 0
    if obj.get("strokeUniform"):
        outer_w, outer_h = width * sx + stroke, height * sy + stroke
    else:
        outer_w, outer_h = (width + stroke) * sx, (height + stroke) * sy
    dx = (0.5 - _ORIGIN[obj.get("originX", "left")]) * outer_w
    dy = (0.5 - _ORIGIN[obj.get("originY", "top")]) * outer_h
    turn = math.radians(obj.get("angle", 0) or 0)
    return (obj.get("left", 0) + dx * math.cos(turn) - dy * math.sin(turn),
            obj.get("top", 0) + dx * math.sin(turn) + dy * math.cos(turn))


def _polygon_from(obj: dict, scale: float, label: str | None) -> Shape:
    """Absolute vertices: each point relative to the points' box centre (Fabric's pathOffset),
    scaled, flipped and turned, around the object's centre; then canvas → image pixels."""
    raw = [(p["x"], p["y"]) for p in obj.get("points", [])]
    if not raw:
        return polygon_shape([], label=label, ref=_ref(obj))
    xs, ys = [p[0] for p in raw], [p[1] for p in raw]
    offset_x, offset_y = (min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2
    cx, cy = _polygon_centre(obj, max(xs) - min(xs), max(ys) - min(ys))
    sx = obj.get("scaleX", 1) * (-1 if obj.get("flipX") else 1)
    sy = obj.get("scaleY", 1) * (-1 if obj.get("flipY") else 1)
    turn = math.radians(obj.get("angle", 0) or 0)
    cos, sin = math.cos(turn), math.sin(turn)
    points = []
    for px, py in raw:
        dx, dy = (px - offset_x) * sx, (py - offset_y) * sy
        points.append(((cx + dx * cos - dy * sin) / scale, (cy + dx * sin + dy * cos) / scale))
    return polygon_shape(points, label=label, ref=_ref(obj))


def shapes_from_drawing(drawing: dict | None, *, scale: float,
                        classes_by_colour: dict[str, str]) -> tuple[list[Shape], list[str]]:
    """(shapes, notes) of a canvas drawing (`CanvasResult.json_data`), in image pixels.

    A box's class is its label; a polygon's, the class whose colour it is drawn in
    (`classes_by_colour`: '#rrggbb' → class name). Objects that are neither boxes nor polygons
    are left out with a note naming them.
    """
    shapes, notes = [], []
    for k, obj in enumerate((drawing or {}).get("objects", []), start=1):
        kind = obj.get("type", "")
        if kind in ("LabeledRect", "Rect", "rect"):
            shapes.append(_box_from(obj, scale))
        elif kind in ("Polygon", "polygon"):
            label = classes_by_colour.get(str(obj.get("stroke", "")).lower())
            shapes.append(_polygon_from(obj, scale, label))
        else:
            notes.append(f"object {k} on the canvas is a {kind or 'shape'} of no known kind: "
                         "only boxes and polygons are kept")
    return shapes, notes
