"""Reading one image file into catalog facts: bytes, sha256, size, format and perceptual hashes.

Entry point: `probe_batch(paths, known_sha)` → `ProbeBatch` (columns), run in worker processes by
`core.ingest`; `probe_files` gives the same facts as one `ProbeResult` per file. Kept free of
DuckDB and pandas so that workers start fast.

Perceptual hashes, computed one documented way so that they compare with other tools:
- the image is decoded in full, EXIF orientation applied, converted to 8-bit grey with Pillow's
  ``convert("L")`` (ITU-R 601-2 luma);
- phash: Lanczos resize to 32x32, 2-D DCT-II (unnormalised, as ``scipy.fftpack.dct``), the 8x8
  lowest frequencies compared with their median: bit = coefficient > median;
- dhash: Lanczos resize to 9x8 (width x height), bit = pixel[r, c + 1] > pixel[r, c];
- the 64 bits are read row by row, first bit most significant, so the stored integer equals
  ``int(str(imagehash.phash(img)), 16)`` (likewise dhash) for the EXIF-rotated image.

Speed without changing a pixel: plain JPEG and PNG files skip Pillow's header parser written in
Python. A short walk over the markers (chunks) finds mode and size, then Pillow's own C decoder
decodes the file with the arguments `Image.open` would give it. Anything unusual (Exif or XMP,
ICC, MPO, 12-bit, palette or interlaced PNG, damaged data, ...) goes through `Image.open`.
The thumbnails of big images are made by the compiled kernel `core/thumbnails.c` (`core.native`)
where it is built, and plain 8-bit 'L' and 'RGB' PNGs skip Pillow altogether there: zlib
inflates their rows and the kernel undoes the filters, converts and resizes (`_png_by_kernel`).
The Lanczos thumbnails of 32x32 images (9x8, for the whole batch at once), and of big images
without the kernel, are made by `resize_like_pillow`: Pillow's fixed-point arithmetic as exact
float64 matrix products.
"""
from __future__ import annotations

import errno
import hashlib
import io
import math
import os
import struct
import warnings
import zlib
from dataclasses import dataclass, fields
from functools import lru_cache

import numpy as np
from PIL import Image, ImageOps

from core import native

_LANCZOS = Image.Resampling.LANCZOS
_PRECISION_BITS = 22  # Pillow's fixed-point weights for 8-bit resampling (Resample.c)
# From this many pixels on, numpy's matrix product resizes 2-3x faster than Pillow's loops when
# BLAS runs on one thread, as in ingest's workers. With several BLAS threads spinning next to
# the other workers it is slower: there, Pillow resizes.
NUMPY_RESIZE_PIXELS = 65_536
BAND_OUTPUTS = 8  # 32-column outputs per matrix product (4 or 16 are slower at 640 wide)
_ONE_BLAS_THREAD = "1" in (os.environ.get("OPENBLAS_NUM_THREADS"),
                           os.environ.get("OMP_NUM_THREADS"))


def _dct_rows(n: int = 32, keep: int = 8) -> np.ndarray:
    """(keep, n) rows of the unnormalised DCT-II matrix: 2 cos(pi k (2m + 1) / 2n)."""
    k = np.arange(keep)[:, None]
    m = np.arange(n)[None, :]
    return 2.0 * np.cos(np.pi * k * (2 * m + 1) / (2 * n))


_DCT8 = _dct_rows()


@dataclass
class ProbeResult:
    """Facts of one file; `error` is set (and the image facts None) when it cannot be read."""
    path: str
    bytes: int | None
    sha256: str | None
    width: int | None = None
    height: int | None = None
    format: str | None = None
    mode: str | None = None
    phash: int | None = None
    dhash: int | None = None
    error: str | None = None
    unchanged: bool = False


