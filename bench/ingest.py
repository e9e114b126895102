"""Benchmark of Sieve's full ingest (core.ingest.ingest) against imagededup and a bare decode loop.

Entry point: `python bench/ingest.py [--quick]` (see --help). For each shared folder it measures,
in the same run and the same way, images per second of:
- Sieve: open a new catalog in a temp folder, `ingest(...)` (scan, decode, sha256, phash, dhash,
  size, rows in DuckDB), close it;
- imagededup: `PHash().encode_images(folder)`;
- bare decode: `Image.open(path).load()` for every file, in a pool of the same size (the floor).
With --floor, also Sieve's ingest without its hashes: the same run with the grey image, the two
Lanczos thumbnails and the hashes left out (constant thumbnails instead), which shows how much of
the time the bare goal leaves for them. Only where Sieve reads the folder in its own process
(threads, for big images): worker processes import the unchanged code, and the row says so.
Each measurement runs in a fresh process (no warm pool or import carried over) and is timed there
as wall time over the whole folder, with the file cache warmed by one read of every file first.
Contenders take turns, each repeat in another order; the table gives medians. Then Sieve's
stored hashes are compared with imagehash's phash / dhash of every image (a seeded sample of 5,000
where a folder holds more than 10,000). Needs imagededup (see requirements-bench.txt).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from multiprocessing import get_context
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.config import shared_data_dir  # noqa: E402

FOLDERS = ["cifar10-train/images", "cifar10-test/images", "bccd/images"]
CONTENDERS = ["sieve", "imagededup", "bare"]
FLOOR = "sieve-without-hashes"  # --floor: an extra contender
QUICK_IMAGES = 5_000  # --quick: the first files by name of each folder
SAMPLE, SAMPLE_ABOVE, SAMPLE_SEED = 5_000, 10_000, 0  # hash check: seeded sample of big folders


# --- one measurement, in a child process ---------------------------------------------------------


def decode_files(paths: list[str]) -> int:
    from PIL import Image

    for path in paths:
        with Image.open(path) as image:
            image.load()
    return len(paths)


def cpu_seconds() -> float:
    """CPU time of this process and of its children that have ended."""
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return sum(u.ru_utime + u.ru_stime for u in usage)


def time_bare(source: Path, workers: int) -> dict:
    start, cpu = time.perf_counter(), cpu_seconds()
    paths = sorted(str(p) for p in source.iterdir() if not p.name.startswith("."))
    chunks = [paths[k:k + 256] for k in range(0, len(paths), 256)]
    pool = get_context("fork").Pool(workers)
    images = sum(pool.imap_unordered(decode_files, chunks))
    pool.close()
    pool.join()
    return {"seconds": time.perf_counter() - start, "images": images, "cpu": cpu_seconds() - cpu}


def time_imagededup(source: Path, workers: int) -> dict:
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    from imagededup.methods import PHash  # imports torch: before the clock starts

    start, cpu = time.perf_counter(), cpu_seconds()
    hashes = PHash(verbose=False).encode_images(image_dir=str(source), num_enc_workers=workers)
    return {"seconds": time.perf_counter() - start, "images": len(hashes),
            "cpu": cpu_seconds() - cpu}


def time_sieve(source: Path, workers: int, db: Path) -> dict:
    from core import catalog
    from core.ingest import ingest

    start, cpu = time.perf_counter(), cpu_seconds()
    con = catalog.open_catalog(db, program="bench/ingest.py")
    summary = ingest(con, source, fmt="imagefolder", dataset="bench", workers=workers)
    con.close()
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "images": summary.files, "unreadable": summary.unreadable,
            "cpu": cpu_seconds() - cpu + worker_server_cpu()}


def time_sieve_without_hashes(source: Path, workers: int, db: Path) -> dict:
    """`time_sieve` with every decoded image's thumbnails replaced by constant ones (no grey
    image, no resize: hashes are then meaningless). Counts the images that took the shortcut in
    this process, so the report can tell a folder read by worker processes."""
    from core import imageprobe

    shortcut = {"images": 0}
    constant = (bytes(32 * 32), bytes(9 * 8))

    def no_thumbnails(image, numpy_resize):
        shortcut["images"] += 1
        return constant

    imageprobe._grey_thumbnails = no_thumbnails
    result = time_sieve(source, workers, db)
    return {**result, "shortcut": shortcut["images"]}


def worker_server_cpu() -> float:
    """CPU time of Sieve's worker server and of the workers it has reaped (they are its
    children, not ours); read from /proc, 0 where there is none."""
    import multiprocessing.forkserver

    time.sleep(0.2)  # the server reaps the last workers
    pid = getattr(multiprocessing.forkserver._forkserver, "_forkserver_pid", None)
    stat = Path(f"/proc/{pid}/stat")
    if not pid or not stat.exists():
        return 0.0
    ticks = stat.read_text().rsplit(")", 1)[1].split()[11:15]  # utime stime cutime cstime
    return sum(int(t) for t in ticks) / os.sysconf("SC_CLK_TCK")


def run_child(args) -> None:
    source, workers = Path(args.source), args.workers
    if args.child == "sieve":
        result = time_sieve(source, workers, Path(args.db))
    elif args.child == FLOOR:
        result = time_sieve_without_hashes(source, workers, Path(args.db))
    elif args.child == "imagededup":
        result = time_imagededup(source, workers)
    else:
        result = time_bare(source, workers)
    print(json.dumps(result))


def measure(contender: str, source: Path, workers: int, db: Path) -> dict:
    """One timed run of `contender` in a fresh interpreter."""
    command = [sys.executable, str(Path(__file__).resolve()), "--child", contender,
               "--source", str(source), "--workers", str(workers), "--db", str(db)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(f"{contender} on {source} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- inputs --------------------------------------------------------------------------------------


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def prepare_source(folder: Path, tmp: Path, *, quick: bool) -> Path:
    """The folder itself, or with --quick a folder of links to its first QUICK_IMAGES files."""
    files = image_files(folder)
    if not quick or len(files) <= QUICK_IMAGES:
        return folder
    subset = tmp / ("quick-" + folder.parent.name)
    subset.mkdir()
    for path in files[:QUICK_IMAGES]:
        (subset / path.name).symlink_to(path)
    return subset


def warm_cache(source: Path) -> int:
    """Read every file once, so that no contender pays for the disk; returns bytes read."""
    total = 0
    for path in image_files(source):
        total += len(path.read_bytes())
    return total


# --- hash agreement ------------------------------------------------------------------------------


def imagehash_pair(path: str) -> tuple[int, int]:
    import imagehash
    from PIL import Image, ImageOps

    with Image.open(path) as image:
        image = ImageOps.exif_transpose(image)
        return int(str(imagehash.phash(image)), 16), int(str(imagehash.dhash(image)), 16)


def hash_agreement(db: Path, source: Path, workers: int) -> dict:
    """Share of images whose stored phash and dhash equal imagehash's, over every image or a
    seeded sample of SAMPLE (folders above SAMPLE_ABOVE images)."""
    import numpy as np

    from core import catalog

    con = catalog.open_catalog(db, read_only=True)
    table = catalog.hash_table(con, catalog.find_dataset(con, "bench").dataset_id)
    con.close()
    sampled = len(table) > SAMPLE_ABOVE
    if sampled:
        rows = np.random.default_rng(SAMPLE_SEED).choice(len(table), SAMPLE, replace=False)
        table = table.iloc[np.sort(rows)]
    with get_context("fork").Pool(workers) as pool:
        reference = pool.map(imagehash_pair, [str(source / p) for p in table["path"]],
                             chunksize=100)
    phash = np.array([int(h) == r[0] for h, r in zip(table["phash"], reference)])
    dhash = np.array([int(h) == r[1] for h, r in zip(table["dhash"], reference)])
    return {"checked": len(table), "sampled": sampled, "phash": float(phash.mean()),
            "dhash": float(dhash.mean()), "both": float((phash & dhash).mean())}


# --- the run -------------------------------------------------------------------------------------


def bench_folder(folder: Path, tmp: Path, *, quick: bool, repeats: int, workers: int,
                 floor: bool = False) -> dict:
    """Every run of every contender on one folder, and the hash agreement of Sieve's catalog."""
    source = prepare_source(folder, tmp, quick=quick)
    warm_cache(source)
    contenders = CONTENDERS + [FLOOR] * floor
    runs = {c: [] for c in contenders}
    for repeat in range(repeats):
        turn = repeat % len(contenders)
        order = contenders[turn:] + contenders[:turn]  # each goes first in turn
        for contender in order:
            db = tmp / f"{folder.parent.name}-{contender}-{repeat}.duckdb"
            result = measure(contender, source, workers, db)
            runs[contender].append(result)
            log(f"{folder.parent.name} repeat {repeat + 1}: {contender} {result['images']} images "
                f"in {result['seconds']:.2f} s ({result['images'] / result['seconds']:,.0f}/s), "
                f"CPU {result['cpu']:.2f} s")
    images = {c: r[-1]["images"] for c, r in runs.items()}
    if len(set(images.values())) != 1:
        raise RuntimeError(f"contenders saw different image counts in {source}: {images}")
    return {"folder": folder.relative_to(folder.parent.parent).as_posix(),
            "images": images["sieve"], "runs": runs,
            "agreement": hash_agreement(tmp / f"{folder.parent.name}-sieve-{repeats - 1}.duckdb",
                                        source, workers)}


