"""Where ingest's time goes for one image: each stage of `core.imageprobe` timed alone, in this
process, on one core, against the bare decode loop's `Image.open(...).load()`.

    .venv/bin/python bench/ingest_stages.py                      # BCCD's 640x480 JPEGs
    .venv/bin/python bench/ingest_stages.py --folder cifar10-test/images --files 2000

Each stage runs over the same files (bytes already in memory, except `read`), best of
--repeats passes (default 5), microseconds per image. "grey and its thumbnails" includes the
conversion to grey: its 32x32 and 9x8 Lanczos thumbnails (a 32x32 image is its own, and its 9x8
is made with the batch's hashes), by the compiled kernel where it is built (core.native), and
again by the numpy path Sieve takes without it. `probe_batch` is the whole per-file work of a reader (chunks of 256): the
stages above and Python's bookkeeping.

`--shortcuts` also times two ways to make a big JPEG's thumbnails faster that change pixels, and
says how many of the folder's hashes would then differ from imagehash's (Sieve's exact paths,
the compiled kernel and numpy, equal imagehash on every file, see bench/ingest.py): libjpeg's
own grey output (the Y channel, no colour conversion) instead of RGB then `convert("L")`, and
float32 passes instead of the exact fixed-point float64 ones.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import os
import sys
import time
from pathlib import Path

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_name] = "1"  # as in ingest's readers; read when numpy loads its BLAS
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.config import shared_data_dir  # noqa: E402


def best_per_item(function, items: list, repeats: int) -> float:
    """Microseconds per item of `function` over `items`, best of `repeats` passes."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for item in items:
            function(item)
        best = min(best, time.perf_counter() - start)
    return best / len(items) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--folder", default="bccd/images", help="folder below the shared data")
    parser.add_argument("--files", type=int, default=364, help="first N files of the folder")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--shortcuts", action="store_true",
                        help="also time the pixel-changing shortcuts (big JPEGs)")
    args = parser.parse_args()
    folder = shared_data_dir() / args.folder
    if not folder.is_dir():
        sys.exit(f"no folder {folder}: see README (shared data)")

    from PIL import Image

    from core import imageprobe, native

    def numpy_path(image):
        """`_grey_thumbnails` as it runs without the compiled kernel (core.native)."""
        with_kernel, native._kernel = native._kernel, lambda: None
        try:
            return imageprobe._grey_thumbnails(image, True)
        finally:
            native._kernel = with_kernel

    paths = sorted(str(p) for p in folder.iterdir() if p.is_file())[:args.files]
    data = [Path(p).read_bytes() for p in paths]
    images = [imageprobe._decode_plain(d) or imageprobe._decode_with_pillow(d)[0] for d in data]
    thumbnails = [imageprobe._grey_thumbnails(image, True) for image in images]

    def batches(function):
        return lambda _: [function(chunk) for chunk in [thumbnails[k:k + 256]
                                                       for k in range(0, len(thumbnails), 256)]]

    stages = [
        ("read the file", imageprobe._read, paths),
        ("sha256", lambda d: hashlib.sha256(d).hexdigest(), data),
        ("decode (Sieve's path)",
         lambda d: imageprobe._decode_plain(d) or imageprobe._decode_with_pillow(d), data),
        ("bare: Image.open().load()", lambda d: Image.open(io.BytesIO(d)).load(), data),
        ("convert to grey", lambda image: image.convert("L"), images),
        ("grey and its thumbnails" + (" (kernel)" if native.available() else ""),
         lambda image: imageprobe._grey_thumbnails(image, True), images),
        ("the same, numpy path (no kernel)", numpy_path, images),
    ]
    if native.available() and imageprobe._png_by_kernel(data[0]) is not None:
        stages.append(("plain PNG: bytes to thumbnails (kernel, no Pillow image)",
                       imageprobe._png_by_kernel, data))
    print(f"{len(paths)} files of {args.folder} ({images[0].width}x{images[0].height} "
          f"{images[0].mode}), microseconds per image, best of {args.repeats}:")
    for name, function, items in stages:
        print(f"  {name:56s} {best_per_item(function, items, args.repeats):9.1f}")
    hashes = best_per_item(batches(imageprobe._batch_hashes), [None], args.repeats) / len(paths)
    print(f"  {'phash and dhash, batched':56s} {hashes:9.1f}")
    whole = best_per_item(lambda _: [imageprobe.probe_batch(paths[k:k + 256], [None] * len(
        paths[k:k + 256]), True) for k in range(0, len(paths), 256)], [None], args.repeats)
    print(f"  {'probe_batch (the whole read of a file)':56s} {whole / len(paths):9.1f}")
    if args.shortcuts:
        print_shortcuts(data, thumbnails, args.repeats)


def float32_thumbnails(grey) -> tuple[bytes, bytes]:
    """Pillow's Lanczos passes (horizontal, then vertical, rounded after each) in float32."""
    import numpy as np

    from core.imageprobe import pillow_lanczos_weights

    def weights(size, out):
        return (pillow_lanczos_weights(size, out) / (1 << 22)).astype(np.float32)

    def rounded(values):
        return np.clip(np.floor(values + 0.5), 0, 255)

    height, width = grey.shape
    across = rounded(grey.astype(np.float32) @ np.concatenate(
        [weights(width, 32), weights(width, 9)]).T)
    return (rounded(weights(height, 32) @ across[:, :32]).astype(np.uint8).tobytes(),
            rounded(weights(height, 8) @ across[:, 32:]).astype(np.uint8).tobytes())


def print_shortcuts(data: list, exact: list, repeats: int) -> None:
    import numpy as np
    from PIL import Image

    from core import imageprobe, native

    def jpeg_grey(d):  # libjpeg decodes the Y channel only
        mode, rawmode, width, height = imageprobe._jpeg_header(d)
        return np.asarray(Image.frombytes("L", (width, height), d, "jpeg", "L", ""))

    def rgb_grey(d):
        return np.asarray(imageprobe._decode_plain(d).convert("L"))

    if any(imageprobe._jpeg_header(d) is None for d in data):
        sys.exit("--shortcuts: every file must be a plain JPEG")
    ways = [("RGB, compiled kernel (Sieve)", imageprobe._decode_plain, native.grey_thumbnails)
            ] * native.available() + [
            ("RGB, convert, exact numpy passes", rgb_grey, imageprobe._large_thumbnails),
            ("RGB, convert, float32 passes", rgb_grey, float32_thumbnails),
            ("Y channel, exact passes", jpeg_grey, imageprobe._large_thumbnails),
            ("Y channel, float32 passes", jpeg_grey, float32_thumbnails)]
    hashes = imageprobe._batch_hashes(exact)
    print(f"Shortcuts, {len(data)} files: microseconds per image from the file's bytes to its two"
          f" thumbnails, and files whose phash / dhash would differ from imagehash's:")
    for name, grey, thumbnails in ways:
        made = [thumbnails(grey(d)) for d in data]
        phash, dhash = imageprobe._batch_hashes(made)
        seconds = best_per_item(lambda d: thumbnails(grey(d)), data, repeats)
        print(f"  {name:36s} {seconds:7.1f}   phash {sum(map(int.__ne__, phash, hashes[0])):3d}"
              f"   dhash {sum(map(int.__ne__, dhash, hashes[1])):3d}")


if __name__ == "__main__":
    main()
