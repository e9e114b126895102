"""The bad-input corpus: broken images and annotation files of every supported format, each file
named for what is wrong with it, written beside good files that must still be ingested.

Entry point: `write_corpus(out)` → {case name: `Case`}; also `python -m tests.badcorpus OUT`,
which writes the corpus and prints one line per case. Each case is one ingest: a source folder,
its format and annotation file, and what the catalog must hold afterwards (`Case`'s fields).
"""
from __future__ import annotations

import json
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from tests.fixtures import (NON_UTF8_NAME, bomb_png, encode, exif_rotated_jpeg, scene, voc_xml,
                            write_files, write_non_utf8_name)


@dataclass(frozen=True)
class Bad:
    """One thing the catalog must report: `file` (a name the recorded file ends with), the
    `location` within it (a prefix, None: the file as a whole) and words of the `reason`."""
    file: str
    reason: str
    location: str | None = None


@dataclass(frozen=True)
class Case:
    """One ingest of the corpus. `unreadable`: image files recorded as unreadable (name → words
    of the reason); `readable`: image files that must be ingested as readable; `problems`:
    annotation problems; `labels`: the label events the good rows beside them must give;
    `classes`: a fixed class list (None: the format's own)."""
    fmt: str
    source: Path
    labels_path: Path | None = None
    readable: tuple[str, ...] = ()
    unreadable: dict = field(default_factory=dict)
    problems: tuple[Bad, ...] = ()
    labels: int = 0
    classes: tuple[str, ...] | None = None


W, H = 64, 48  # size of every good image of the annotation cases


def _png(width: int = W, height: int = H, *, seed: int = 0) -> bytes:
    return encode(scene(width, height, seed=seed), "PNG")