def median_of(result: dict, contender: str, key: str) -> float:
    return statistics.median(run[key] for run in result["runs"][contender])


def table_row(result: dict) -> str:
    n, a = result["images"], result["agreement"]
    s = {c: median_of(result, c, "seconds") for c in CONTENDERS}
    rate = {c: n / s[c] for c in CONTENDERS}
    checked = f"{a['checked']:,} {'sampled' if a['sampled'] else 'all'}"
    return (f"| {result['folder']} | {n:,} | {rate['sieve']:,.0f} | {rate['imagededup']:,.0f} | "
            f"{rate['bare']:,.0f} | {rate['sieve'] / rate['imagededup']:.2f} | "
            f"{s['bare'] / s['sieve']:.2f} | {100 * a['both']:.2f}% of {checked} "
            f"(phash {100 * a['phash']:.2f}%, dhash {100 * a['dhash']:.2f}%) |")


def cpu_row(result: dict) -> str:
    cpu = {c: median_of(result, c, "cpu") for c in CONTENDERS}
    per = {c: 1e6 * cpu[c] / result["images"] for c in CONTENDERS}  # microseconds per image
    return (f"| {result['folder']} | {per['sieve']:,.0f} | {per['imagededup']:,.0f} | "
            f"{per['bare']:,.0f} | {cpu['imagededup'] / cpu['sieve']:.2f} | "
            f"{cpu['bare'] / cpu['sieve']:.2f} |")


