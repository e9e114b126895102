"""Near duplicates beyond hashes: phash, dhash and embeddings on planted edits of real images.

Each of `--planted` CIFAR-10 test images gets one edited copy (a crop of 1-3 pixels resized back,
a shift of 1-3 pixels, a colour, contrast or brightness change, a JPEG re-encode, or a crop and a
colour change and a JPEG re-encode together), written as a file beside the 10,000 originals, which
stay as distractors. Files are hashed by ingest's code (`probe_files`) and embedded by
`core.embeddings` exactly as a dataset would be. For each method the pairs are ranked (distance,
or 1 - cosine similarity) and compared at equal numbers of returned pairs: recall of the planted
pairs among the first K pairs (ties at the last distance shared in proportion). Every other pair
counts as false, although CIFAR-10's own test-set duplicates are among them.

Usage: .venv/bin/python bench/embeddings.py [--planted 2100] [--seed 0]
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageEnhance

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core import embeddings  # noqa: E402
from core.config import shared_data_dir  # noqa: E402
from core.duplicates import DEFAULT_DISTANCE  # noqa: E402
from core.hashsearch import find_pairs_within  # noqa: E402
from core.imageprobe import probe_files  # noqa: E402
from core.micromodel import load_images  # noqa: E402

OUT = ROOT / "bench" / "out" / "embeddings.md"
EDITS = ("crop", "shift", "colour", "contrast", "brightness", "jpeg", "crop+colour+jpeg")
HASH_SEARCH = 22  # widest Hamming distance searched: enough pairs for the largest budget
PHASH_POINTS = (2, 4, 6, 8, 10, 12, 14, 16)  # operating points: the pairs phash returns there


# --- planted edits -------------------------------------------------------------------------------


def edit(image: Image.Image, kind: str, rng: np.random.Generator) -> Image.Image:
    """`image` (32x32 RGB) with one edit of `kind`, strength drawn from `rng`."""
    if kind == "crop":
        left, top, right, bottom = rng.integers(1, 4, 4)
        box = (int(left), int(top), 32 - int(right), 32 - int(bottom))
        return image.crop(box).resize(image.size, Image.Resampling.BILINEAR)
    if kind == "shift":
        dx, dy = (int(v) * int(rng.choice([-1, 1])) for v in rng.integers(1, 4, 2))
        pixels = np.pad(np.asarray(image), ((3, 3), (3, 3), (0, 0)), mode="edge")  # edge repeated
        return Image.fromarray(pixels[3 - dy:35 - dy, 3 - dx:35 - dx])
    if kind == "colour":
        return ImageEnhance.Color(image).enhance(rng.choice([rng.uniform(0.5, 0.8), rng.uniform(1.25, 1.6)]))
    if kind == "contrast":
        return ImageEnhance.Contrast(image).enhance(rng.choice([rng.uniform(0.6, 0.85), rng.uniform(1.2, 1.5)]))
    if kind == "brightness":
        return ImageEnhance.Brightness(image).enhance(rng.choice([rng.uniform(0.65, 0.85), rng.uniform(1.15, 1.35)]))
    if kind == "jpeg":
        return image  # written with a random JPEG quality by `plant`
    return edit(edit(image, "crop", rng), "colour", rng)  # crop+colour (+ JPEG when written)


def plant(originals: list[Path], folder: Path, *, planted: int, seed: int) -> pd.DataFrame:
    """Write one edited copy of `planted` random originals into `folder`.
    Columns: source (index into originals), kind, path."""
    rng = np.random.default_rng(seed)
    sources = np.sort(rng.choice(len(originals), planted, replace=False))
    rows = []
    for k, source in enumerate(sources):
        kind = EDITS[k % len(EDITS)]
        with Image.open(originals[source]) as image:
            copy = edit(image.convert("RGB"), kind, rng)
        jpeg = kind.endswith("jpeg")
        path = folder / f"{k:05d}_{kind.replace('+', '_')}.{'jpg' if jpeg else 'png'}"
        copy.save(path, quality=int(rng.integers(50, 91))) if jpeg else copy.save(path)
        rows.append({"source": int(source), "kind": kind, "path": path})
    return pd.DataFrame(rows)


# --- ranked pairs per method ---------------------------------------------------------------------


def hash_pairs(paths: list[Path], method: str) -> pd.DataFrame:
    """Columns i, j, score (Hamming distance; smaller is closer)."""
    results = probe_files([str(p) for p in paths], [None] * len(paths))
    hashes = np.array([getattr(r, method) for r in results], dtype=np.uint64)
    found = find_pairs_within(hashes, max_distance=HASH_SEARCH)
    return pd.DataFrame({"i": found["i"], "j": found["j"], "score": found["distance"].astype(float)})


def embedding_pairs(vectors: np.ndarray, *, budget: int) -> pd.DataFrame:
    """Columns i, j, score (1 - cosine similarity), the `budget` closest pairs at least."""
    for min_similarity in (0.8, 0.6, 0.4, 0.2, 0.0):
        found = embeddings.find_pairs_above(vectors, min_similarity=min_similarity)
        if len(found) >= budget:
            break
    return pd.DataFrame({"i": found["i"], "j": found["j"], "score": 1.0 - found["similarity"]})


def recall_at(pairs: pd.DataFrame, truth: set, budget: int) -> tuple[float, float]:
    """(true pairs among the `budget` closest, the score of the last one); pairs tied at that
    score count in proportion to the places left for them."""
    true = np.array([(i, j) in truth for i, j in zip(pairs["i"], pairs["j"])])
    scores = pairs["score"].to_numpy()
    if len(scores) <= budget:
        return float(true.sum()), float(scores.max()) if len(scores) else np.nan
    edge = np.sort(scores)[budget - 1]
    below, tied = scores < edge, scores == edge
    share = (budget - below.sum()) / tied.sum()
    return float(true[below].sum() + share * true[tied].sum()), float(edge)


# --- report --------------------------------------------------------------------------------------


def compare(ranked: dict[str, pd.DataFrame], truth: set, budgets: list[int], planted: int) -> str:
    header = "| pairs returned | " + " | ".join(f"{m} recall (at distance)" for m in ranked) + " |"
    lines = [header, "|---:|" + "---:|" * len(ranked)]
    for budget in budgets:
        cells = []
        for pairs in ranked.values():
            found, edge = recall_at(pairs, truth, budget)
            cells.append(f"{found / planted:.3f} ({edge:.3g})")
        lines.append(f"| {budget:,} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def by_kind(ranked: dict[str, pd.DataFrame], truth_kinds: dict, budget: int) -> str:
    kinds = list(dict.fromkeys(truth_kinds.values()))
    lines = ["| edit | " + " | ".join(ranked) + " |", "|---|" + "---:|" * len(ranked)]
    found = {}
    for method, pairs in ranked.items():
        top = pairs.sort_values("score", kind="stable").head(budget)
        hits = [truth_kinds.get((i, j)) for i, j in zip(top["i"], top["j"])]
        found[method] = pd.Series([h for h in hits if h]).value_counts()
    total = pd.Series(list(truth_kinds.values())).value_counts()
    for kind in kinds:
        lines.append(f"| {kind} ({total[kind]}) | "
                     + " | ".join(f"{found[m].get(kind, 0) / total[kind]:.3f}" for m in ranked) + " |")
    return "\n".join(lines)


def at_defaults(ranked: dict[str, pd.DataFrame], truth: set, planted: int) -> str:
    """Markdown rows: pairs returned, recall and precision at DEFAULT_DISTANCE of each method."""
    lines = ["| method | threshold | pairs returned | planted found | recall | precision |",
             "|---|---:|---:|---:|---:|---:|"]
    for method, pairs in ranked.items():
        within = pairs[pairs["score"] <= DEFAULT_DISTANCE[method]]
        found = sum((i, j) in truth for i, j in zip(within["i"], within["j"]))
        lines.append(f"| {method} | {DEFAULT_DISTANCE[method]} | {len(within):,} | {found:,} | "
                     f"{found / planted:.3f} | {found / max(len(within), 1):.3f} |")
    return "\n".join(lines)


def search_timing(n: int, dims: int, seed: int) -> str:
    """Seconds of `search_above` on n random unit vectors (float16), and numpy's plain matmul."""
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, dims)).astype(np.float32)
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float16)
    start, cpu = time.perf_counter(), time.process_time()
    found = embeddings.search_above(vectors, min_similarity=0.9)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    return (f"Exact search, {n:,} x {dims} float16 unit vectors, all pairs with cosine >= 0.9: "
            f"{seconds:.1f} s wall, {cpu:.1f} s CPU ({len(found.a):,} pairs), load average "
            f"{os.getloadavg()[0]:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--planted", type=int, default=2100, help="edited copies planted")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--search-n", type=int, default=60_000, help="vectors in the search timing")
    args = parser.parse_args()
    command = shlex.join([".venv/bin/python", "bench/embeddings.py", *sys.argv[1:]])
    lines = [f"Command: `{command}`",
             f"Machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start", ""]
    originals = [shared_data_dir() / "cifar10-test" / "images" / f"{k:05d}.png" for k in range(10_000)]
    with tempfile.TemporaryDirectory() as tmp:
        copies = plant(originals, Path(tmp), planted=args.planted, seed=args.seed)
        paths = originals + list(copies["path"])
        truth_kinds = {(int(s), len(originals) + k): kind
                       for k, (s, kind) in enumerate(zip(copies["source"], copies["kind"]))}
        start = time.perf_counter()
        ranked = {m: hash_pairs(paths, m) for m in ("phash", "dhash")}
        hash_s = time.perf_counter() - start
        start = time.perf_counter()
        vectors = embeddings.embed_pixels(load_images(paths, workers=2)).astype(np.float16)
        embed_s = time.perf_counter() - start
    phash_counts = [int((ranked["phash"]["score"] <= d).sum()) for d in PHASH_POINTS]
    budgets = sorted(set([args.planted, 2 * args.planted, 5 * args.planted, *phash_counts]))
    start = time.perf_counter()
    ranked["embedding"] = embedding_pairs(vectors, budget=max(budgets))
    search_s = time.perf_counter() - start
    truth = set(truth_kinds)
    kind_budget = 2 * args.planted
    lines += [f"{len(paths):,} images: 10,000 CIFAR-10 test PNGs and {args.planted:,} edited copies "
              f"({', '.join(EDITS)}, in turn). Hashing {hash_s:.1f} s; embedding {embed_s:.1f} s "
              f"({embeddings.EmbeddingConfig()}); embedding search {search_s:.1f} s.", "",
              "### Recall of the planted pairs at equal numbers of returned pairs", "",
              "Operating points: 1, 2 and 5 times the planted count, and the pairs phash returns at "
              f"distances {', '.join(map(str, PHASH_POINTS))} (4 is its default). In brackets: the "
              "distance of the last pair returned (Hamming bits; 1 - cosine for embeddings).", "",
              compare(ranked, truth, budgets, args.planted), "",
              f"### Recall per edit at {kind_budget:,} returned pairs (twice the planted count)", "",
              by_kind(ranked, truth_kinds, kind_budget), "",
              "### At each method's default threshold", "", at_defaults(ranked, truth, args.planted), "",
              search_timing(args.search_n, vectors.shape[1], args.seed),
              f"Load average at end: {os.getloadavg()[0]:.1f}"]
    text = "\n".join(lines)
    print(text)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text + "\n")


if __name__ == "__main__":
    main()
