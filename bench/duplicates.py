"""Benchmark of core.hashsearch: CIFAR-10 phash pairs vs imagededup and numpy brute force; scale; degenerate input.

Entry point: `python bench/duplicates.py` (see --help). Prints Markdown tables and the command that produced
them; asserts that every method returns the same pair set. `python bench/duplicates.py page` times the
Duplicates page on 10,000 identical images (written to bench/out/duplicates_page.md). Hashes are cached in bench/out/ (git-ignored).
"""
from __future__ import annotations

import argparse
import json
import resource
import logging
import os
import shlex
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from multiprocessing import Pool
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.config import shared_data_dir  # noqa: E402
from core.hashsearch import find_groups_within, find_pairs_within, plan_search  # noqa: E402

CACHE = ROOT / "bench" / "out" / "cifar10_phash.npy"


# --- inputs ------------------------------------------------------------------------------------


def cifar_paths(data: Path) -> list[Path]:
    """The 60,000 CIFAR-10 images: train 0..49999 then test 0..9999 (hash index = list index)."""
    train = [data / "cifar10-train" / "images" / f"{k:05d}.jpg" for k in range(50_000)]
    test = [data / "cifar10-test" / "images" / f"{k:05d}.png" for k in range(10_000)]
    return train + test


def phash_file(path: Path) -> int:
    import imagehash
    from PIL import Image

    with Image.open(path) as image:
        return int(str(imagehash.phash(image)), 16)  # Sieve's storage: imagehash bit order


def load_cifar_hashes(data: Path, *, cache: Path = CACHE) -> np.ndarray:
    """(60000,) uint64 phash per image, computed once on 2 processes and cached as .npy."""
    if cache.exists():
        return np.load(cache)
    with Pool(2) as pool:
        hashes = np.array(pool.map(phash_file, cifar_paths(data), chunksize=500), dtype=np.uint64)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.save(cache, hashes)
    return hashes


