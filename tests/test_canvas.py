"""ui.canvas helpers outside a running app: the marks drawn into the canvas's background."""
from __future__ import annotations

import io

from PIL import Image

from core.edits import Label
from ui.canvas import FLAG_COLOUR, background_image, flag_markers


def box(x, y, w, h, flag=None) -> Label:
    return Label(event_id=1, object_id=1, annotator_id=1, annotator="cells/given",
                 annotator_kind="import", kind="box", class_id=0, class_name="RBC", x=x, y=y,
                 w=w, h=h, points=None, source="import", score=None, flag=flag)


def test_boxes_without_area_are_ringed_with_their_flag(tmp_path):
    """BCCD's two 0 x 0 boxes cannot be seen on the canvas: a red ring shows where they are."""
    flagged = [box(30, 20, 0, 0, "zero-area box (0 x 0 px)"),
               box(5, 5, -3, 4, "inverted box (-3 x 4 px: it ends before it starts)")]
    seen = [box(2, 2, 10, 10), box(0, 0, 8, 8, "clipped to the image (was -2, 0, 10, 8)")]
    markers = flag_markers(flagged + seen)
    assert [m[3] for m in markers] == ["RBC: zero-area box (0 x 0 px)",
                                       "RBC: inverted box (-3 x 4 px: it ends before it starts)"]
    Image.new("RGB", (200, 100), "white").save(tmp_path / "a.png")
    edge = flag_markers([box(196, 20, 0, 0, "zero-area box (0 x 0 px)")])
    drawn = Image.open(io.BytesIO(background_image(str(tmp_path), "a.png", None, scale=2,
                                                   overlays=markers[:1] + edge))).convert("RGB")
    red = tuple(int(FLAG_COLOUR[k:k + 2], 16) for k in (1, 3, 5))

    def reddish(xs, y) -> bool:
        return any(sum(abs(a - b) for a, b in zip(drawn.getpixel((x, y)), red)) < 60 for x in xs)

    assert drawn.getpixel((60, 40)) == (255, 255, 255)  # the centre stays clear
    assert reddish(range(50, 71), 40)  # the ring, about 9 px round (60, 40)
    assert reddish(range(80, 240), 40)  # its caption, to the right
    assert reddish(range(220, 378), 40)  # at the right edge (392, 40): caption on the left
