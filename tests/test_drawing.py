"""Canvas drawings (core.drawing): shapes to Fabric.js JSON and back, in image pixels. The Fabric
objects below were captured from the drawable canvas in Chromium (drawn, moved and resized with
the mouse), so the conversions are checked against what the browser really sends."""
from __future__ import annotations

import pytest

from core.drawing import Shape, display_scale, polygon_shape, shapes_from_drawing, to_drawing

COLOURS = {"RBC": "#d62728", "WBC": "#2ca02c"}
BY_COLOUR = {c: n for n, c in COLOURS.items()}

# a labelled box drawn from (20, 29.22) 100 x 60, moved by (+150, +90), resized by its corner
MOVED_RESIZED_BOX = {"type": "LabeledRect", "left": 170, "top": 119.2188, "width": 100,
                     "height": 60, "scaleX": 1.2867, "scaleY": 1.2867, "angle": 0,
                     "originX": "left", "originY": "top", "strokeWidth": 2, "strokeUniform": True,
                     "strokeDashOffset": 0, "label": "WBC", "stroke": "#d62728"}
# a polygon closed after clicks at (300, 39.22), (380, 59.22), (350, 119.22): Fabric centres it
DRAWN_POLYGON = {"type": "Polygon", "left": 340, "top": 79.2188, "width": 80, "height": 80,
                 "scaleX": 1, "scaleY": 1, "angle": 0, "originX": "center", "originY": "center",
                 "strokeWidth": 2, "strokeUniform": False, "strokeDashOffset": 0, "stroke": "#2ca02c",
                 "points": [{"x": 300, "y": 39.21875}, {"x": 380, "y": 59.21875},
                            {"x": 350, "y": 119.21875}]}


@pytest.mark.parametrize("size, zoom, expected", [
    ((32, 32), 1, 17),          # CIFAR: enlarged by a whole factor, pixels stay squares
    ((32, 32), 2, 34),
    ((640, 480), 1, 0.9375),    # BCCD: fitted into 600 x 560
    ((640, 480), 2, 1.875),     # zoomed in: the canvas column scrolls
    ((300, 500), 1, 1),         # fits: shown as it is
    ((4000, 3000), 1, 0.15)])
def test_display_scale_fits_and_zooms(size, zoom, expected):
    assert display_scale(*size, zoom=zoom) == pytest.approx(expected)


@pytest.mark.parametrize("scale", [16, 1, 0.9375, 0.15])
def test_to_drawing_round_trips_through_shapes_from_drawing(scale):
    shapes = [Shape("box", "RBC", 12.5, 30.25, 40, 20.75, None, 7),
              polygon_shape([[10, 10], [50, 12.5], [30, 44]], label="WBC", ref=9),
              Shape("box", "WBC", 0, 0, 1, 1, None, None)]
    drawing = to_drawing(shapes, scale=scale, colours=COLOURS)
    back, notes = shapes_from_drawing(drawing, scale=scale, classes_by_colour=BY_COLOUR)
    assert notes == []
    assert back == shapes


def test_to_drawing_box_has_top_left_origin_and_ref():
    (box,) = to_drawing([Shape("box", "RBC", 10, 20, 30, 40, None, 123)], scale=2,
                        colours=COLOURS)["objects"]
    assert (box["type"], box["left"], box["top"], box["width"], box["height"]) == \
        ("LabeledRect", 20, 40, 60, 80)
    assert (box["originX"], box["originY"], box["strokeDashOffset"], box["label"],
            box["stroke"]) == ("left", "top", 123, "RBC", "#d62728")


def test_shapes_from_drawing_reads_moved_and_resized_box():
    (box,), _ = shapes_from_drawing({"objects": [MOVED_RESIZED_BOX]}, scale=1,
                                    classes_by_colour=BY_COLOUR)
    assert box == Shape("box", "WBC", 170, 119.22, 128.67, 77.2, None, None)


def test_shapes_from_drawing_scales_to_image_pixels():
    (box,), _ = shapes_from_drawing({"objects": [MOVED_RESIZED_BOX]}, scale=2,
                                    classes_by_colour=BY_COLOUR)
    assert (box.x, box.y, box.w, box.h) == (85, 59.61, 64.33, 38.6)  # 128.67 / 2, to 1/100


def test_shapes_from_drawing_reads_drawn_polygon_at_its_clicks():
    (polygon,), _ = shapes_from_drawing({"objects": [DRAWN_POLYGON]}, scale=1,
                                        classes_by_colour=BY_COLOUR)
    assert polygon.points == ((300, 39.22), (380, 59.22), (350, 119.22))
    assert (polygon.label, polygon.kind, polygon.ref) == ("WBC", "polygon", None)
    assert (polygon.x, polygon.y, polygon.w, polygon.h) == (300, 39.22, 80, 80)


def test_shapes_from_drawing_polygon_with_left_top_origin_and_scale():
    # points' box 100..160 x 100..170; stroke 2 not uniform: Fabric's outer box is 62 x 72,
    # its top-left at (99, 99); scaled 2x about that corner the centre is (161, 171)
    obj = {"type": "Polygon", "left": 99, "top": 99, "originX": "left", "originY": "top",
           "scaleX": 2, "scaleY": 2, "strokeWidth": 2, "strokeUniform": False, "angle": 0,
           "stroke": "#d62728", "strokeDashOffset": 5,
           "points": [{"x": 100, "y": 100}, {"x": 160, "y": 110}, {"x": 130, "y": 170}]}
    (polygon,), _ = shapes_from_drawing({"objects": [obj]}, scale=1, classes_by_colour=BY_COLOUR)
    assert polygon.points == ((101, 101), (221, 121), (161, 241))
    assert (polygon.label, polygon.ref) == ("RBC", 5)


def test_shapes_from_drawing_notes_other_objects():
    drawing = {"objects": [{"type": "Circle", "left": 1, "top": 1, "radius": 3}, DRAWN_POLYGON]}
    shapes, notes = shapes_from_drawing(drawing, scale=1, classes_by_colour=BY_COLOUR)
    assert [s.kind for s in shapes] == ["polygon"]
    assert notes == ["object 1 on the canvas is a Circle of no known kind: only boxes and "
                     "polygons are kept"]


def test_shapes_from_drawing_polygon_in_unknown_colour_has_no_label():
    (polygon,), _ = shapes_from_drawing({"objects": [{**DRAWN_POLYGON, "stroke": "#000000"}]},
                                        scale=1, classes_by_colour=BY_COLOUR)
    assert polygon.label is None
