"""The compiled thumbnail kernel (core/thumbnails.c, through core.native): the same bytes as
Pillow's `convert("L").resize(size, LANCZOS)`, for every size and mode, in threads too; and
what building it does with and without a compiler."""
from __future__ import annotations

import io
import os
import shutil
import struct
import threading
import zlib

import numpy as np
import pytest
from PIL import Image

from core import imageprobe, native

LANCZOS = Image.Resampling.LANCZOS


@pytest.fixture()
def kernel():
    """Skip where the kernel is not built; in CI (which builds it with `make test`) fail."""
    if not native.available():
        reason = "the compiled thumbnail kernel is not built (python -m core.native)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}: `make test` builds it")
        pytest.skip(reason)


def pillow_thumbnails(image: Image.Image) -> tuple[bytes, bytes]:
    grey = image.convert("L")
    return grey.resize((32, 32), LANCZOS).tobytes(), grey.resize((9, 8), LANCZOS).tobytes()


def picture(width: int, height: int, mode: str, kind: str, seed: int = 0) -> Image.Image:
    """A test image: noise, coarse noise, a smooth gradient, or saturated blocks (all 0 or 255,
    which the passes' negative lobes push below 0 and above 255: clipping)."""
    rng = np.random.default_rng(seed)
    if kind == "noise":
        rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    elif kind == "coarse":
        rgb = (rng.integers(0, 256, (height, width, 3)) // 64 * 85).astype(np.uint8)
    elif kind == "gradient":
        x = np.linspace(0, 255, width)[None, :, None]
        y = np.linspace(0, 255, height)[:, None, None]
        rgb = np.broadcast_to((x + y) / 2, (height, width, 3)).astype(np.uint8)
    else:
        cells = rng.integers(0, 2, (height // 7 + 1, width // 7 + 1, 3), dtype=np.uint8) * 255
        rgb = np.repeat(np.repeat(cells, 7, axis=0), 7, axis=1)[:height, :width]
    # frombytes: memory in Pillow's own blocks, as decoded images have
    image = Image.frombytes("RGB", (width, height), np.ascontiguousarray(rgb).tobytes())
    return image if mode == "RGB" else image.convert(mode)


@pytest.mark.parametrize("size", [(33, 33), (640, 480), (641, 479), (480, 640), (1000, 40),
                                  (97, 65), (48, 47), (333, 600)])
@pytest.mark.parametrize("mode", ["RGB", "L"])
@pytest.mark.parametrize("kind", ["noise", "coarse", "gradient", "saturated"])
def test_kernel_equals_pillow(kernel, size, mode, kind):
    image = picture(*size, mode, kind)
    assert native.grey_thumbnails(image) == pillow_thumbnails(image)


@pytest.mark.parametrize("mode", ["RGBA", "CMYK", "P", "LA", "I;16", "1"])
def test_other_modes_go_through_pillows_grey(kernel, mode):
    image = picture(200, 150, "RGB", "noise", seed=1).convert(mode)
    assert native.grey_thumbnails(image) == pillow_thumbnails(image)


def test_images_over_one_block_of_memory(kernel):
    """Pillow keeps images over 16 MB in several blocks, which it does not export in one piece:
    an RGB photo's grey image fits one block; a grey image that does not is copied."""
    rgb = picture(3000, 2000, "RGB", "coarse")  # 24 MB: several blocks
    assert native._pixels(rgb) is None
    assert native.grey_thumbnails(rgb) == pillow_thumbnails(rgb)
    grey = picture(4500, 4000, "L", "gradient")  # 18 MB of grey
    assert native._pixels(grey) is None
    assert native.grey_thumbnails(grey) == pillow_thumbnails(grey)


@pytest.mark.parametrize("size", [(32, 500), (500, 32), (20, 20), (40, 1000)])
def test_sizes_left_to_the_caller(kernel, size):
    """32 pixels or fewer on a side, or so much taller than wide that Pillow resizes vertically
    first: the kernel declines, and imageprobe's own path gives Pillow's bytes."""
    image = picture(*size, "RGB", "noise")
    assert native.grey_thumbnails(image) is None
    assert imageprobe._grey_thumbnails(image, numpy_resize=True) == pillow_thumbnails(image)


def test_threads_with_different_sizes(kernel):
    """Each thread keeps the weights of the last size it saw: several threads, several sizes."""
    sizes = [(640, 480), (641, 479), (300, 200), (97, 65), (1024, 768)]
    images = [picture(*size, "RGB", "noise", seed=k) for k, size in enumerate(sizes)]
    expected = [pillow_thumbnails(image) for image in images]
    wrong = []

    def work(offset: int) -> None:
        for step in range(20):
            k = (offset + step) % len(images)
            if native.grey_thumbnails(images[k]) != expected[k]:
                wrong.append((offset, k))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert wrong == []


def test_probe_gives_the_same_hashes_without_the_kernel(kernel, tmp_path, monkeypatch):
    paths = []
    for k, (size, kind) in enumerate([((640, 480), "noise"), ((500, 375), "gradient"),
                                      ((120, 90), "saturated")]):
        path = tmp_path / f"photo-{k}.jpg"
        picture(*size, "RGB", kind, seed=k).save(path, quality=90)
        paths.append(str(path))
    with_kernel = imageprobe.probe_files(paths, [None] * len(paths))
    monkeypatch.setattr(native, "_kernel", lambda: None)
    without = imageprobe.probe_files(paths, [None] * len(paths), numpy_resize=True)
    assert [(r.phash, r.dhash) for r in with_kernel] == [(r.phash, r.dhash) for r in without]


def test_build_load_and_a_stale_library(tmp_path):
    if native.compiler() is None:
        if os.environ.get("CI") == "true":
            pytest.fail("no C compiler in CI: .ci/run installs gcc")
        pytest.skip("no C compiler here")
    source, library = tmp_path / "thumbnails.c", tmp_path / "lib" / "_thumbnails.so"
    shutil.copy(native.SOURCE, source)
    assert native.build(source, library) is None
    assert native.load(library, source) is not None
    assert os.stat(library).st_mode & 0o444 == 0o444  # readable by all who run this checkout
    later = os.stat(library).st_mtime + 10
    os.utime(source, (later, later))  # the source edited after the build: not loaded
    assert native.load(library, source) is None


def test_build_without_a_compiler(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CC", "no-such-compiler-anywhere")
    assert "no C compiler" in native.build(native.SOURCE, tmp_path / "_thumbnails.so")
    monkeypatch.setattr(native, "LIBRARY", tmp_path / "_thumbnails.so")
    assert native.main([]) == 0  # make goes on: Sieve works without the kernel
    assert "was not built (no C compiler" in capsys.readouterr().err
    assert not (tmp_path / "_thumbnails.so").exists()


def test_a_failing_compiler_says_why(tmp_path):
    broken = tmp_path / "broken.c"
    broken.write_text("this is not C\n")
    if native.compiler() is None:
        pytest.skip("no C compiler here")
    reason = native.build(broken, tmp_path / "_thumbnails.so")
    assert reason and "failed" in reason and "error" in reason
    assert list(tmp_path.iterdir()) == [broken]  # no half-written library left behind


def test_a_kernel_that_rounds_otherwise_is_not_used(kernel):
    """`_kernel` checks the library against this Pillow before using it."""
    real = native._kernel()
    assert native.agrees_with_pillow(real)

    def declines(*args):
        return -2

    def off_by_one(pixels, row_bytes, channels, height, width, out32, out9):
        status = real(pixels, row_bytes, channels, height, width, out32, out9)
        out32[5] = (out32[5] + 1) % 256
        return status

    real_png = real.png

    def png_off_by_one(rows, length, channels, height, width, out32, out9):
        status = real_png(rows, length, channels, height, width, out32, out9)
        out9[3] = (out9[3] + 1) % 256
        return status

    assert not native.agrees_with_pillow(declines)
    assert not native.agrees_with_pillow(off_by_one)
    real.png = png_off_by_one  # the PNG rows path is checked too
    try:
        assert not native.agrees_with_pillow(real)
    finally:
        real.png = real_png
    assert native.agrees_with_pillow(real)


# ---------------------------------------------------------------- PNG rows


def png_file(pixels: np.ndarray, filters: list[int], *, level: int = 6) -> bytes:
    """A plain 8-bit PNG ('L' for 2-D pixels, 'RGB' for 3-D) whose rows use `filters` in turn
    (0 none, 1 sub, 2 up, 3 average, 4 Paeth), written by hand: Pillow's encoder picks one."""
    height, width = pixels.shape[:2]
    channels = 1 if pixels.ndim == 2 else 3
    rows = pixels.reshape(height, width * channels).astype(np.int32)
    raw, prior = bytearray(), np.zeros(width * channels, np.int32)
    for y, row in enumerate(rows):
        kind = filters[y % len(filters)]
        a = np.concatenate([np.zeros(channels, np.int32), row[:-channels]])
        c = np.concatenate([np.zeros(channels, np.int32), prior[:-channels]])
        if kind == 4:
            p = a + prior - c
            pa, pb, pc = abs(p - a), abs(p - prior), abs(p - c)
            predicted = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, prior, c))
        else:
            predicted = [0 * row, a, prior, (a + prior) >> 1][kind]
        raw += bytes([kind]) + ((row - predicted) % 256).astype(np.uint8).tobytes()
        prior = row

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return (struct.pack(">I", len(payload)) + kind + payload
                + struct.pack(">I", zlib.crc32(payload, zlib.crc32(kind))))

    header = struct.pack(">IIBBBBB", width, height, 8, 0 if channels == 1 else 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(bytes(raw), level)) + chunk(b"IEND", b""))


@pytest.mark.parametrize("size", [(32, 32), (28, 28), (1, 1), (5, 3), (33, 33), (64, 48),
                                  (640, 480), (40, 1000), (300, 17)])
@pytest.mark.parametrize("mode", ["RGB", "L"])
@pytest.mark.parametrize("filters", [[0], [1], [2], [3], [4], [4, 3, 2, 1, 0]])
def test_png_rows_give_pillows_pixels_and_thumbnails(kernel, size, mode, filters):
    width, height = size
    shape = (height, width, 3) if mode == "RGB" else (height, width)
    pixels = np.random.default_rng(width * height).integers(0, 256, shape, dtype=np.uint8)
    data = png_file(pixels, filters)
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        assert np.array_equal(np.asarray(image), pixels)  # the file says what it should
        expected = pillow_thumbnails(image)
    assert imageprobe._png_by_kernel(data) == (width, height, mode, expected)


def damaged_pngs() -> dict[str, bytes]:
    pixels = np.random.default_rng(3).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    good = png_file(pixels, [1, 4])
    start = good.index(b"IDAT") + 4
    length = struct.unpack(">I", good[start - 8:start - 4])[0]
    raw = bytearray(zlib.decompress(good[start:start + length]))

    def with_rows(rows: bytes) -> bytes:  # the same file around other rows, CRC made right
        payload = zlib.compress(rows)
        idat = (struct.pack(">I", len(payload)) + b"IDAT" + payload
                + struct.pack(">I", zlib.crc32(payload, zlib.crc32(b"IDAT"))))
        return good[:start - 8] + idat + good[start + length + 4:]

    unknown_filter = bytearray(raw)
    unknown_filter[97 * 5] = 7  # row 5's filter byte
    return {"unknown filter type": with_rows(bytes(unknown_filter)),
            "rows missing": with_rows(bytes(raw[:97 * 20])),
            "stream cut short": with_rows(bytes(raw))[:start + 40] + good[-12:],
            "rows to spare": with_rows(bytes(raw) + bytes(97 * 3))}


@pytest.mark.parametrize("name", list(damaged_pngs()))
def test_damaged_png_rows_leave_the_file_to_pillow(kernel, tmp_path, monkeypatch, name):
    """Whatever the kernel's path does not take, Pillow reads: the same facts, or the same
    reason, as without the kernel."""
    path = tmp_path / "damaged.png"
    path.write_bytes(damaged_pngs()[name])
    with_kernel = imageprobe.probe_files([str(path)], [None])
    monkeypatch.setattr(native, "_kernel", lambda: None)
    assert with_kernel == imageprobe.probe_files([str(path)], [None], numpy_resize=True)
    # Pillow itself (Image.open, load) refuses these two; it reads the rows there are of a
    # complete stream that holds too few, and ignores rows to spare
    assert bool(with_kernel[0].error) == (name in ("unknown filter type", "stream cut short"))


def test_probe_of_pngs_is_the_same_without_the_kernel(kernel, tmp_path, monkeypatch):
    rng = np.random.default_rng(5)
    paths = []
    for k, (size, mode) in enumerate([((32, 32), "RGB"), ((28, 28), "L"), ((64, 48), "RGB"),
                                      ((640, 480), "L")]):
        shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
        path = tmp_path / f"{k}.png"
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(path)
        paths.append(str(path))
    with_kernel = imageprobe.probe_files(paths, [None] * len(paths))
    monkeypatch.setattr(native, "_kernel", lambda: None)
    assert with_kernel == imageprobe.probe_files(paths, [None] * len(paths), numpy_resize=True)