def floor_row(result: dict) -> str:
    """Sieve without its hashes against the bare loop, and what the goal (1.5x the bare time)
    leaves for the grey image, the thumbnails and the hashes."""
    runs = result["runs"][FLOOR]
    if any(run["shortcut"] < run["images"] - run["unreadable"] for run in runs):
        return (f"| {result['folder']} | n/a: read by worker processes, which import the "
                "unchanged code | | | | |")
    floor, bare = median_of(result, FLOOR, "seconds"), median_of(result, "bare", "seconds")
    sieve = median_of(result, "sieve", "seconds")
    left = 1.5 * bare - floor
    return (f"| {result['folder']} | {floor:.3f} | {bare:.3f} | {bare / floor:.2f} | "
            f"{sieve - floor:.3f} | {left:.3f} ({1e3 * left / result['images']:.2f} ms per image) |")


def print_report(results: list[dict], args, started: str) -> None:
    subset = f" (--quick: the first {QUICK_IMAGES:,} files of each folder)" if args.quick else ""
    print(f"\nSieve ingest benchmark: {args.workers} processes each, median of {args.repeats} "
          f"runs{subset}")
    print(f"{machine_line()}; load average {started} at start, {load_average()} at end\n")
    print("| folder | images | Sieve img/s | imagededup img/s | bare decode img/s | "
          "Sieve / imagededup | bare time / Sieve time | hash agreement with imagehash |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for result in results:
        print(table_row(result))
    print("\nCPU time of all processes (less sensitive than wall time to other load on the "
          "machine), microseconds per image:\n")
    print("| folder | Sieve | imagededup | bare decode | imagededup / Sieve | bare / Sieve |")
    print("|---|---:|---:|---:|---:|---:|")
    for result in results:
        print(cpu_row(result))
    print("\nSieve: scan, decode, sha256, phash, dhash, size, rows in DuckDB; imagededup: "
          "PHash().encode_images; bare: Image.open(path).load(). Hash agreement: stored phash "
          f"and dhash both equal imagehash's (sample: {SAMPLE:,} images, seed {SAMPLE_SEED}).")
    if args.floor:
        print("\nSieve without its hashes (grey image, thumbnails and hashes left out; --floor), "
              "wall seconds, medians:\n")
        print("| folder | Sieve without hashes | bare decode | bare / without hashes | "
              "what the hashes cost in Sieve | left for them at 1.5x the bare time |")
        print("|---|---:|---:|---:|---:|---:|")
        for result in results:
            print(floor_row(result))
    for r in results:
        runs = ", ".join(f"{c} " + " / ".join(f"{x['seconds']:.2f}" for x in r["runs"][c])
                         for c in r["runs"])
        print(f"Runs (s) {r['folder']}: {runs}")
    command = [os.path.relpath(sys.executable, ROOT), "bench/ingest.py", *sys.argv[1:]]
    print(f"\nCommand: cd {ROOT} && {shlex.join(command)}")


def machine_line() -> str:
    from importlib.metadata import version

    cpuinfo = Path("/proc/cpuinfo")
    models = [line.split(":", 1)[1].strip() for line in
              (cpuinfo.read_text().splitlines() if cpuinfo.exists() else [])
              if line.startswith("model name")]
    packages = ", ".join(f"{name} {version(name)}"
                         for name in ("pillow", "numpy", "imagehash", "imagededup"))
    return (f"Machine: {models[0] if models else platform.processor()}, {os.cpu_count()} cores; "
            f"Python {platform.python_version()}, {packages}")


def load_average() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def parse_args(argv: list[str]):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"only the first {QUICK_IMAGES:,} files of each folder")
    parser.add_argument("--repeats", type=int, default=3, help="runs per contender (median)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="processes per contender (default: every core)")
    parser.add_argument("--folders", nargs="+", default=FOLDERS,
                        help="folders below the shared data folder")
    parser.add_argument("--floor", action="store_true",
                        help="also time Sieve's ingest without its hashes (see the docstring)")
    parser.add_argument("--child", choices=CONTENDERS + [FLOOR], help=argparse.SUPPRESS)
    parser.add_argument("--source", help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.child:
        run_child(args)
        return 0
    data, started = shared_data_dir(), load_average()
    results = []
    with tempfile.TemporaryDirectory(prefix="sieve-bench-ingest-") as tmp:
        for name in args.folders:
            results.append(bench_folder(data / name, Path(tmp), quick=args.quick,
                                        repeats=args.repeats, workers=args.workers,
                                        floor=args.floor))
    print_report(results, args, started)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