@dataclass(frozen=True)
class ProbeBatch:
    """The facts of several files as columns: one list per `ProbeResult` field, in path order.
    What workers send back: eleven lists pickle far faster than one object per file."""
    path: list
    bytes: list
    sha256: list
    width: list
    height: list
    format: list
    mode: list
    phash: list
    dhash: list
    error: list
    unchanged: list

    def __len__(self) -> int:
        return len(self.path)

    def __iter__(self):
        return iter(self.results())

    def results(self) -> list[ProbeResult]:
        return [ProbeResult(*row) for row in zip(*(getattr(self, f) for f in _FIELDS))]

    def take(self, rows) -> ProbeBatch:
        """The batch of these rows (indices); itself for `range(len(batch))`."""
        if rows == range(len(self)):
            return self
        return ProbeBatch(*([column[k] for k in rows] for column in
                            (getattr(self, f) for f in _FIELDS)))

    @staticmethod
    def concat(batches: list[ProbeBatch]) -> ProbeBatch:
        if len(batches) == 1:
            return batches[0]
        return ProbeBatch(*([value for batch in batches for value in getattr(batch, f)]
                            for f in _FIELDS))


_FIELDS = [f.name for f in fields(ProbeResult)]


def bits_to_int(bits: np.ndarray) -> np.ndarray:
    """(B, 64) booleans → (B,) uint64, first bit most significant."""
    return np.packbits(bits, axis=1).view(">u8")[:, 0].astype(np.uint64)


def phash_from_grey32(grey: np.ndarray) -> np.ndarray:
    """(B, 32, 32) grey pixels (uint8 or their float64 copy) → (B,) uint64 phashes."""
    low = _DCT8 @ grey.astype(np.float64, copy=False) @ _DCT8.T  # (B, 8, 8) lowest frequencies
    flat = low.reshape(len(grey), 64)
    return bits_to_int(flat > np.median(flat, axis=1, keepdims=True))


def dhash_from_grey9x8(grey: np.ndarray) -> np.ndarray:
    """(B, 8, 9) grey pixels → (B,) uint64 dhashes."""
    return bits_to_int((grey[:, :, 1:] > grey[:, :, :-1]).reshape(len(grey), 64))


# ---------------------------------------------------------------- Pillow's Lanczos, batched


def _lanczos(x: float) -> float:
    """sinc(x) sinc(x / 3) on [-3, 3), computed as Resample.c does (the same libm sin)."""
    if not -3.0 <= x < 3.0:
        return 0.0
    if x == 0.0:
        return 1.0
    return math.sin(x * math.pi) / (x * math.pi) * (math.sin(x / 3 * math.pi) / (x / 3 * math.pi))


@lru_cache(maxsize=16)
def pillow_lanczos_weights(in_size: int, out_size: int) -> np.ndarray:
    """(out_size, in_size) weights of Pillow's Lanczos resize along one axis, as the integers
    (scaled by 2**22) its 8-bit code uses: the same arithmetic as Resample.c, in the same order."""
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support, inverse = 3.0 * filterscale, 1.0 / filterscale
    weights = np.zeros((out_size, in_size), np.float64)
    for out in range(out_size):
        center = (out + 0.5) * scale
        first = max(int(center - support + 0.5), 0)  # int() truncates toward 0, as C does
        last = min(int(center + support + 0.5), in_size)
        taps = [_lanczos((x - center + 0.5) * inverse) for x in range(first, last)]
        total = 0.0
        for tap in taps:  # summed left to right, as the C loop does
            total += tap
        taps = [tap / total for tap in taps] if total != 0.0 else taps
        weights[out, first:last] = [int(t * (1 << _PRECISION_BITS) + (-0.5 if t < 0 else 0.5))
                                    for t in taps]
    return weights


def _vertical_first(height: int, width: int, size: tuple[int, int]) -> bool:
    """Whether Pillow 13 resizes vertically first: when the height shrinks over twice as much."""
    return height - size[1] > max(0, 2 * (width - size[0]))


def _fixed_to_uint8(sums: np.ndarray) -> np.ndarray:
    """Pillow's rounding of fixed-point sums: + half, floor-shift, clip to 0..255. The float64
    sums are exact: integers below 2**40."""
    shifted = np.floor((sums + (1 << (_PRECISION_BITS - 1))) / (1 << _PRECISION_BITS))
    return np.clip(shifted, 0, 255).astype(np.uint8)


