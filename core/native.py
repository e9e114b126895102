"""Sieve's compiled thumbnail kernel (core/thumbnails.c): building it, and calling it.

`python -m core.native` compiles the kernel with the system's C compiler (`$CC`, else `cc`) into
core/_thumbnails.so beside its source; `make run` and `make test` do it. Without a compiler the
command says so and exits 0: Sieve then computes the same thumbnails with numpy, about 2.7
times slower (0.75 ms against 0.28 ms for a 640x480 photo, bench/ingest_stages.py;
`core.imageprobe`). `grey_thumbnails(image)` returns the 32x32 and 9x8 grey thumbnails of a
decoded image, or None where the kernel is not built, is older than its source, or leaves the
image to the caller (32 pixels or fewer on a side, or much taller than wide: see
thumbnails.c); `png_thumbnails(rows, ...)` those of a plain PNG from its inflated rows, any
size.

The kernel reads Pillow's pixels in place, through the Arrow C data interface Pillow exports
(`Image.__arrow_c_array__`, no copy), and runs with Python's lock released (ctypes), so the
ingest's threads decode and resize in parallel.
"""
from __future__ import annotations

import ctypes
import os
import random
import shlex
import shutil
import subprocess
import sys
import tempfile
import warnings
from functools import lru_cache
from pathlib import Path

from PIL import Image

SOURCE = Path(__file__).with_name("thumbnails.c")
LIBRARY = Path(__file__).with_name("_thumbnails.so")
VERSION = 2  # SIEVE_THUMBNAILS_VERSION in thumbnails.c
# No fused multiply-adds (they would change the weights' last bits, and so pixels); -O3 for the
# vectorised passes, which thumbnails.c also compiles for AVX2 and AVX-512 (chosen at load).
CFLAGS = ["-O3", "-ffp-contract=off", "-fPIC", "-shared", "-pthread"]
_UINT8_P = ctypes.POINTER(ctypes.c_uint8)


def compiler() -> list[str] | None:
    """The C compiler command ($CC, else cc, gcc or clang), or None where there is none."""
    if os.environ.get("CC"):
        command = shlex.split(os.environ["CC"])
        return command if shutil.which(command[0]) else None
    for name in ("cc", "gcc", "clang"):
        if shutil.which(name):
            return [name]
    return None


def build(source: Path = SOURCE, library: Path = LIBRARY) -> str | None:
    """Compile `source` into `library` (written whole, then renamed into place); returns None,
    or why it could not be built."""
    cc = compiler()
    if cc is None:
        return "no C compiler found (set CC, or install gcc or clang)"
    library.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(prefix=library.name + ".", dir=library.parent)
    os.close(handle)
    try:
        done = subprocess.run([*cc, *CFLAGS, "-o", partial, str(source), "-lm"],
                              capture_output=True, text=True)
        if done.returncode != 0:
            return f"{shlex.join(cc)} failed:\n{(done.stderr or done.stdout).strip()[-2000:]}"
        os.chmod(partial, 0o755)  # readable by everyone who runs Sieve from this checkout
        os.replace(partial, library)
    except OSError as err:
        return f"cannot write {library}: {err}"
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    return None


class _ArrowArray(ctypes.Structure):
    """struct ArrowArray of the Arrow C data interface."""


_ArrowArray._fields_ = [
    ("length", ctypes.c_int64), ("null_count", ctypes.c_int64), ("offset", ctypes.c_int64),
    ("n_buffers", ctypes.c_int64), ("n_children", ctypes.c_int64),
    ("buffers", ctypes.POINTER(ctypes.c_void_p)),
    ("children", ctypes.POINTER(ctypes.POINTER(_ArrowArray))),
    ("dictionary", ctypes.c_void_p), ("release", ctypes.c_void_p),
    ("private_data", ctypes.c_void_p)]

_capsule_pointer = ctypes.pythonapi.PyCapsule_GetPointer
_capsule_pointer.restype = ctypes.c_void_p
_capsule_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]


def load(library: Path = LIBRARY, source: Path = SOURCE):
    """The kernel's C function for decoded images from `library` (its PNG rows function as
    the attribute `png`), or None: not built, older than `source` (a rebuild is due:
    `python -m core.native`), another version, or not loadable here."""
    try:
        if library.stat().st_mtime < source.stat().st_mtime:
            return None
        lib = ctypes.CDLL(str(library))
        if lib.sieve_thumbnails_version() != VERSION:
            return None
        function, png = lib.sieve_thumbnails, lib.sieve_png_thumbnails
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int, ctypes.c_int,
                         ctypes.c_int, _UINT8_P, _UINT8_P]
    png.argtypes = [ctypes.c_char_p, ctypes.c_int64, ctypes.c_int, ctypes.c_int,
                    ctypes.c_int, _UINT8_P, _UINT8_P]
    function.restype = png.restype = ctypes.c_int
    function.png = png
    return function


@lru_cache(maxsize=1)
def _kernel():
    """The kernel, once it has given Pillow's bytes on two test images here (a platform whose
    compiler or Pillow build rounds otherwise gets the numpy path, with a warning)."""
    function = load()
    if function is not None and not agrees_with_pillow(function):
        warnings.warn(f"{LIBRARY} gives other thumbnails than this Pillow: Sieve computes them "
                      "with numpy instead", RuntimeWarning, stacklevel=2)
        return None
    return function