def plant_pairs(n: int, *, seed: int, max_distance: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """(n,) uint64 random hashes and (n // 100, 2) planted pairs (i < j) at distances 0..max_distance."""
    rng = np.random.default_rng(seed)
    hashes = rng.integers(0, 2**64, n, dtype=np.uint64, endpoint=False)
    ends = rng.choice(n, 2 * (n // 100), replace=False).reshape(-1, 2)
    for k, (src, dst) in enumerate(ends):
        flipped = rng.choice(64, k % (max_distance + 1), replace=False)
        hashes[dst] = hashes[src] ^ np.uint64(sum(1 << int(bit) for bit in flipped))
    return hashes, np.sort(ends, axis=1)


# --- competitors -------------------------------------------------------------------------------


def find_pairs_numpy_brute(hashes: np.ndarray, *, max_distance: int, block: int = 512) -> np.ndarray:
    """(K, 2) pairs i < j: the plain baseline, blocked XOR + np.bitwise_count over the upper triangle."""
    found = []
    for start in range(0, hashes.size, block):
        dist = np.bitwise_count(hashes[start : start + block, None] ^ hashes[None, start:])  # (block, N - start)
        rows, cols = np.nonzero(dist <= max_distance)
        keep = cols > rows
        found.append(np.stack([rows[keep] + start, cols[keep] + start], axis=1))
    return np.concatenate(found)


def find_pairs_imagededup(hashes: np.ndarray, *, max_distance: int) -> np.ndarray:
    """(K, 2) pairs i < j from imagededup's PHash().find_duplicates on a {index: hex hash} map."""
    from imagededup.methods import PHash  # imported by `bench_imagededup` before timing starts

    encoding_map = {str(k): f"{int(h):016x}" for k, h in enumerate(hashes)}
    logging.disable(logging.INFO)  # its per-call INFO lines
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "num_enc_workers has no effect"
        found = PHash(verbose=False).find_duplicates(
            encoding_map=encoding_map, max_distance_threshold=max_distance, scores=False
        )
    logging.disable(logging.NOTSET)
    pairs = {(min(int(a), int(b)), max(int(a), int(b))) for a, dups in found.items() for b in dups}
    return np.array(sorted(pairs), dtype=np.int64).reshape(-1, 2)


def pair_set(pairs: np.ndarray) -> set[tuple[int, int]]:
    return set(map(tuple, np.asarray(pairs).tolist()))


@dataclass(frozen=True)
class Timing:
    wall_s: float  # median wall-clock seconds
    cpu_s: float  # median CPU seconds of this process and its finished children (all cores summed)

    def scaled(self, factor: float) -> Timing:
        return Timing(self.wall_s * factor, self.cpu_s * factor)


def cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def time_call(fn, *, repeat: int = 1) -> tuple[Timing, object]:
    """(median timing over `repeat` runs, result of the last run)."""
    walls, cpus, result = [], [], None
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), cpu_seconds()
        result = fn()
        walls.append(time.perf_counter() - wall)
        cpus.append(cpu_seconds() - cpu)
    return Timing(float(np.median(walls)), float(np.median(cpus))), result


# --- benchmarks --------------------------------------------------------------------------------


def bench_cifar(hashes: np.ndarray, *, max_distance: int, imagededup_subset: int | None, repeat: int) -> list[str]:
    """Markdown rows: imagededup, numpy brute force and Sieve on the same hashes, pair sets asserted equal."""
    sieve, pairs = time_call(lambda: find_pairs_within(hashes, max_distance=max_distance), repeat=repeat)
    expected = pair_set(pairs[["i", "j"]].to_numpy())
    brute, brute_pairs = time_call(lambda: find_pairs_numpy_brute(hashes, max_distance=max_distance))
    assert pair_set(brute_pairs) == expected, "numpy brute force and Sieve disagree"
    dedup, dedup_note = bench_imagededup(hashes, max_distance=max_distance, subset=imagededup_subset)
    plan = describe_plan(hashes, max_distance)
    return [
        timing_row("imagededup 0.3.3 `PHash().find_duplicates` (cython, 2 processes)", dedup, sieve, dedup_note),
        timing_row("numpy blocked XOR + `np.bitwise_count` (1 thread)", brute, sieve, f"same {len(expected)} pairs"),
        timing_row("Sieve `find_pairs_within` (2 threads)", sieve, sieve, f"median of {repeat}; {plan}"),
    ]


def timing_row(name: str, timing: Timing, sieve: Timing, note: str) -> str:
    return (
        f"| {name} | {timing.wall_s:.2f} | {timing.cpu_s:.2f} | {timing.wall_s / sieve.wall_s:.1f}x "
        f"| {timing.cpu_s / sieve.cpu_s:.1f}x | {note} |"
    )


def bench_imagededup(hashes: np.ndarray, *, max_distance: int, subset: int | None) -> tuple[Timing, str]:
    """(timing for all hashes, note): measured on all, or on the first `subset` and scaled by (N / n)^2.

    With a subset it also times subset // 2, so the note shows the measured growth exponent.
    """
    import imagededup.methods  # noqa: F401  (import time is not search time)

    if subset is None:
        timing, n_pairs = time_imagededup(hashes, max_distance=max_distance)
        return timing, f"measured on all {hashes.size:,}; same {n_pairs} pairs"
    half, _ = time_imagededup(hashes[: subset // 2], max_distance=max_distance)
    timing, n_pairs = time_imagededup(hashes[:subset], max_distance=max_distance)
    exponent = np.log(timing.wall_s / half.wall_s) / np.log(subset / (subset // 2))
    scale = (hashes.size / subset) ** 2
    return timing.scaled(scale), (
        f"extrapolated: {timing.wall_s:.1f} s on the first {subset:,} x {scale:.1f} (quadratic; "
        f"{half.wall_s:.1f} s on {subset // 2:,}: exponent {exponent:.2f}); same {n_pairs} pairs there"
    )


def time_imagededup(hashes: np.ndarray, *, max_distance: int) -> tuple[Timing, int]:
    """(timing, pair count) of imagededup on `hashes`, after asserting it finds Sieve's pairs."""
    timing, found = time_call(lambda: find_pairs_imagededup(hashes, max_distance=max_distance))
    sieve = find_pairs_within(hashes, max_distance=max_distance)
    assert pair_set(found) == pair_set(sieve[["i", "j"]].to_numpy()), "imagededup and Sieve disagree"
    return timing, len(found)


def describe_plan(hashes: np.ndarray, max_distance: int) -> str:
    plan = plan_search(np.unique(hashes).size, max_distance=max_distance)
    if plan.method == "brute":
        return "plan: brute force"
    used = [(b, r) for b, r in zip(plan.chunk_bits, plan.chunk_radii) if r >= 0]
    return f"plan: {len(plan.chunk_bits)} chunks, (bits, radius) " + " ".join(f"({b},{r})" for b, r in used)


def run_child(args: list[str]) -> dict:
    """Run this script in a fresh process (so peak RSS is its own) and parse its JSON line."""
    done = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def peak_rss_mib() -> float:
    """This process's peak resident memory (VmHWM; ru_maxrss would carry the parent's over exec)."""
    status = Path("/proc/self/status").read_text()
    return int(status.split("VmHWM:")[1].split()[0]) / 1024  # KiB -> MiB


def measure_scale(n: int, *, max_distance: int, seed: int) -> dict:
    """Child: time `find_pairs_within` on n planted hashes; check every planted pair is found."""
    hashes, planted = plant_pairs(n, seed=seed, max_distance=max_distance)
    before = peak_rss_mib()
    timing, pairs = time_call(lambda: find_pairs_within(hashes, max_distance=max_distance))
    found = pair_set(pairs[["i", "j"]].to_numpy())
    missing = len(pair_set(planted) - found)
    assert missing == 0, f"{missing} planted pairs not found"
    return {"wall_s": timing.wall_s, "cpu_s": timing.cpu_s, "rss_before_mib": before, "peak_rss_mib": peak_rss_mib(),
            "planted": len(planted), "random": len(found) - len(planted), "plan": describe_plan(hashes, max_distance)}


def measure_identical(n: int, *, what: str) -> dict:
    """Child: n copies of one hash, through find_groups_within or find_pairs_within."""
    hashes = np.full(n, 0xF0F0_1234_5678_9ABC, np.uint64)
    before = peak_rss_mib()
    if what == "groups":
        timing, groups = time_call(lambda: find_groups_within(hashes, max_distance=10))
        result = f"{int(np.bincount(groups).max()):,} members in the largest group"
    else:
        timing, pairs = time_call(lambda: find_pairs_within(hashes, max_distance=10))
        result = f"{len(pairs):,} pairs"
    return {"wall_s": timing.wall_s, "cpu_s": timing.cpu_s, "rss_before_mib": before, "peak_rss_mib": peak_rss_mib(),
            "result": result}


def measured_cells(r: dict) -> str:
    """Markdown cells: wall s | CPU s | peak RSS MiB | peak RSS above the inputs MiB."""
    above = r["peak_rss_mib"] - r["rss_before_mib"]
    return f"{r['wall_s']:.2f} | {r['cpu_s']:.2f} | {r['peak_rss_mib']:.0f} | {above:.0f}"


def bench_scale(sizes: list[int], *, max_distance: int, seed: int) -> list[str]:
    rows = []
    for n in sizes:
        r = run_child(["scale-one", "--n", str(n), "--max-distance", str(max_distance), "--seed", str(seed)])
        rows.append(f"| {n:,} | {measured_cells(r)} | {r['planted']:,} (all found) | {r['random']:,} | {r['plan']} |")
    return rows


def bench_identical(n: int) -> list[str]:
    rows = []
    for what, call in [("groups", "find_groups_within"), ("pairs", "find_pairs_within")]:
        r = run_child(["identical-one", "--n", str(n), "--what", what])
        rows.append(f"| `{call}` | {measured_cells(r)} | {r['result']} |")
    return rows


# --- the Duplicates page on one huge cluster ----------------------------------------------------

PAGE_OUT = ROOT / "bench" / "out" / "duplicates_page.md"


def identical_catalog(folder: Path, n: int) -> Path:
    """A catalog of n copies of one PNG (train/scene/k.png, ingested as ImageFolder)."""
    from PIL import Image

    from core import catalog
    from core.ingest import ingest

    rng = np.random.default_rng(0)
    source = folder / "one.png"
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(source)
    images = folder / "images" / "train" / "scene"
    images.mkdir(parents=True)
    for k in range(n):
        os.link(source, images / f"{k:05d}.png")
    db = folder / "identical.duckdb"
    con = catalog.open_catalog(db)
    ingest(con, folder / "images", fmt="imagefolder", dataset="identical", workers=2)
    con.close()
    return db


def time_page(db: Path, method: str, repeat: int) -> list[float]:
    """Seconds of each cold render of the Duplicates page (Streamlit's caches cleared first)."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    os.environ["SIEVE_DB"] = str(db)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    at.session_state["dataset"] = "identical"
    at.run()
    at.switch_page("pages/duplicates.py")
    at.session_state["dup_method"] = method
    seconds = []
    for _ in range(repeat):
        st.cache_data.clear()
        start = time.perf_counter()
        at.run()
        seconds.append(time.perf_counter() - start)
        assert not at.exception, [e.value for e in at.exception]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Groups"] == "1", metrics
    return seconds


def bench_page(n: int, repeat: int) -> list[str]:
    """Markdown rows: the page's cold render per method, and listing every pair (the old page's
    first step) on the same hashes as the baseline."""
    import tempfile

    from core import catalog, embeddings

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        db = identical_catalog(Path(tmp), n)
        con = catalog.open_catalog(db)
        dataset = catalog.find_dataset(con, "identical")
        hashes = catalog.hash_table(con, dataset.dataset_id)["phash"].to_numpy(np.uint64)
        embeddings.dataset_embeddings(con, dataset)  # computed once, as the page's job would
        con.close()
        baseline, pairs = time_call(lambda: find_pairs_within(hashes, max_distance=4))
        rows.append(f"| listing every pair (`find_pairs_within`, what the page did before) | "
                    f"{baseline.wall_s:.2f} | {len(pairs):,} pairs |")
        del pairs
        for method in ("phash", "embedding"):
            seconds = time_page(db, method, repeat)
            rows.append(f"| page render, {method} (median of {repeat}, cold caches) | "
                        f"{np.median(seconds):.2f} | runs: {', '.join(f'{s:.2f}' for s in seconds)} |")
    return rows


def page_report(argv: list[str], n: int, repeat: int) -> str:
    lines = [f"Command: `{shlex.join(['.venv/bin/python', 'bench/duplicates.py', *argv])}`",
             f"Machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start", "",
             f"### Duplicates page, {n:,} identical images (one group of {n:,}, "
             f"{n * (n - 1) // 2:,} pairs)", "", "| what | wall s | notes |", "|---|---:|---|",
             *bench_page(n, repeat), "", f"Load average at end: {os.getloadavg()[0]:.1f}"]
    return "\n".join(lines)


# --- command line ------------------------------------------------------------------------------

CIFAR_HEADER = (
    "| method | wall s | CPU s | Sieve faster (wall) | Sieve faster (CPU) | notes |\n|---|---:|---:|---:|---:|---|"
)
SCALE_HEADER = (
    "| N | wall s | CPU s | peak RSS MiB | above inputs MiB | planted pairs | random pairs | plan |\n"
    "|---:|---:|---:|---:|---:|---:|---:|---|"
)
IDENTICAL_HEADER = "| call | wall s | CPU s | peak RSS MiB | above inputs MiB | result |\n|---|---:|---:|---:|---:|---|"


def print_report(args: argparse.Namespace, argv: list[str]) -> None:
    print(f"Command: `{shlex.join(['.venv/bin/python', 'bench/duplicates.py', *argv])}`")
    print(f"Machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start\n")
    if not args.skip_cifar:
        hashes = load_cifar_hashes(shared_data_dir())
        print(f"### All pairs within {args.max_distance} among {hashes.size:,} CIFAR-10 phashes\n\n{CIFAR_HEADER}")
        rows = bench_cifar(
            hashes, max_distance=args.max_distance, imagededup_subset=args.imagededup_subset, repeat=args.repeat
        )
        print(*rows, sep="\n")
    distance = args.scale_distance
    print(f"\n### Random hashes, 1% planted pairs at 0..{distance}, all pairs within {distance}\n\n{SCALE_HEADER}")
    print(*bench_scale(args.sizes, max_distance=distance, seed=args.seed), sep="\n")
    print(f"\n### Degenerate: {args.identical:,} identical hashes, max distance 10\n\n{IDENTICAL_HEADER}")
    print(*bench_identical(args.identical), sep="\n")
    print(f"\nLoad average at end: {os.getloadavg()[0]:.1f}")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("mode", nargs="?", default="report",
                        choices=["report", "scale-one", "identical-one", "page"])
    parser.add_argument("--max-distance", type=int, default=10, help="CIFAR search radius (scale-one: its radius)")
    parser.add_argument(
        "--imagededup-subset", type=int, default=None,
        help="run imagededup on the first N hashes only and scale quadratically (default: all 60k, many minutes)",
    )
    parser.add_argument("--repeat", type=int, default=5, help="Sieve runs on CIFAR (median reported)")
    parser.add_argument("--skip-cifar", action="store_true")
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 200_000, 500_000, 1_000_000])
    parser.add_argument("--scale-distance", type=int, default=8)
    parser.add_argument("--identical", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n", type=int, help="scale-one / identical-one: number of hashes")
    parser.add_argument("--what", choices=["groups", "pairs"], help="identical-one: which call")
    return parser.parse_args(argv)


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    if args.mode == "scale-one":
        print(json.dumps(measure_scale(args.n, max_distance=args.max_distance, seed=args.seed)))
    elif args.mode == "identical-one":
        print(json.dumps(measure_identical(args.n, what=args.what)))
    elif args.mode == "page":
        text = page_report(argv, args.identical, args.repeat)
        print(text)
        PAGE_OUT.parent.mkdir(parents=True, exist_ok=True)
        PAGE_OUT.write_text(text + "\n")
    else:
        print_report(args, argv)


if __name__ == "__main__":
    main(sys.argv[1:])