def resize_like_pillow(grey: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(B, H, W) grey images (uint8, or float64 copies) → (B, h, w) uint8 for size (w, h),
    equal to `Image.resize(size, Image.LANCZOS)` on each 'L' image pixel for pixel (Pillow 13's
    Resample.c, whose rounding after each pass makes the order of the passes matter)."""
    (height, width), out = grey.shape[1:], grey.astype(np.float64, copy=False)
    for axis in (("v", "h") if _vertical_first(height, width, size) else ("h", "v")):
        if axis == "h" and size[0] != width:
            out = _fixed_to_uint8(out @ pillow_lanczos_weights(width, size[0]).T)
        if axis == "v" and size[1] != height:
            out = _fixed_to_uint8(pillow_lanczos_weights(height, size[1]) @ out)
    return out.astype(np.uint8)


# ---------------------------------------------------------------- decoding


def _describe_error(err: Exception) -> str:
    if isinstance(err, Image.DecompressionBombError | Image.DecompressionBombWarning):
        return f"too large to decode safely: {err}"
    if isinstance(err, Image.UnidentifiedImageError):
        return "not an image Pillow can read (unknown or damaged format)"
    if isinstance(err, PermissionError):
        return "permission denied: the file cannot be read"
    if isinstance(err, IsADirectoryError):
        return "is a folder, not a file"
    if isinstance(err, OSError) and err.errno == errno.ELOOP:
        return "symbolic link loop: the link never reaches a file"
    if isinstance(err, OSError) and "truncated" in str(err).lower():
        return f"truncated or damaged image data: {err}"
    if isinstance(err, OSError) and err.errno is None:  # raised by a decoder, not the system
        return f"damaged image data: {err}"
    return f"{type(err).__name__}: {err}"


def _guess_formats(data: bytes) -> list[str] | None:
    """Try the format the magic bytes announce first (Pillow then skips its probing); None
    lets Pillow try every format, which is also what happens when the guess is wrong."""
    if data[:3] == b"\xff\xd8\xff":
        return ["JPEG"]
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return ["PNG"]
    return None


def _decode_with_pillow(data: bytes) -> tuple[Image.Image, str]:
    """(image decoded fully by `Image.open`, EXIF orientation applied; mode before that).
    Raises on anything doubtful, a decompression bomb included."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        image = Image.open(io.BytesIO(data), formats=_guess_formats(data))
        image.load()
    mode = image.mode
    if image.getexif().get(0x0112, 1) in (2, 3, 4, 5, 6, 7, 8):
        transposed = ImageOps.exif_transpose(image)
        transposed.format = image.format
        return transposed, mode
    return image, mode


_JPEG_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE,
                       0xCF})
_JPEG_SKIPPED = frozenset({0xC4, 0xCC, 0xDD, 0xFE})  # DHT, DAC, DRI, COM: no fact for Pillow
_JPEG_MODES = {1: ("L", "L"), 3: ("RGB", "RGB"), 4: ("CMYK", "CMYK;I")}  # layers → mode, rawmode


def _dqt_ok(segment: bytes) -> bool:
    """Quantisation tables laid out as Pillow's parser requires (else it refuses the file)."""
    while segment:
        length = 65 if segment[0] < 16 else 129
        if len(segment) < length:
            return False
        segment = segment[length:]
    return True


def _app_ok(marker: int, segment: bytes) -> bool:
    """APP0 JFIF / APP14 Adobe long enough for Pillow; other APPn (Exif, XMP, ICC, MPO, ...)
    carry facts that Pillow acts on, so such files take the `Image.open` path."""
    if marker == 0xE0:
        return len(segment) >= 7 or not segment.startswith(b"JFIF")
    return marker == 0xEE and len(segment) >= 7 and segment.startswith(b"Adobe")


def _jpeg_header(data: bytes) -> tuple[str, str, int, int] | None:
    """(mode, rawmode, width, height) of a plain JPEG, as Pillow's parser finds them; None when
    the file needs that parser (see `_app_ok`), has several frames or anything odd."""
    pos, end, frame = 2, len(data), None
    while pos + 4 <= end and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker == 0xDA:  # start of scan: the header is complete
            return frame
        length = (data[pos + 2] << 8) | data[pos + 3]
        segment = data[pos + 4:pos + 2 + length]
        if length < 2 or len(segment) != length - 2:
            return None
        if marker in _JPEG_SOF:
            if frame is not None or length < 8 or segment[0] != 8 or segment[5] not in _JPEG_MODES:
                return None
            height, width = (segment[1] << 8) | segment[2], (segment[3] << 8) | segment[4]
            frame = (*_JPEG_MODES[segment[5]], width, height)
        elif marker == 0xDB:
            if not _dqt_ok(segment):
                return None
        elif not (marker in _JPEG_SKIPPED or (0xE0 <= marker <= 0xEF and _app_ok(marker, segment))):
            return None
        pos += 2 + length
    return None


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_MODES = {(8, 0): "L", (8, 2): "RGB", (8, 4): "LA", (8, 6): "RGBA"}  # (depth, colour) → mode
_PNG_MIN_LENGTH = {b"IHDR": 13, b"IDAT": 0, b"IEND": 0, b"sRGB": 1, b"gAMA": 4, b"pHYs": 9,
                   b"cHRM": 0}  # the chunks a plain PNG may hold, with Pillow's minimum length


