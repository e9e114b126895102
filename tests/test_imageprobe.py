"""Tests for core.imageprobe: the fast decoding and resizing paths give exactly what Pillow's
`Image.open` and `Image.resize` give, so the stored hashes equal imagehash's."""
from __future__ import annotations

import io
import struct
import zlib

import imagehash
import numpy as np
import pytest
from PIL import Image, ImageOps

from core import imageprobe
from core.imageprobe import ProbeResult, probe_batch, probe_files, resize_like_pillow
from tests.fixtures import broken_image_bytes, encode, exif_rotated_jpeg, good_image_bytes, scene

LANCZOS = Image.Resampling.LANCZOS


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def split_idat_png(image: Image.Image, *, text_between: bool = False) -> bytes:
    """`image` as a PNG whose pixels are split over two IDAT chunks (a tEXt between them when
    `text_between`: Pillow then reads the first only and finds the file truncated)."""
    data = encode(image, "PNG")
    pos, chunks = 8, []
    while pos < len(data):
        length, kind = struct.unpack_from(">I4s", data, pos)
        chunks.append((kind, data[pos + 8:pos + 8 + length]))
        pos += 12 + length
    pixels = b"".join(p for k, p in chunks if k == b"IDAT")
    middle = [png_chunk(b"tEXt", b"k\x00v")] if text_between else []
    return (data[:8] + png_chunk(b"IHDR", chunks[0][1]) + png_chunk(b"IDAT", pixels[:40])
            + b"".join(middle) + png_chunk(b"IDAT", pixels[40:]) + png_chunk(b"IEND", b""))


def with_interlace_flag(png: bytes) -> bytes:
    """`png` with its header saying Adam7 interlacing (Pillow then reads the pixels otherwise)."""
    header = bytearray(png[16:29])
    header[12] = 1
    return png[:8] + png_chunk(b"IHDR", bytes(header)) + png[33:]


def variant_files() -> dict[str, bytes]:
    """Files of every shape the fast paths take or hand over to `Image.open`."""
    rgb32, big = scene(32, 32, seed=11), scene(300, 220, seed=12)
    files = {
        "rgb_32x32.jpg": encode(rgb32, "JPEG", quality=75),
        "grey_32x32.jpg": encode(rgb32.convert("L"), "JPEG", quality=75),
        "progressive_64x48.jpg": encode(scene(64, 48, seed=13), "JPEG", progressive=True),
        "subsampled_300x220.jpg": encode(big, "JPEG", quality=60, subsampling=2),
        "icc_profile.jpg": encode(rgb32, "JPEG", icc_profile=b"\x00" * 200),
        "exif_orientation_1.jpg": encode(rgb32, "JPEG", exif=Image.Exif().tobytes()),
        "exif_rotated_6.jpg": exif_rotated_jpeg(6),
        "rgb_32x32.png": encode(rgb32, "PNG"),
        "grey_32x32.png": encode(rgb32.convert("L"), "PNG"),
        "grey_alpha.png": encode(rgb32.convert("LA"), "PNG"),
        "rgba_300x220.png": encode(big.convert("RGBA"), "PNG"),
        "interlace_flag.png": with_interlace_flag(encode(rgb32, "PNG")),
        "split_idat.png": split_idat_png(rgb32),
        "split_idat_text_between.png": split_idat_png(rgb32, text_between=True),
        "text_chunk.png": encode(rgb32, "PNG", pnginfo=_text_info()),
        "palette.png": encode(rgb32.convert("P"), "PNG"),
        "gif.gif": encode(rgb32, "GIF"),
        "webp.webp": encode(rgb32, "WEBP"),
    }
    return files | good_image_bytes() | broken_image_bytes()


def _text_info():
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("comment", "a text chunk: Pillow's parser reads it")
    return info


def pillow_open(data: bytes) -> Image.Image | None:
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
        return image
    except Exception:  # noqa: BLE001 — unreadable for Pillow too
        return None


@pytest.mark.parametrize("name", sorted(variant_files()))
def test_decode_plain_same_image_as_image_open_or_none(name):
    data = variant_files()[name]
    fast, reference = imageprobe._decode_plain(data), pillow_open(data)
    if fast is None:
        return  # handed over to Image.open
    assert reference is not None
    assert (fast.format, fast.mode, fast.size) == (reference.format, reference.mode, reference.size)
    assert fast.tobytes() == reference.tobytes()


@pytest.mark.parametrize("name", ["rgb_32x32.jpg", "grey_32x32.jpg", "progressive_64x48.jpg",
                                  "subsampled_300x220.jpg", "rgb_32x32.png", "grey_32x32.png",
                                  "grey_alpha.png", "rgba_300x220.png", "split_idat.png"])
