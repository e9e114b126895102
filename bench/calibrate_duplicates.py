"""Calibrate the near-duplicate threshold on real "same photo, different encoding" pairs.

CIFAR-10 train images 0-3999 exist twice in the shared data: as the JPEG export (`images/`) and
as the lossless original (the convnetjs sprites). For each hash method and distance D this
prints the recall on those 4,000 true pairs and the false matches: pairs between a lossless
original and any *other* of the 50,000 train JPEGs within D (a few are real CIFAR duplicates;
nearly all are unrelated images).

Usage: .venv/bin/python bench/calibrate_duplicates.py [--max-distance 16]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.config import shared_data_dir  # noqa: E402
from core.hashsearch import find_pairs_between  # noqa: E402
from core.imageprobe import dhash_from_grey9x8, phash_from_grey32  # noqa: E402
from core.ingest import probe_all  # noqa: E402

LANCZOS = Image.Resampling.LANCZOS


def lossless_images(folder: Path) -> list[Image.Image]:
    """Train images 0-3999 from the sprites: row r of batch b is train index 1000 b + r."""
    images = []
    for b in range(4):
        rows = np.asarray(Image.open(folder / f"cifar10_batch_{b}.png").convert("RGB"))  # (1000, 1024, 3)
        images.extend(Image.fromarray(row.reshape(32, 32, 3)) for row in rows)
    return images


def hashes_of(images: list[Image.Image]) -> dict[str, np.ndarray]:
    greys = [im.convert("L") for im in images]
    g32 = np.stack([np.asarray(g.resize((32, 32), LANCZOS)) for g in greys])
    g9 = np.stack([np.asarray(g.resize((9, 8), LANCZOS)) for g in greys])
    return {"phash": phash_from_grey32(g32), "dhash": dhash_from_grey9x8(g9)}


def jpeg_hashes(folder: Path) -> dict[str, np.ndarray]:
    paths = [str(folder / f"{k:05d}.jpg") for k in range(50_000)]
    results = [r for chunk in probe_all(paths, [None] * len(paths), workers=2) for r in chunk]
    return {m: np.array([getattr(r, m) for r in results], dtype=np.uint64) for m in ("phash", "dhash")}


def calibration_table(lossless: dict, jpegs: dict, *, max_distance: int) -> pd.DataFrame:
    rows = []
    n = len(lossless["phash"])
    for method in ("phash", "dhash"):
        pairs = find_pairs_between(lossless[method], jpegs[method], max_distance=max_distance)
        true = pairs[pairs["i"] == pairs["j"]]
        false = pairs[pairs["i"] != pairs["j"]]
        for d in range(max_distance + 1):
            found = int((true["distance"] <= d).sum())
            wrong = int((false["distance"] <= d).sum())
            rows.append({"method": method, "distance": d, "recall": found / n,
                         "true_pairs": found, "false_pairs": wrong,
                         "precision": found / (found + wrong) if found + wrong else np.nan})
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--max-distance", type=int, default=16)
    args = parser.parse_args()
    train = shared_data_dir() / "cifar10-train"
    start = time.perf_counter()
    lossless = hashes_of(lossless_images(train / "lossless_convnetjs_train_0_3999"))
    jpegs = jpeg_hashes(train / "images")
    table = calibration_table(lossless, jpegs, max_distance=args.max_distance)
    print(f"command: .venv/bin/python bench/calibrate_duplicates.py --max-distance {args.max_distance}")
    print(f"4,000 lossless originals vs 50,000 train JPEGs, {time.perf_counter() - start:.1f} s\n")
    wide = table.pivot(index="distance", columns="method",
                       values=["recall", "false_pairs", "precision"])
    wide.columns = [f"{m} {v}" for v, m in wide.columns]
    for column in [c for c in wide.columns if c.endswith("false_pairs")]:
        wide[column] = wide[column].astype(int)
    print(wide.reset_index().to_markdown(index=False, floatfmt=".4f", intfmt=","))


if __name__ == "__main__":
    main()
