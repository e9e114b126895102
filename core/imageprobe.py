"""Reading one image file into catalog facts: bytes, sha256, size, format and perceptual hashes.

Entry point: `probe_files(paths, known_sha)`, run in worker processes by `core.ingest`. Kept free
of DuckDB and pandas so that workers start fast.

Perceptual hashes, computed one documented way so that they compare with other tools:
- the image is decoded in full, EXIF orientation applied, converted to 8-bit grey with Pillow's
  ``convert("L")`` (ITU-R 601-2 luma);
- phash: Lanczos resize to 32x32, 2-D DCT-II (unnormalised, as ``scipy.fftpack.dct``), the 8x8
  lowest frequencies compared with their median: bit = coefficient > median;
- dhash: Lanczos resize to 9x8 (width x height), bit = pixel[r, c + 1] > pixel[r, c];
- the 64 bits are read row by row, first bit most significant, so the stored integer equals
  ``int(str(imagehash.phash(img)), 16)`` (likewise dhash) for the EXIF-rotated image.
"""
from __future__ import annotations

import hashlib
import io
import os
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

_LANCZOS = Image.Resampling.LANCZOS
_BIT_WEIGHTS = (np.uint64(1) << np.arange(63, -1, -1, dtype=np.uint64))  # (64,) MSB first


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


def bits_to_int(bits: np.ndarray) -> np.ndarray:
    """(B, 64) booleans → (B,) uint64, first bit most significant."""
    return (bits.astype(np.uint64) * _BIT_WEIGHTS).sum(axis=1, dtype=np.uint64)


def phash_from_grey32(grey: np.ndarray) -> np.ndarray:
    """(B, 32, 32) grey pixels → (B,) uint64 phashes."""
    low = _DCT8 @ grey.astype(np.float64) @ _DCT8.T  # (B, 8, 8) lowest frequencies
    flat = low.reshape(len(grey), 64)
    return bits_to_int(flat > np.median(flat, axis=1, keepdims=True))


def dhash_from_grey9x8(grey: np.ndarray) -> np.ndarray:
    """(B, 8, 9) grey pixels → (B,) uint64 dhashes."""
    return bits_to_int((grey[:, :, 1:] > grey[:, :, :-1]).reshape(len(grey), 64))


def _describe_error(err: Exception) -> str:
    if isinstance(err, Image.DecompressionBombError | Image.DecompressionBombWarning):
        return f"too large to decode safely: {err}"
    if isinstance(err, Image.UnidentifiedImageError):
        return "not an image Pillow can read (unknown or damaged format)"
    if isinstance(err, PermissionError):
        return "permission denied: the file cannot be read"
    if isinstance(err, IsADirectoryError):
        return "is a folder, not a file"
    if isinstance(err, OSError) and "truncated" in str(err):
        return f"truncated or damaged image data: {err}"
    return f"{type(err).__name__}: {err}"


def _guess_formats(data: bytes) -> list[str] | None:
    """Try the format the magic bytes announce first (Pillow then skips its probing); None
    lets Pillow try every format, which is also what happens when the guess is wrong."""
    if data[:3] == b"\xff\xd8\xff":
        return ["JPEG"]
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return ["PNG"]
    return None


def _decode(data: bytes) -> Image.Image:
    """Decode fully, apply EXIF orientation; raise on anything doubtful."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        image = Image.open(io.BytesIO(data), formats=_guess_formats(data))
        image.load()
    if "exif" in image.info:
        orientation = image.getexif().get(0x0112, 1)
        if orientation not in (1, None):
            transposed = ImageOps.exif_transpose(image)
            transposed.format = image.format
            transposed.mode_before = image.mode
            return transposed
    return image


def probe_one(path: str, known_sha: str | None = None):
    """Facts of one file and its two grey thumbnails ((32, 32), (8, 9)) or None when unreadable."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as err:
        return ProbeResult(path, None, None, error=_describe_error(err)), None
    sha = hashlib.sha256(data).hexdigest()
    if known_sha == sha:
        return ProbeResult(path, len(data), sha, unchanged=True), None
    if not data:
        return ProbeResult(path, 0, sha, error="empty file (0 bytes)"), None
    try:
        image = _decode(data)
        mode = getattr(image, "mode_before", image.mode)
        grey = image.convert("L")
        grey32 = grey if grey.size == (32, 32) else grey.resize((32, 32), _LANCZOS)
        small = (grey32.tobytes(), grey.resize((9, 8), _LANCZOS).tobytes())  # 1024, 72 bytes
    except Exception as err:  # noqa: BLE001 — any decoder failure is a per-file reason
        return ProbeResult(path, len(data), sha, error=_describe_error(err)), None
    return ProbeResult(path, len(data), sha, image.width, image.height, image.format, mode), small


def probe_files(paths: list, known_sha: list) -> list[ProbeResult]:
    """Probe a batch of files (str or bytes paths); hashes are computed for the batch at once."""
    results, greys32, greys9, where = [], [], [], []
    for path, sha in zip(paths, known_sha):
        result, small = probe_one(path, sha)
        results.append(result)
        if small is not None:
            where.append(len(results) - 1)
            greys32.append(small[0])
            greys9.append(small[1])
    if where:
        phashes = phash_from_grey32(np.frombuffer(b"".join(greys32), np.uint8).reshape(-1, 32, 32))
        dhashes = dhash_from_grey9x8(np.frombuffer(b"".join(greys9), np.uint8).reshape(-1, 8, 9))
        for k, index in enumerate(where):
            results[index].phash = int(phashes[k])
            results[index].dhash = int(dhashes[k])
    return results


def worker_init() -> None:
    """Worker processes get one thread each for numpy: the pool provides the parallelism."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