def agrees_with_pillow(function) -> bool:
    """Whether `function` (the kernel) makes Pillow's thumbnails of a noise image and of a
    black-and-white one (whose passes clip), 211x157 RGB, and of the same pictures at 29x23
    from PNG rows (the row filters, small images' passes): a few milliseconds, once a process."""
    noise = random.Random(0).randbytes(211 * 157 * 3)
    black_white = noise.translate(bytes(0 if b < 128 else 255 for b in range(256)))
    for pixels in (noise, black_white):
        image = Image.frombytes("RGB", (211, 157), pixels)
        if _run(function, image) != _pillows(image):
            return False
        small = image.crop((0, 0, 29, 23))
        if _png_rows_thumbnails(function, small) != _pillows(small):
            return False
    return True


def _pillows(image: Image.Image) -> tuple[bytes, bytes]:
    grey = image.convert("L")
    return (grey.resize((32, 32), Image.Resampling.LANCZOS).tobytes(),
            grey.resize((9, 8), Image.Resampling.LANCZOS).tobytes())


def _png_rows_thumbnails(function, image: Image.Image) -> tuple[bytes, bytes] | None:
    """The kernel's thumbnails of an RGB `image` from PNG rows filtered by hand, each of the
    five filter types in turn (PNG's undo is lossless: they must be Pillow's of `image`)."""
    pixels, line = image.tobytes(), 3 * image.width
    rows, prior = bytearray(), bytes(line)
    for y in range(image.height):
        row, kind = pixels[y * line:(y + 1) * line], y % 5
        rows.append(kind)
        for x in range(line):
            a, b = row[x - 3] if x >= 3 else 0, prior[x]
            c = prior[x - 3] if x >= 3 else 0
            pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
            paeth = a if pa <= pb and pa <= pc else b if pb <= pc else c
            rows.append((row[x] - (0, a, b, (a + b) >> 1, paeth)[kind]) & 255)
        prior = row
    return _call(function.png, bytes(rows), len(rows), 3, image.height, image.width)


def available() -> bool:
    """Whether this process computes big images' thumbnails with the compiled kernel."""
    return _kernel() is not None


def _pixels(image: Image.Image) -> tuple[object, int, int] | None:
    """(what keeps the pixels alive, their address, bytes per pixel) of an 'L' or 'RGB' image
    whose rows are one block of memory; None otherwise (big images span several blocks)."""
    try:
        _, capsule = image.__arrow_c_array__()
    except (ValueError, AttributeError):
        return None
    array = _ArrowArray.from_address(_capsule_pointer(capsule, b"arrow_array"))
    if array.offset != 0 or array.length != image.width * image.height:
        return None
    if image.mode == "L" and array.n_buffers == 2 and array.n_children == 0:
        return capsule, array.buffers[1], 1
    if image.mode == "RGB" and array.n_children == 1:  # fixed-size lists of 4 bytes
        child = array.children[0].contents
        if child.n_buffers == 2 and child.offset == 0 and child.length == 4 * array.length:
            return capsule, child.buffers[1], 4
    return None


def grey_thumbnails(image: Image.Image) -> tuple[bytes, bytes] | None:
    """(32x32, 9x8) grey thumbnails of `image` (any mode Pillow converts to 'L'), equal to
    `image.convert("L").resize(size, Image.LANCZOS)`'s bytes; None when the kernel is not
    there or leaves this image to the caller."""
    if image.width <= 32 or image.height <= 32:
        return None
    kernel = _kernel()
    return None if kernel is None else _run(kernel, image)


def png_thumbnails(rows: bytes, mode: str, width: int, height: int
                   ) -> tuple[bytes, bytes] | None:
    """(32x32, 9x8) grey thumbnails of a plain 8-bit 'L' or 'RGB' PNG from its inflated rows
    (a filter byte, then the row), equal to Pillow's decode, `convert("L")` and resize; None
    when the kernel is not there or the rows are not what the header says (Pillow then reads
    the file, and gives the reason)."""
    kernel = _kernel()
    if kernel is None or mode not in ("L", "RGB"):
        return None
    return _call(kernel.png, rows, len(rows), 1 if mode == "L" else 3, height, width)


def _run(kernel, image: Image.Image) -> tuple[bytes, bytes] | None:
    if image.mode not in ("L", "RGB"):
        image = image.convert("L")
    found = _pixels(image)
    if found is None and image.mode == "RGB":  # over one block of memory: its grey may fit one
        image = image.convert("L")
        found = _pixels(image)
    if found is None:  # a grey image over one block (16 MB): copied in one piece
        data = image.tobytes()
        found = data, ctypes.cast(ctypes.c_char_p(data), ctypes.c_void_p).value, 1
    keep, address, channels = found
    made = _call(kernel, address, image.width * channels, channels, image.height, image.width)
    del keep  # the capsule held the pixels until here
    return made


def _call(function, *args) -> tuple[bytes, bytes] | None:
    """`function(*args, out32, out9x8)` of the kernel: the two thumbnails, or None when it
    returns a failure status."""
    out32, out9 = (ctypes.c_uint8 * 1024)(), (ctypes.c_uint8 * 72)()
    if function(*args, out32, out9) != 0:
        return None
    return bytes(out32), bytes(out9)


def main(argv: list[str]) -> int:
    """Build the kernel; without a compiler, say what that costs and exit 0."""
    if argv:
        print("usage: python -m core.native   (builds core/_thumbnails.so)", file=sys.stderr)
        return 2
    failure = build()
    if failure:
        print(f"Sieve: the compiled thumbnail kernel was not built ({failure}). Sieve works "
              "without it, but ingests photos about 1.5x slower (PNGs 1.1x).", file=sys.stderr)
        return 0
    if load() is None:
        print(f"Sieve: {LIBRARY} was built but does not load here; Sieve works without it.",
              file=sys.stderr)
        return 0
    print(f"built {LIBRARY}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
