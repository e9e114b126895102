"""Where ingest's time goes for one image: each stage of `core.imageprobe` timed alone, in this
process, on one core, against the bare decode loop's `Image.open(...).load()`.

    .venv/bin/python bench/ingest_stages.py                      # BCCD's 640x480 JPEGs
    .venv/bin/python bench/ingest_stages.py --folder cifar10-test/images --files 2000

Each stage runs over the same files (bytes already in memory, except `read`), best of
--repeats passes (default 5), microseconds per image. "grey and its thumbnails" includes the conversion to grey:
its 32x32 and 9x8 Lanczos thumbnails (a 32x32 image is its own, and its 9x8 is made with the
batch's hashes). `probe_batch` is the whole per-file work of a reader (chunks of 256): the
stages above and Python's bookkeeping.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import sys
import time
from pathlib import Path

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
    args = parser.parse_args()
    folder = shared_data_dir() / args.folder
    if not folder.is_dir():
        sys.exit(f"no folder {folder}: see README (shared data)")

    from threadpoolctl import threadpool_limits

    threadpool_limits(1)  # as in ingest's readers
    from PIL import Image

    from core import imageprobe

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
        ("grey and its thumbnails", lambda image: imageprobe._grey_thumbnails(image, True),
         images),
    ]
    print(f"{len(paths)} files of {args.folder} ({images[0].width}x{images[0].height} "
          f"{images[0].mode}), microseconds per image, best of {args.repeats}:")
    for name, function, items in stages:
        print(f"  {name:34s} {best_per_item(function, items, args.repeats):9.1f}")
    hashes = best_per_item(batches(imageprobe._batch_hashes), [None], args.repeats) / len(paths)
    print(f"  {'phash and dhash, batched':34s} {hashes:9.1f}")
    whole = best_per_item(lambda _: [imageprobe.probe_batch(paths[k:k + 256], [None] * len(
        paths[k:k + 256]), True) for k in range(0, len(paths), 256)], [None], args.repeats)
    print(f"  {'probe_batch (all of the above)':34s} {whole / len(paths):9.1f}")


if __name__ == "__main__":
    main()