def _png_chunks(data: bytes) -> list[tuple[bytes, bytes]] | None:
    """(type, payload) of every chunk up to IEND, checksums verified; None when any chunk is
    other than those of `_PNG_MIN_LENGTH` (text, palette, transparency, Exif, animation, ...)."""
    chunks, pos = [], 8
    while pos + 12 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, pos)
        payload = data[pos + 8:pos + 8 + length]
        if (kind not in _PNG_MIN_LENGTH or length < _PNG_MIN_LENGTH[kind]
                or len(payload) != length or pos + 12 + length > len(data)
                or zlib.crc32(payload, zlib.crc32(kind)) != struct.unpack_from(
                    ">I", data, pos + 8 + length)[0]):
            return None
        chunks.append((kind, payload))
        if kind == b"IEND":
            return chunks
        pos += 12 + length
    return None


def _png_image(data: bytes) -> tuple[str, int, int, bytes] | None:
    """(mode, width, height, compressed pixels) of a plain 8-bit, non-interlaced PNG; None
    when the file needs Pillow's parser."""
    chunks = _png_chunks(data)
    if not chunks or chunks[0][0] != b"IHDR":
        return None
    idat = [k for k, (kind, _) in enumerate(chunks) if kind == b"IDAT"]
    if not idat or idat[-1] - idat[0] + 1 != len(idat):
        return None  # Pillow reads the first run of IDAT chunks only
    width, height, depth, colour, compression, filtering, interlace = struct.unpack(
        ">IIBBBBB", chunks[0][1][:13])
    if (depth, colour) not in _PNG_MODES or compression or filtering or interlace:
        return None
    pixels = b"".join(chunks[k][1] for k in idat)
    return _PNG_MODES[depth, colour], width, height, pixels


def _small_enough(width: int, height: int) -> bool:
    limit = Image.MAX_IMAGE_PIXELS
    return width > 0 and height > 0 and (limit is None or width * height <= limit)


def _decode_plain(data: bytes, png: tuple | None = None) -> Image.Image | None:
    """The image a plain JPEG or PNG decodes to, by Pillow's C decoder with `Image.open`'s
    arguments (same pixels, mode and size); None for every other file or on any failure.
    `png`: `_png_image(data)`, where the caller has it."""
    try:
        if data[:3] == b"\xff\xd8\xff":
            header = _jpeg_header(data)
            if header and _small_enough(header[2], header[3]):
                mode, rawmode, width, height = header
                image = Image.frombytes(mode, (width, height), data, "jpeg", rawmode, "")
                image.format = "JPEG"
                return image
        elif data[:8] == _PNG_SIGNATURE:
            plain = png or _png_image(data)
            if plain and _small_enough(plain[1], plain[2]):
                mode, width, height, pixels = plain
                image = Image.frombytes(mode, (width, height), pixels, "zip", mode)
                image.format = "PNG"
                return image
    except (ValueError, OSError, struct.error):
        pass  # damaged: `Image.open` gives the reason
    return None


def _plain_png(data: bytes) -> tuple | None:
    """`_png_image(data)` of a PNG file, None for any other file or damaged chunks."""
    if data[:8] != _PNG_SIGNATURE:
        return None
    try:
        return _png_image(data)
    except (ValueError, struct.error):
        return None


