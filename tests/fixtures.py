"""The tiny made-for-purpose fixture set, generated into a folder at test time.

Each file name states its role. `write_good_images` and `write_broken_images` return the paths
they wrote; GOOD and BROKEN give what the catalog must record for each (worked out by hand from
how the files are built: sizes are the ones written, modes the ones Pillow reports on open).
"""
from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

EXIF_ORIENTATION = 0x0112

# name → (width, height, format, mode) as the catalog must store them (after EXIF rotation)
GOOD = {
    "ok_rgb.jpg": (64, 48, "JPEG", "RGB"),
    "ok_rgb.png": (64, 48, "PNG", "RGB"),
    "cmyk.jpg": (40, 30, "JPEG", "CMYK"),
    "grey16.png": (48, 40, "PNG", "I;16"),
    "palette.png": (50, 20, "PNG", "P"),
    "rgba.png": (30, 40, "PNG", "RGBA"),
    "exif_rotated_6.jpg": (32, 64, "JPEG", "RGB"),  # stored 64 x 32, orientation 6
}

# name → the start of the reason recorded in images.error
BROKEN = {
    "zero_bytes.jpg": "empty file (0 bytes)",
    "truncated.jpg": "truncated or damaged image data",
    "truncated.png": "truncated or damaged image data",
    "text_named.jpg": "not an image Pillow can read",
    "bomb.png": "too large to decode safely",
}

NON_UTF8_NAME = b"caf\xe9_latin1.png"  # 'café' in Latin-1: not valid UTF-8


def scene(width: int, height: int, *, seed: int = 0) -> Image.Image:
    """A deterministic RGB picture with coarse structure, so perceptual hashes are not flat."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)  # (rows, cols, RGB)
    image = Image.fromarray(blocks).resize((width, height), Image.Resampling.BILINEAR)
    ramp = np.linspace(0, 60, width, dtype=np.float64)[None, :, None]  # (1, W, 1) brightness ramp
    pixels = np.clip(np.asarray(image, np.float64) + ramp, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels)


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A 1-pixel PNG whose header declares width x height: Pillow refuses it on open."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grey
    pixels = zlib.compress(b"\x00\x00")  # one row: filter byte + one pixel
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", pixels)
            + _png_chunk(b"IEND", b""))


def exif_rotated_jpeg(orientation: int = 6) -> bytes:
    """A 64 x 32 JPEG tagged with `orientation` (6: display rotated 90 degrees clockwise)."""
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    return encode(scene(64, 32, seed=6), "JPEG", quality=90, exif=exif.tobytes())


def _grey16() -> Image.Image:
    ramp = np.linspace(0, 65535, 48 * 40).reshape(40, 48).astype(np.uint16)  # (H, W)
    return Image.fromarray(ramp)


def good_image_bytes() -> dict[str, bytes]:
    """The readable fixture images by name (see GOOD)."""
    rgb = scene(64, 48)
    return {
        "ok_rgb.jpg": encode(rgb, "JPEG", quality=90),
        "ok_rgb.png": encode(rgb, "PNG"),
        "cmyk.jpg": encode(scene(40, 30, seed=1).convert("CMYK"), "JPEG", quality=90),
        "grey16.png": encode(_grey16(), "PNG"),
        "palette.png": encode(scene(50, 20, seed=2).convert("P", palette=Image.Palette.ADAPTIVE),
                              "PNG"),
        "rgba.png": encode(scene(30, 40, seed=3).convert("RGBA"), "PNG"),
        "exif_rotated_6.jpg": exif_rotated_jpeg(6),
    }


def broken_image_bytes() -> dict[str, bytes]:
    """The unreadable fixture files by name (see BROKEN)."""
    jpeg = encode(scene(64, 48, seed=4), "JPEG", quality=90)
    png = encode(scene(64, 48, seed=5), "PNG")
    return {
        "zero_bytes.jpg": b"",
        "truncated.jpg": jpeg[: len(jpeg) // 2],
        "truncated.png": png[: len(png) // 2],
        "text_named.jpg": b"this is a text file, not a JPEG\n",
        "bomb.png": bomb_png(),
    }


def write_files(folder: Path, files: dict[str, bytes]) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return {name: folder / name for name in files}


def write_good_images(folder: Path) -> dict[str, Path]:
    return write_files(folder, good_image_bytes())


def write_broken_images(folder: Path) -> dict[str, Path]:
    return write_files(folder, broken_image_bytes())


def write_non_utf8_name(folder: Path) -> bytes:
    """A readable 16 x 16 PNG under a Latin-1 (non-UTF-8) file name; returns its full bytes path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = os.fsencode(folder) + b"/" + NON_UTF8_NAME
    with open(path, "wb") as handle:
        handle.write(encode(scene(16, 16, seed=7), "PNG"))
    return path


def write_png(path: Path, width: int, height: int, *, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode(scene(width, height, seed=seed), "PNG"))
    return path


def open_test_catalog(folder: Path):
    """A fresh catalog file in `folder` (a test's tmp_path)."""
    from core import catalog

    return catalog.open_catalog(folder / "catalog.duckdb", program="pytest")


def table_counts(con) -> dict[str, int]:
    """Rows per catalog table: what an ingest added."""
    tables = ["datasets", "images", "file_events", "classes", "annotators", "label_events"]
    return {t: con.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0] for t in tables}


VOC_OBJECT = ("<object><name>{}</name><bndbox><xmin>{}</xmin><ymin>{}</ymin><xmax>{}</xmax>"
              "<ymax>{}</ymax></bndbox></object>")


def voc_xml(filename: str, boxes: list[tuple]) -> str:
    """Pascal VOC XML for `filename` with boxes (name, xmin, ymin, xmax, ymax)."""
    objects = "".join(VOC_OBJECT.format(*box) for box in boxes)
    return f"<annotation><filename>{filename}</filename>{objects}</annotation>"