def test_decode_plain_takes_plain_files(name):
    assert imageprobe._decode_plain(variant_files()[name]) is not None


@pytest.mark.parametrize("name", ["icc_profile.jpg", "exif_orientation_1.jpg",
                                  "exif_rotated_6.jpg", "split_idat_text_between.png",
                                  "text_chunk.png", "palette.png", "interlace_flag.png",
                                  "gif.gif", "truncated.jpg",
                                  "truncated.png"])
def test_decode_plain_hands_over_files_that_need_pillow(name):
    assert imageprobe._decode_plain(variant_files()[name]) is None


def test_probe_files_hashes_equal_imagehash(tmp_path):
    files = {n: d for n, d in variant_files().items() if pillow_open(d) is not None}
    paths = []
    for name, data in sorted(files.items()):
        (tmp_path / name).write_bytes(data)
        paths.append(str(tmp_path / name))
    for result in probe_files(paths, [None] * len(paths)):
        with Image.open(result.path) as image:
            upright = ImageOps.exif_transpose(image)
            assert (result.width, result.height) == upright.size, result.path
            assert result.phash == int(str(imagehash.phash(upright)), 16), result.path
            assert result.dhash == int(str(imagehash.dhash(upright)), 16), result.path


def test_probe_files_truncated_scan_data_gets_pillow_reason(tmp_path):
    data = encode(scene(32, 32), "JPEG")[:-60]  # header whole, pixels cut short
    assert imageprobe._jpeg_header(data) is not None
    (tmp_path / "truncated_scan_32x32.jpg").write_bytes(data)
    [result] = probe_files([str(tmp_path / "truncated_scan_32x32.jpg")], [None])
    assert result.error.startswith("truncated or damaged image data: image file is truncated")
    assert (result.bytes, result.phash, result.width) == (len(data), None, None)


def test_probe_batch_columns_match_probe_files(tmp_path):
    paths = []
    for name, data in sorted(variant_files().items()):
        (tmp_path / name).write_bytes(data)
        paths.append(str(tmp_path / name))
    known = [None] * len(paths)
    batch = probe_batch(paths, known)
    assert len(batch) == len(paths)
    assert batch.results() == probe_files(paths, known)
    assert all(isinstance(r, ProbeResult) for r in batch.results())


def test_probe_batch_known_sha_marks_unchanged(tmp_path):
    path = tmp_path / "same_bytes.png"
    path.write_bytes(encode(scene(32, 32), "PNG"))
    [first] = probe_files([str(path)], [None])
    [again] = probe_files([str(path)], [first.sha256])
    assert again.unchanged and again.phash is None and again.sha256 == first.sha256


@pytest.mark.parametrize(("shape", "size"), [
    ((32, 32), (9, 8)), ((32, 32), (32, 32)), ((480, 640), (32, 32)), ((480, 640), (9, 8)),
    ((700, 355), (32, 32)),   # height shrinks over twice as much: Pillow passes vertically first
    ((19, 13), (9, 8)), ((3, 17), (8, 9)), ((10, 10), (20, 10)), ((1, 1), (9, 8))])
def test_resize_like_pillow_equals_image_resize(shape, size):
    grey = np.random.default_rng(7).integers(0, 256, (20, *shape), dtype=np.uint8)
    grey[0], grey[1] = 0, 255  # flat images: the clipping of both passes
    expected = np.stack([np.asarray(Image.fromarray(g).resize(size, LANCZOS)) for g in grey])
    assert np.array_equal(resize_like_pillow(grey, size), expected)


@pytest.mark.parametrize("shape", [(480, 640), (640, 480), (700, 355), (710, 355), (33, 2000),
                                   (2000, 33), (256, 256)])
def test_large_thumbnails_equal_image_resize(shape):
    grey = np.random.default_rng(3).integers(0, 256, shape, dtype=np.uint8)
    image = Image.fromarray(grey)
    assert imageprobe._large_thumbnails(grey) == (image.resize((32, 32), LANCZOS).tobytes(),
                                                  image.resize((9, 8), LANCZOS).tobytes())


def test_probe_files_real_images_equal_imagehash(shared_data):
    paths = []
    for folder in ["cifar10-train/images", "cifar10-test/images", "bccd/images"]:
        paths += sorted(str(p) for p in (shared_data / folder).iterdir())[:150]
    for result in probe_files(paths, [None] * len(paths)):
        with Image.open(result.path) as image:
            assert result.phash == int(str(imagehash.phash(image)), 16), result.path
            assert result.dhash == int(str(imagehash.dhash(image)), 16), result.path