def _png_by_kernel(data: bytes, plain: tuple | None = None
                   ) -> tuple[int, int, str, tuple[bytes, bytes]] | None:
    """(width, height, mode, thumbnails) of a plain 8-bit 'L' or 'RGB' PNG, without a Pillow
    image: zlib inflates its rows, as many as the header says, and the compiled kernel undoes
    the filters, converts to grey and resizes (Pillow's bytes, see core.native). None for
    every other file, without the kernel, or when the rows fall short: Pillow reads it.
    `plain`: `_png_image(data)`, where the caller has it."""
    if data[:8] != _PNG_SIGNATURE or not native.available():
        return None
    plain = plain or _png_image(data)
    if plain is None or plain[0] not in ("L", "RGB") or not _small_enough(*plain[1:3]):
        return None
    mode, width, height, compressed = plain
    expected = height * (1 + width * (1 if mode == "L" else 3))
    try:  # at most the rows the header promises, as Pillow's decoder reads (no zlib bomb)
        rows = zlib.decompressobj().decompress(compressed, expected)
    except zlib.error:
        return None
    thumbnails = native.png_thumbnails(rows, mode, width, height)
    return None if thumbnails is None else (width, height, mode, thumbnails)


def _grey_thumbnails(image: Image.Image, numpy_resize: bool) -> tuple[bytes, bytes | None]:
    """(32x32 grey pixels, 9x8 grey pixels); the 9x8 is None for a 32x32 image, whose batch
    makes it at once (`resize_like_pillow`). Big images go to the compiled kernel where it is
    built (`core.native`); else, with `numpy_resize` (BLAS runs on one thread here), to matrix
    products."""
    made = native.grey_thumbnails(image)
    if made is not None:
        return made
    grey = image.convert("L")
    if grey.size == (32, 32):
        return grey.tobytes(), None
    if numpy_resize and grey.width * grey.height >= NUMPY_RESIZE_PIXELS:
        return _large_thumbnails(np.asarray(grey))
    return grey.resize((32, 32), _LANCZOS).tobytes(), grey.resize((9, 8), _LANCZOS).tobytes()


def _large_thumbnails(grey: np.ndarray) -> tuple[bytes, bytes]:
    """(32x32, 9x8) of one (H, W) grey image, equal to `Image.resize`'s. Unless the image is
    much taller than wide, Pillow passes horizontally first for both: banded matrix products
    (`_horizontal_bands`) then make both horizontal passes."""
    height, width = grey.shape
    if width > 32 and height > 32 and not any(
            _vertical_first(height, width, size) for size in ((32, 32), (9, 8))):
        pixels = grey.astype(np.float64)
        across = _fixed_to_uint8(np.concatenate(  # (H, 32 + 9)
            [pixels[:, first:stop] @ weights for first, stop, weights in _horizontal_bands(width)],
            axis=1))
        down32 = _fixed_to_uint8(pillow_lanczos_weights(height, 32) @ across[:, :32])
        down8 = _fixed_to_uint8(pillow_lanczos_weights(height, 8) @ across[:, 32:])
        return down32.tobytes(), down8.tobytes()
    pixels = grey[None]  # (1, H, W)
    return (resize_like_pillow(pixels, (32, 32)).tobytes(),
            resize_like_pillow(pixels, (9, 8)).tobytes())


@lru_cache(maxsize=16)
def _horizontal_bands(width: int) -> list[tuple[int, int, np.ndarray]]:
    """Lanczos weights from `width` columns to 32, then to 9, as (first, stop, weights) bands:
    the outputs in groups of BAND_OUTPUTS (the 9 together), each with only the input columns
    its weights reach. A 32-column output reaches about 6 / 32 of the row: at 640 wide the
    bands do 0.51 of the multiply-adds of one (640, 41) product, in 0.72 of its time (BCCD);
    the sums are exact integers whatever their order, so the pixels are the same."""
    weights = np.concatenate([pillow_lanczos_weights(width, 32), pillow_lanczos_weights(width, 9)])
    bands = []
    for rows in [range(k, min(k + BAND_OUTPUTS, 32)) for k in range(0, 32, BAND_OUTPUTS)] + [
            range(32, 41)]:
        reached = np.flatnonzero(weights[rows.start:rows.stop].any(axis=0))
        first, stop = int(reached[0]), int(reached[-1]) + 1
        bands.append((first, stop, np.ascontiguousarray(weights[rows.start:rows.stop,
                                                                first:stop].T)))
    return bands