def _half(data: bytes) -> bytes:
    return data[: len(data) // 2]


GOOD = ("good.png", "second.png")  # the images beside each annotation file


def _good_images(folder: Path) -> Path:
    """`folder`/src holding the GOOD images; returns it."""
    write_files(folder / "src", {name: _png(seed=k) for k, name in enumerate(GOOD)})
    return folder / "src"


def _whole_file_cases(fmt: str, folder: Path, reasons: dict[str, str]) -> dict[str, Case]:
    """One case per annotation file (name → words of the reason) that is unusable as a whole:
    its images still go in."""
    return {f"{fmt}_{Path(name).stem}": Case(fmt, folder / "src", folder / name, readable=GOOD,
                                             problems=(Bad(name, reason),))
            for name, reason in reasons.items()}


# ---------------------------------------------------------------- images


def _odd_but_valid() -> dict[str, bytes]:
    """Unusual images that are not broken: each must be ingested with its facts."""
    grey16 = np.linspace(0, 65535, 24 * 16).reshape(16, 24).astype(np.uint16)  # (H, W)
    bad_exif = encode(scene(W, H, seed=9), "JPEG", quality=90)
    segment = b"Exif\x00\x00" + b"MM\x00\x2a\x00\x00\xff\xf0" + b"\xde\xad" * 20  # IFD past end
    bad_exif = bad_exif[:2] + b"\xff\xe1" + (len(segment) + 2).to_bytes(2, "big") + segment \
        + bad_exif[2:]
    return {
        "one_by_one.png": _png(1, 1),
        "huge_aspect_4000x1.png": _png(4000, 1, seed=1),
        "huge_aspect_1x4000.png": _png(1, 4000, seed=2),
        "cmyk.jpg": encode(scene(40, 30, seed=3).convert("CMYK"), "JPEG", quality=90),
        "grey_16bit.png": encode(Image.fromarray(grey16), "PNG"),
        "i16.tif": encode(Image.fromarray(grey16).convert("I;16"), "TIFF"),
        "palette.png": encode(scene(50, 20, seed=4).convert("P", palette=Image.Palette.ADAPTIVE),
                              "PNG"),
        "alpha_rgba.png": encode(scene(30, 40, seed=5).convert("RGBA"), "PNG"),
        "grey_alpha_la.png": encode(scene(30, 40, seed=6).convert("LA"), "PNG"),
        "exif_rotated_6.jpg": exif_rotated_jpeg(6),
        "bad_exif.jpg": bad_exif,
        "ok.gif": encode(scene(W, H, seed=7), "GIF"),
        "ok.webp": encode(scene(W, H, seed=8), "WEBP"),
        "ok.bmp": encode(scene(W, H, seed=10), "BMP"),
        "ok.tif": encode(scene(W, H, seed=11), "TIFF"),
    }


def _broken() -> dict[str, tuple[bytes, str]]:
    """Broken images: name → (bytes, words of the reason the catalog must give)."""
    damaged = "damaged"  # 'truncated or damaged image data' or 'unknown or damaged format'
    formats = {"jpeg.jpg": "JPEG", "png.png": "PNG", "gif.gif": "GIF", "webp.webp": "WEBP",
               "bmp.bmp": "BMP", "tiff.tif": "TIFF"}
    broken = {f"truncated_{name}": (_half(encode(scene(W, H, seed=12), fmt)), damaged)
              for name, fmt in formats.items()}
    png = _png(seed=13)
    broken |= {
        "zero_bytes.jpg": (b"", "empty file"),
        "text_named.jpg": (b"this is a text file, not a JPEG\n", "not an image"),
        "html_named.png": (b"<!DOCTYPE html><html><body>404 Not Found</body></html>\n",
                           "not an image"),
        "decompression_bomb.png": (bomb_png(), "too large to decode safely"),
        "png_signature_only.png": (png[:8], damaged),
        "png_bad_checksum.png": (png[:29] + bytes([png[29] ^ 0xFF]) + png[30:], damaged),
        "jpeg_markers_only.jpg": (b"\xff\xd8\xff\xd9", damaged),
        "random_bytes.webp": (bytes(np.random.default_rng(0).integers(0, 256, 512, np.uint8)),
                              "not an image"),
    }
    return broken


def _write_links(folder: Path, outside: Path) -> None:
    """A symlink loop, a dangling link, and a link to a good image outside the source."""
    (folder / "symlink_loop.jpg").symlink_to("symlink_loop.jpg")
    (folder / "symlink_dangling.png").symlink_to(folder / "nowhere.png")
    outside.mkdir(parents=True, exist_ok=True)
    (outside / "target.png").write_bytes(_png(seed=14))
    (folder / "symlink_outside_root.png").symlink_to(outside / "target.png")


def images_case(out: Path) -> Case:
    """Every broken-image kind beside the odd-but-valid ones, in one class folder."""
    source = out / "images" / "src"
    folder = source / "mixed"
    valid = write_files(folder, _odd_but_valid())
    broken = _broken()
    write_files(folder, {name: data for name, (data, _) in broken.items()})
    unreadable = {f"mixed/{name}": reason for name, (_, reason) in broken.items()}
    (folder / "folder_named.jpg").mkdir()
    locked = folder / "unreadable_permissions.png"
    locked.write_bytes(_png(seed=15))
    locked.chmod(0o000)
    readable = [f"mixed/{name}" for name in valid] + ["mixed/symlink_outside_root.png"]
    if os.geteuid() == 0:  # root reads any file
        readable.append("mixed/unreadable_permissions.png")
    else:
        unreadable["mixed/unreadable_permissions.png"] = "permission denied"
    _write_links(folder, out / "images" / "outside")
    unreadable |= {"mixed/symlink_loop.jpg": "symbolic link loop",
                   "mixed/symlink_dangling.png": "No such file"}
    write_non_utf8_name(folder)
    readable.append("mixed/" + NON_UTF8_NAME.decode("utf-8", "backslashreplace"))
    return Case("imagefolder", source, readable=tuple(readable), unreadable=unreadable,
                labels=len(readable) + len(unreadable))


def only_broken_case(out: Path) -> Case:
    """A folder holding nothing readable: the command line must fail (exit 1)."""
    source = out / "only_broken" / "src"
    write_files(source / "cls", {"zero_bytes.jpg": b"", "text_named.png": b"not an image\n"})
    return Case("imagefolder", source, unreadable={"cls/zero_bytes.jpg": "empty file",
                                                   "cls/text_named.png": "not an image"},
                labels=2)


# ---------------------------------------------------------------- COCO


def _coco(images, annotations, categories=({"id": 1, "name": "cell"},)) -> dict:
    return {"images": list(images), "annotations": list(annotations),
            "categories": list(categories)}


def _coco_rows() -> tuple[dict, list[Bad]]:
    """A COCO document with one good box and one bad entry of each kind."""
    images = [{"id": 1, "file_name": "good.png", "width": W, "height": H},
              {"id": 2, "file_name": "../../etc/passwd", "width": W, "height": H},
              {"id": 3, "file_name": "folder_named.png"},
              {"file_name": "no_id.png"}]
    bad = [  # (annotation, words of the reason)
        ({"image_id": 1, "category_id": 7, "bbox": [1, 1, 5, 5]}, "unknown category_id 7"),
        ({"image_id": 1, "category_id": 1, "bbox": [500, 500, 5, 5]}, "outside"),
        ({"image_id": 1, "category_id": 1, "bbox": [5, 5, -4, 3]}, "inverted box"),
        ({"image_id": 1, "category_id": 1, "bbox": [float("nan"), 1, 2, 2]}, "finite"),
        ({"image_id": 1, "category_id": 1, "bbox": ["1", "x", 2, 2]}, "could not convert"),
        ({"image_id": 1, "category_id": 1, "bbox": [1, 2]}, "no bbox"),
        ({"image_id": 1, "category_id": 1, "segmentation": [["a", "b", "c", "d", "e", "f"]]},
         "could not convert"),
        ({"image_id": 2, "category_id": 1, "bbox": [1, 1, 5, 5]}, "not among the images"),
        ({"image_id": 3, "category_id": 1, "bbox": [1, 1, 5, 5]}, "not found in the source"),
        ({"image_id": 99, "category_id": 1, "bbox": [1, 1, 5, 5]}, "not among the images"),
        ({"category_id": 1, "bbox": [1, 1, 5, 5]}, "without image_id"),
        ("a string, not an object", "without image_id"),
        ({"image_id": 1, "category_id": [1], "bbox": [1, 1, 5, 5]}, "unknown category_id [1]"),
        ({"image_id": 1, "category_id": 1, "bbox": [10 ** 400, 1, 2, 2]}, "too large"),
    ]
    good = {"image_id": 1, "category_id": 1, "bbox": [2, 3, 10, 12]}
    annotations = [good] + [a for a, _ in bad]
    problems = [Bad("bad_rows.json", reason, f"annotations[{k + 1}]")
                for k, (_, reason) in enumerate(bad)]
    problems += [Bad("bad_rows.json", "outside the source folder", "images[1]"),
                 Bad("bad_rows.json", "image without id", "images[3]"),
                 Bad("bad_rows.json", "category without id", "categories[1]")]
    return _coco(images, annotations, [{"id": 1, "name": "cell"}, {"name": "nameless id"}]), \
        problems


def coco_cases(out: Path) -> dict[str, Case]:
    folder = out / "coco"
    (_good_images(folder) / "folder_named.png").mkdir()
    document, problems = _coco_rows()
    files = {
        "bad_rows.json": json.dumps(document).encode(),
        "malformed_json.json": b'{"images": [{"id": 1, "file_name": "good.png"',
        "missing_keys.json": json.dumps({"images": []}).encode(),
        "keys_not_lists.json": json.dumps({"images": {}, "annotations": 3,
                                           "categories": "x"}).encode(),
        "top_level_list.json": b"[]",
        "not_utf8.json": '{"images": [], "annotations": [], "categories": [{"id": 1, '
                         '"name": "caf\u00e9"}]}'.encode("latin-1"),
        "huge_number.json": b'{"images": [], "annotations": [], "categories": [{"id": '
                            + b"9" * 5000 + b', "name": "x"}]}',
        "deeply_nested.json": b"[" * 100_000 + b"]" * 100_000,
    }
    write_files(folder, files)
    whole = {"malformed_json.json": "malformed JSON", "missing_keys.json": "missing key",
             "keys_not_lists.json": "is not a list",
             "top_level_list.json": "expected a JSON object",
             "not_utf8.json": "malformed JSON", "huge_number.json": "malformed JSON",
             "deeply_nested.json": "malformed JSON"}
    cases = _whole_file_cases("coco", folder, whole)
    cases["coco_bad_rows"] = Case("coco", folder / "src", folder / "bad_rows.json",
                                  readable=GOOD, problems=tuple(problems),
                                  labels=2)  # the good box and the flagged inverted one
    return cases


# ---------------------------------------------------------------- Pascal VOC


def voc_case(out: Path) -> Case:
    source = _good_images(out / "voc")
    box = "<object><name>{}</name><bndbox>{}</bndbox></object>"
    files = {
        "good.xml": voc_xml("good.png", [("cell", 2, 3, 20, 30)]),
        "malformed_xml.xml": "<annotation><filename>good.png</filename><object>",
        "missing_size.xml": voc_xml("second.png", [("cell", 1, 1, 9, 9)]),  # no <size>: fine
        "unknown_class.xml": voc_xml("second.png", [("dragon", 1, 1, 9, 9)]),
        "inverted_box.xml": voc_xml("second.png", [("cell", 30, 30, 10, 10)]),
        "path_traversal.xml": voc_xml("../../etc/passwd", [("cell", 1, 1, 9, 9)]),
        "not_numbers.xml": "<annotation><filename>second.png</filename>" + box.format(
            "cell", "<xmin>a</xmin><ymin>1</ymin><xmax>9</xmax><ymax>9</ymax>") + "</annotation>",
        "missing_bndbox.xml": "<annotation><filename>second.png</filename><object><name>cell"
                              "</name></object></annotation>",
        "infinite.xml": voc_xml("second.png", [("cell", "inf", 1, 9, 9)]),
        "not_utf8.xml": b"<?xml version='1.0' encoding='utf-8'?><annotation><filename>caf\xe9"
                        b"</filename></annotation>",
        "empty.xml": b"",
    }
    write_files(source, {n: d if isinstance(d, bytes) else d.encode() for n, d in files.items()})
    problems = (Bad("malformed_xml.xml", "malformed XML"), Bad("empty.xml", "malformed XML"),
                Bad("not_utf8.xml", "malformed XML"),
                Bad("unknown_class.xml", "unknown class 'dragon'", "object 1"),
                Bad("inverted_box.xml", "inverted box", "object 1"),
                Bad("path_traversal.xml", "outside the source folder"),
                Bad("not_numbers.xml", "not a number", "object 1"),
                Bad("missing_bndbox.xml", "missing <bndbox>", "object 1"),
                Bad("infinite.xml", "finite", "object 1"))
    return Case("voc", source, readable=GOOD, problems=problems, labels=3,
                classes=("cell",))


# ---------------------------------------------------------------- YOLO


def yolo_cases(out: Path) -> dict[str, Case]:
    folder = out / "yolo"
    source = folder / "src"
    names = ["good", "out_of_range", "wrong_columns", "unknown_class_id", "not_numbers",
             "not_utf8", "nan"]
    write_files(source / "images", {f"{n}.png": _png(seed=k) for k, n in enumerate(names)})
    (source / "data.yaml").write_text("names: [cell, nucleus]\n")
    lines = {"good": b"0 0.5 0.5 0.25 0.25\n", "out_of_range": b"0 3.5 3.5 0.2 0.2\n",
             "wrong_columns": b"0 0.5 0.5 0.2\n", "unknown_class_id": b"7 0.5 0.5 0.2 0.2\n",
             "not_numbers": b"cell 0.5 0.5 0.2 0.2\n", "not_utf8": b"0 0.5 \xff\xfe 0.2\n",
             "nan": b"0 nan 0.5 0.2 0.2\n"}
    write_files(source / "labels", {f"{n}.txt": data for n, data in lines.items()})
    reasons = {"out_of_range": "outside", "wrong_columns": "expected 4 numbers",
               "unknown_class_id": "unknown class id 7", "not_numbers": "not numbers",
               "not_utf8": "cannot read", "nan": "finite"}
    problems = tuple(Bad(f"{n}.txt", r, None if n == "not_utf8" else "line 1")
                     for n, r in reasons.items())
    cases = {"yolo_bad_lines": Case("yolo", source, problems=problems, labels=1,
                                    readable=tuple(f"images/{n}.png" for n in names))}
    broken = folder / "broken_yaml"
    write_files(broken / "images", {"good.png": _png()})
    (broken / "data.yaml").write_text("names: [cell, nucleus\n  - : :\n")
    cases["yolo_malformed_yaml"] = Case(  # recorded against the source, naming data.yaml
        "yolo", broken, readable=("images/good.png",),
        problems=(Bad("broken_yaml", "data.yaml: malformed YAML"),))
    return cases


# ---------------------------------------------------------------- CSV


def csv_cases(out: Path) -> dict[str, Case]:
    folder = out / "csv"
    _good_images(folder)
    rows = ("image,label\n"
            "good.png,cat\n"
            "missing.png,cat\n"
            "../../etc/passwd,cat\n"
            "second.png,cat,extra\n"
            "second.png,\n"
            "/etc/hostname,dog\n"
            "second.png,c\x00at\n")
    files = {"bad_rows.csv": rows.encode(),
             "bad_encoding.csv": "image,label\ngood.png,caf\u00e9\n".encode("latin-1"),
             "missing_column.csv": b"image,class\ngood.png,cat\n",
             "empty.csv": b""}
    write_files(folder, files)
    problems = (Bad("bad_rows.csv", "not found in the source", "line 3"),
                Bad("bad_rows.csv", "outside the source folder", "line 4"),
                Bad("bad_rows.csv", "3 fields, expected 2", "line 5"),
                Bad("bad_rows.csv", "empty image or label", "line 6"),
                Bad("bad_rows.csv", "outside the source folder", "line 7"),
                Bad("bad_rows.csv", "control character", "line 8"))
    cases = _whole_file_cases("csv", folder, {"bad_encoding.csv": "cannot read as CSV",
                                              "missing_column.csv": "missing column",
                                              "empty.csv": "empty file"})
    cases["csv_bad_rows"] = Case("csv", folder / "src", folder / "bad_rows.csv", readable=GOOD,
                                 problems=problems, labels=1)
    return cases


# ---------------------------------------------------------------- Label Studio and CVAT


def _ls_task(image: str, results: list, **extra) -> dict:
    return {"data": {"image": image}, "annotations": [{"completed_by": 1, "result": results}],
            **extra}


def labelstudio_cases(out: Path) -> dict[str, Case]:
    folder = out / "labelstudio"
    _good_images(folder)
    box = {"type": "rectanglelabels", "value": {"x": 10, "y": 10, "width": 20, "height": 20,
                                                "rectanglelabels": ["cell"]}}
    tasks = [_ls_task("/data/upload/1/good.png", [box]),
             _ls_task("../../etc/passwd", [box]),
             _ls_task("missing.png", [box]),
             _ls_task("second.png", [{"type": "rectanglelabels", "value": {"x": "a"}}]),
             _ls_task("second.png", [{"type": "rectanglelabels"}]),
             {"data": "not an object"},
             "not a task",
             _ls_task("second.png", [{"type": "rectanglelabels", "original_width": W,
                                      "original_height": H, "value": {**box["value"],
                                                                      "rotation": math.nan}}]),
             _ls_task("second.png", [{"type": "rectanglelabels",
                                      "value": {**box["value"], "x": 10 ** 400}}])]
    files = {"bad_tasks.json": json.dumps(tasks).encode(),
             "malformed_json.json": b'[{"data": {"image": "good.png"}',
             "not_a_list.json": b'"just a string"'}
    write_files(folder, files)
    problems = (Bad("bad_tasks.json", "outside the source folder", "task[1]"),
                Bad("bad_tasks.json", "not found in the source", "task[2]"),
                Bad("bad_tasks.json", "no `rectanglelabels` list", "task[3]"),
                Bad("bad_tasks.json", "without `value`", "task[4]"),
                Bad("bad_tasks.json", "task without `data`", "task[5]"),
                Bad("bad_tasks.json", "not a JSON object", "task[6]"),
                Bad("bad_tasks.json", "`rotation` is not a finite number", "task[7]"),
                Bad("bad_tasks.json", "too large", "task[8]"))
    cases = _whole_file_cases("labelstudio", folder, {
        "malformed_json.json": "malformed JSON",
        "not_a_list.json": "expected a Label Studio export"})
    cases["labelstudio_bad_tasks"] = Case("labelstudio", folder / "src", folder / "bad_tasks.json",
                                          readable=GOOD, problems=problems, labels=1)
    return cases


def cvat_cases(out: Path) -> dict[str, Case]:
    folder = out / "cvat"
    _good_images(folder)
    shapes = ('<image name="good.png"><box label="cell" xtl="2" ytl="3" xbr="20" ybr="30"/>'
              '</image>'
              '<image name="../../etc/passwd"><box label="cell" xtl="2" ytl="3" xbr="20" '
              'ybr="30"/></image>'
              '<image name="second.png"><box label="cell" xtl="a" ytl="3" xbr="20" ybr="30"/>'
              '<polygon label="cell" points="1,2;x,y"/><box xtl="1" ytl="1" xbr="5" ybr="5"/>'
              '<box label="cell" xtl="1" ytl="1" xbr="5" ybr="5" rotation="nan"/></image>'
              '<image name="missing.png"/><image/>')
    files = {"bad_shapes.xml": f"<annotations>{shapes}</annotations>".encode(),
             "malformed_xml.xml": b"<annotations><image name='good.png'>",
             "wrong_root.xml": b"<annotation><filename>good.png</filename></annotation>"}
    write_files(folder, files)
    problems = (Bad("bad_shapes.xml", "outside the source folder", "<image> 2"),
                Bad("bad_shapes.xml", "is not a number", "<image> 3"),
                Bad("bad_shapes.xml", "are not x,y", "<image> 3"),
                Bad("bad_shapes.xml", "without a label", "<image> 3"),
                Bad("bad_shapes.xml", "rotation='nan' is not a finite number", "<image> 3"),
                Bad("bad_shapes.xml", "not found in the source", "<image> 4"),
                Bad("bad_shapes.xml", "without a name", "<image> 5"))
    cases = _whole_file_cases("cvat", folder, {"malformed_xml.xml": "malformed XML",
                                               "wrong_root.xml": "expected CVAT XML"})
    cases["cvat_bad_shapes"] = Case("cvat", folder / "src", folder / "bad_shapes.xml",
                                    readable=GOOD, problems=problems, labels=1)
    return cases


def write_corpus(out: str | Path) -> dict[str, Case]:
    """Write every case below `out` (an empty folder); return them by name."""
    out = Path(out)
    cases = {"images_mixed": images_case(out), "images_only_broken": only_broken_case(out),
             "voc_bad_files": voc_case(out)}
    for make in (coco_cases, yolo_cases, csv_cases, labelstudio_cases, cvat_cases):
        cases |= make(out)
    return cases


def kinds(cases: dict[str, Case]) -> int:
    """How many kinds of bad input the corpus holds (files and rows)."""
    return sum(len(case.unreadable) + len(case.problems) for case in cases.values())


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m tests.badcorpus OUT", file=sys.stderr)
        return 2
    cases = write_corpus(argv[0])
    for name, case in cases.items():
        labels = f" --labels {case.labels_path}" if case.labels_path else ""
        print(f"{name}: python -m core ingest {case.source} --format {case.fmt}{labels}")
    print(f"{kinds(cases)} kinds of bad input in {len(cases)} cases")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
