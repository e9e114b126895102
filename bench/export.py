"""Benchmark of Sieve's export (core.export.export_dataset) of the 60,000-image CIFAR-10 dataset
of the demo catalog against a plain per-sample json.dump exporter.

Entry point: `python bench/export.py [--db FILE] [--repeats N]`. FiftyOne, the tool people would
otherwise export with, cannot be installed here; the baseline does what its per-sample exporters
do at their simplest: one query for the images and their resolved class (the catalog's live
views), then per sample a dict, a `json.dump` into a JSON-lines file and, for the image
formats, a copy or link of the image. Sieve writes Parquet (labels only, as the baseline's
labels-only run) and COCO (annotations, manifest, class weights, record, images copied or
linked). Contenders take turns, in alternating order, each run starting after the previous
one's files were deleted and written back (`os.sync`); the table gives medians of wall time,
with the file cache warm; "files" is the part of that time spent creating the image copies or links
(Sieve: from its first to its last image; baseline: summed over the copy and link calls), so
that the labels' share can be told from the file system's. Targets: Parquet under 5 s, COCO
under 20 s.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core import catalog  # noqa: E402
from core.export import ExportOptions, export_dataset  # noqa: E402

DEFAULT_DB = Path("/tmp/exportbench/demo.duckdb")
# (row name, Sieve format, image mode, target seconds)
CASES = [("Parquet, labels only", "parquet", "none", 5.0),
         ("COCO, images linked", "coco", "link", 20.0),
         ("COCO, images copied", "coco", "copy", 20.0)]


def baseline_export(con, dataset, out: Path, mode: str) -> tuple[int, float]:
    """Per sample: a dict, json.dump'ed into labels.jsonl, and the image copied or linked.
    Returns (samples, seconds spent copying or linking)."""
    rows = con.execute("""SELECT i.image_id, i.path, s.split, c.name AS label, i.width, i.height
        FROM images i JOIN image_state s USING (image_id)
        LEFT JOIN resolved_class r USING (image_id)
        LEFT JOIN classes c ON c.dataset_id = i.dataset_id AND c.class_id = r.class_id
        WHERE i.dataset_id = ? AND i.status = 'ok' AND NOT s.excluded ORDER BY i.image_id""",
                       [dataset.dataset_id]).fetchall()
    out.mkdir(parents=True)
    file_seconds = 0.0
    with open(out / "labels.jsonl", "w", encoding="utf-8") as handle:
        for image_id, path, split, label, width, height in rows:
            target = None
            if mode != "none":
                target = out / "data" / str(split) / f"{image_id}_{Path(path).name}"
                target.parent.mkdir(parents=True, exist_ok=True)
                source = os.path.join(dataset.root, path)
                start = time.perf_counter()
                os.symlink(source, target) if mode == "link" else shutil.copyfile(source, target)
                file_seconds += time.perf_counter() - start
            json.dump({"id": image_id, "filepath": str(target or path), "split": split,
                       "label": label, "width": width, "height": height}, handle)
            handle.write("\n")
    return len(rows), file_seconds


def sieve_export(con, dataset, out: Path, fmt: str, mode: str) -> tuple[int, float]:
    """Returns (images, seconds from the first image written to the labels), from the export's
    progress reports."""
    marks = {}

    def progress(done: int, total: int, message: str = "") -> None:
        marks.setdefault(message, time.perf_counter())

    images = export_dataset(con, dataset, out, ExportOptions(format=fmt, images=mode),
                            progress=progress).images
    files = marks["writing labels"] - marks["writing images"] if "writing images" in marks else 0.0
    return images, files


def timed(work) -> tuple[float, int, float]:
    start = time.perf_counter()
    count, file_seconds = work()
    return time.perf_counter() - start, count, file_seconds


def run_case(con, dataset, fmt: str, mode: str, repeats: int, scratch: Path) -> dict:
    times = {"sieve": [], "baseline": []}
    files = {"sieve": [], "baseline": []}
    counts = {}
    for repeat in range(repeats):
        order = ["sieve", "baseline"] if repeat % 2 == 0 else ["baseline", "sieve"]
        for who in order:
            out = scratch / f"{who}-{fmt}-{mode}-{repeat}"
            work = (lambda: sieve_export(con, dataset, out, fmt, mode)) if who == "sieve" \
                else (lambda: baseline_export(con, dataset, out, mode))
            seconds, counts[who], file_seconds = timed(work)
            times[who].append(seconds)
            files[who].append(file_seconds)
            shutil.rmtree(out)
            os.sync()  # the next run starts with nothing left to write back (untimed)
            log(f"{fmt} {mode} {who} run {repeat + 1}: {seconds:.2f} s, {counts[who]} images")
    return {"times": times, "files": files, "images": counts}


def ensure_demo(db: Path) -> None:
    if not db.exists():
        db.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "core", "demo", "--db", str(db)], cwd=ROOT,
                       check=True)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def load_average() -> str:
    return " / ".join(f"{v:.1f}" for v in os.getloadavg())


def print_report(results: list[tuple], args, load_start: str) -> None:
    command = [os.path.relpath(sys.executable, ROOT), "bench/export.py", *sys.argv[1:]]
    print(f"\nSieve export benchmark: CIFAR-10 of the demo catalog, median of {args.repeats} runs; "
          f"{os.cpu_count()} cores, load average {load_start} at start, {load_average()} at end\n")
    print("| export | images | Sieve (s) | of which files | per-sample json.dump (s) | of which "
          "files | baseline / Sieve | target | met |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for name, target, result in results:
        sieve, base = (statistics.median(result["times"][k]) for k in ("sieve", "baseline"))
        sieve_files, base_files = (statistics.median(result["files"][k])
                                   for k in ("sieve", "baseline"))
        print(f"| {name} | {result['images']['sieve']:,} | {sieve:.2f} | {sieve_files:.2f} | "
              f"{base:.2f} | {base_files:.2f} | {base / sieve:.2f} | < {target:g} s | "
              f"{'yes' if sieve < target else 'no'} |")
    for name, _, result in results:
        runs = {k: [round(t, 2) for t in v] for k, v in result["times"].items()}
        print(f"\nRuns (s) {name}: {runs}", end="")
    print(f"\n\nCommand: cd {ROOT} && {shlex.join(command)}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", type=Path, default=DEFAULT_DB,
                        help="demo catalog (built with `python -m core demo` when missing)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cases", default=",".join(str(k) for k in range(len(CASES))),
                        help="comma-separated cases: 0 parquet, 1 coco linked, 2 coco copied")
    args = parser.parse_args(argv)
    ensure_demo(args.db)
    load_start = load_average()
    con = catalog.open_catalog(args.db, program="bench/export.py")
    dataset = catalog.find_dataset(con, "cifar10")
    results = []
    with tempfile.TemporaryDirectory(prefix="sieve-export-bench-") as scratch:
        for k in map(int, args.cases.split(",")):
            name, fmt, mode, target = CASES[k]
            results.append((name, target, run_case(con, dataset, fmt, mode, args.repeats,
                                                   Path(scratch))))
    con.close()
    print_report(results, args, load_start)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