def _read(path) -> bytes:
    """The whole file, with as few system calls as can be (most images fit the first read)."""
    handle = os.open(path, os.O_RDONLY)
    try:
        parts = [os.read(handle, 1 << 16)]
        while parts[-1]:
            parts.append(os.read(handle, 1 << 20))
        return parts[0] if len(parts) == 2 else b"".join(parts)
    finally:
        os.close(handle)


def _probe_one(path, known_sha: str | None = None,
               numpy_resize: bool = _ONE_BLAS_THREAD) -> tuple[tuple, tuple | None]:
    """(the `ProbeResult` fields of one file but its hashes, its grey thumbnails or None)."""
    try:
        data = _read(path)
    except OSError as err:
        return (path, None, None, None, None, None, None, _describe_error(err), False), None
    sha = hashlib.sha256(data).hexdigest()
    if known_sha == sha:
        return (path, len(data), sha, None, None, None, None, None, True), None
    if not data:
        return (path, 0, sha, None, None, None, None, "empty file (0 bytes)", False), None
    try:
        png = _plain_png(data)  # the header walk, once for both paths below
        fast = _png_by_kernel(data, png) if png else None
        if fast is not None:
            width, height, mode, thumbnails = fast
            return (path, len(data), sha, width, height, "PNG", mode, None, False), thumbnails
        image = _decode_plain(data, png)
        if image is None:
            image, mode = _decode_with_pillow(data)
        else:
            mode = image.mode
        thumbnails = _grey_thumbnails(image, numpy_resize)
    except Exception as err:  # noqa: BLE001 — any decoder failure is a per-file reason
        return (path, len(data), sha, None, None, None, None, _describe_error(err), False), None
    return (path, len(data), sha, image.width, image.height, image.format, mode, None,
            False), thumbnails


def _batch_hashes(thumbnails: list) -> tuple[list, list]:
    """(phashes, dhashes) as ints for the given thumbnails (see `_grey_thumbnails`)."""
    grey32 = np.frombuffer(b"".join(t[0] for t in thumbnails), np.uint8).reshape(-1, 32, 32)
    pixels = grey32.astype(np.float64)  # one conversion for both hashes
    made = [k for k, t in enumerate(thumbnails) if t[1] is None]
    if len(made) == len(thumbnails):
        grey9 = resize_like_pillow(pixels, (9, 8))
    else:
        own = [k for k, t in enumerate(thumbnails) if t[1] is not None]
        grey9 = np.empty((len(thumbnails), 8, 9), np.uint8)
        grey9[own] = np.frombuffer(b"".join(thumbnails[k][1] for k in own),
                                   np.uint8).reshape(-1, 8, 9)
        if made:
            grey9[made] = resize_like_pillow(pixels[made], (9, 8))
    return phash_from_grey32(pixels).tolist(), dhash_from_grey9x8(grey9).tolist()


def probe_batch(paths: list, known_sha: list, numpy_resize: bool | None = None) -> ProbeBatch:
    """Probe files (str or bytes paths) in order; hashes are computed for the batch at once.
    `numpy_resize`: whether BLAS runs on one thread here (default: as the environment says)."""
    if numpy_resize is None:
        numpy_resize = _ONE_BLAS_THREAD
    rows, thumbnails = [], []
    for path, sha in zip(paths, known_sha):
        row, thumbnail = _probe_one(path, sha, numpy_resize)
        rows.append(row)
        thumbnails.append(thumbnail)
    columns = [list(c) for c in zip(*rows)] if rows else [[] for _ in range(9)]
    path, size, sha, width, height, fmt, mode, error, unchanged = columns
    phash, dhash = [None] * len(rows), [None] * len(rows)
    where = [k for k, t in enumerate(thumbnails) if t is not None]
    if where:
        for k, p, d in zip(where, *_batch_hashes([thumbnails[k] for k in where])):
            phash[k], dhash[k] = p, d
    return ProbeBatch(path, size, sha, width, height, fmt, mode, phash, dhash, error, unchanged)


def probe_files(paths: list, known_sha: list, numpy_resize: bool | None = None
                ) -> list[ProbeResult]:
    """`probe_batch` as one `ProbeResult` per file."""
    return probe_batch(paths, known_sha, numpy_resize).results()
