"""Benchmark of ingest's engines: the local process pool against Ray on one node and on two nodes.

Entry point: `python bench/ray_ingest.py [--repeats 3] [--cpus 2]` (needs requirements-ray.txt).
Every contender ingests the 10,000 CIFAR-10 test PNGs with their labels into a new catalog
(`core.ingest.ingest`: scan, decode, sha256, phash, dhash, rows in DuckDB), in this process,
with the same number of CPUs: the pool gets `--cpus` workers, Ray one node of `--cpus` CPUs, or
a head and a second node sharing them. On one machine Ray cannot be faster than the pool, so the
figure to read is its overhead. The first run of each contender is cold (worker start, Ray's
connection); the table gives it apart from the median of the warm repeats. It also prints the
CPU cost of one image read in this process alone, and the catalog's size per image.

`--queries N` instead times the catalog queries the pages run on N images: the CIFAR catalog is
ingested once, then its images and labels are copied (new ids and paths) up to N rows; each
query's wall time is the median of 3, and DuckDB's EXPLAIN ANALYZE of its statements names the
costliest operators with the rows they produced.

`--search N [N ...]` instead times the all-pairs near-duplicate search (`find_pairs_within`,
phash's default distance 4) on N random 64-bit hashes, each size in a fresh process (peak
memory), beside the search planner's own estimate for 10 and 100 million.
"""
from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core import catalog, rayengine  # noqa: E402
from core.config import shared_data_dir  # noqa: E402
from core.imageprobe import probe_batch  # noqa: E402
from core.ingest import ingest  # noqa: E402

NODE_STORE = 200 << 20  # bytes of object store per Ray node


def labels_csv(data: Path, out: Path) -> Path:
    """cifar10-test's labels.csv (index, label_id, label_name) as image,label rows."""
    table = pd.read_csv(data / "cifar10-test" / "labels.csv")
    pd.DataFrame({"image": [f"{i:05d}.png" for i in table["index"]],
                  "label": table["label_name"]}).to_csv(out, index=False)
    return out


def probe_cost(source: Path) -> dict:
    """CPU seconds per image of `probe_batch` in this process, chunks of 256, no pool."""
    paths = sorted(str(p) for p in source.iterdir())
    cpu, wall = time.process_time(), time.perf_counter()
    for start in range(0, len(paths), 256):
        probe_batch(paths[start:start + 256], [None] * len(paths[start:start + 256]))
    return {"images": len(paths), "cpu_s": time.process_time() - cpu,
            "wall_s": time.perf_counter() - wall}


def driver_list_bytes(n: int = 1_000_000) -> float:
    """Bytes per image of what `core.ingest` holds before the first file is read (relative
    and full paths, known hashes, chunks), for n names like 'train/class_0001/img_000000001.jpg'."""
    from core.ingest import _chunks

    def rss() -> int:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    before = rss()
    paths = [f"train/class_{i % 1000:04d}/img_{i:09d}.jpg" for i in range(n)]
    full = [os.path.join("/mnt/datasets/photos", p) for p in paths]
    known = [None] * n
    chunks = list(zip(_chunks(full, 256), _chunks(known, 256)))
    held = rss() - before
    del paths, full, known, chunks
    return held / n


def time_ingest(source: Path, labels: Path, folder: Path, **engine) -> tuple[float, float, int]:
    """(wall seconds, this process's CPU seconds, catalog bytes) of one ingest into a new
    catalog in `folder`. This process is the driver: workers and Ray tasks are not counted."""
    db = folder / f"catalog-{time.perf_counter_ns()}.duckdb"
    con = catalog.open_catalog(db, program="bench/ray_ingest.py")
    started, cpu = time.perf_counter(), time.process_time()
    summary = ingest(con, source, fmt="csv", labels=labels, dataset="cifar10-test", **engine)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    con.close()
    assert (summary.added, summary.labels_added) == (10000, 10000), summary
    return seconds, cpu, db.stat().st_size


def start_cluster(cpus: int, nodes: int):
    """A Ray cluster on this machine: `nodes` nodes sharing `cpus` CPUs; (cluster, seconds)."""
    from ray.cluster_utils import Cluster

    started = time.perf_counter()
    share = [cpus // nodes + (1 if k < cpus % nodes else 0) for k in range(nodes)]
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": share[0], "include_dashboard": False, "object_store_memory": NODE_STORE})
    for cpus_here in share[1:]:
        cluster.add_node(num_cpus=cpus_here, object_store_memory=NODE_STORE)
    cluster.wait_for_nodes()
    return cluster, time.perf_counter() - started


def measure(name: str, runs: int, source: Path, labels: Path, folder: Path, **engine) -> dict:
    times, driver, size = [], [], 0
    for _ in range(runs):
        seconds, cpu, size = time_ingest(source, labels, folder, **engine)
        times.append(seconds)
        driver.append(cpu)
    warm = statistics.median(times[1:]) if len(times) > 1 else times[0]
    return {"contender": name, "cold_s": times[0], "warm_s": warm, "runs": times,
            "driver_cpu_s": statistics.median(driver[1:] or driver), "catalog_bytes": size}


def contenders(args, source: Path, labels: Path, folder: Path) -> list[dict]:
    rows = [measure(f"local pool, {args.cpus} processes", args.repeats + 1, source, labels,
                    folder, workers=args.cpus) | {"start_s": 0.0}]
    for nodes in (1, 2):
        cluster, start_s = start_cluster(args.cpus, nodes)
        try:
            row = measure(f"Ray, {nodes} node{'s' if nodes > 1 else ''} ({args.cpus} CPUs)",
                          args.repeats + 1, source, labels, folder, engine="ray",
                          ray_address=cluster.address)
        finally:
            rayengine.disconnect()
            cluster.shutdown()
        rows.append(row | {"start_s": start_s})
    return rows


def print_table(rows: list[dict], cost: dict, images: int) -> None:
    base = rows[0]["warm_s"]
    print("| engine | cluster start s | cold ingest s | warm ingest s (median) | warm img/s "
          "| warm time / local pool | extra us per image | driver CPU us per image |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['contender']} | {row['start_s']:.2f} | {row['cold_s']:.2f} | "
              f"{row['warm_s']:.2f} | {images / row['warm_s']:,.0f} | {row['warm_s'] / base:.2f} | "
              f"{(row['warm_s'] - base) / images * 1e6:,.0f} | "
              f"{row['driver_cpu_s'] / images * 1e6:,.0f} |")
    print()
    for row in rows:
        print(f"- {row['contender']}: runs " + ", ".join(f"{t:.2f}" for t in row["runs"]) + " s")
    per_image_us = cost["cpu_s"] / cost["images"] * 1e6
    print(f"\nOne image read in this process alone (probe_batch, chunks of 256): "
          f"{per_image_us:.0f} us CPU, {cost['images'] / cost['wall_s']:,.0f} img/s on one core.")
    print(f"The driver's lists before reading (1,000,000 names of 34 characters): "
          f"{driver_list_bytes():.0f} bytes per image.")
    print(f"Catalog after the ingest (10,000 images, 10,000 labels): "
          f"{rows[0]['catalog_bytes'] / 1e6:.2f} MB, {rows[0]['catalog_bytes'] / images:,.0f} "
          "bytes per image.")


# ---------------------------------------------------------------- the pages' queries at scale

PAGE_QUERIES = {  # page: catalog function and arguments (dataset 1, class 3, a split-free grid)
    "overview counts": ("dataset_overview", {}),
    "overview label sources": ("label_source_counts", {}),
    "overview resolved sources": ("resolved_source_counts", {}),
    "overview grid count": ("count_images", {}),
    "overview grid, first page": ("image_page", {"offset": 0, "limit": 48}),
    "overview grid, last page": ("image_page", {"offset": -48, "limit": 48}),
    "overview grid, one class": ("image_page", {"offset": 0, "limit": 48, "class_id": 3}),
    "balance counts": ("resolved_counts", {}),
    "duplicates input (hashes)": ("hash_table", {}),
}


def scale_catalog(source_db: Path, db: Path, images: int) -> None:
    """A catalog holding `images` copies of the source's images, their file events and labels;
    each copy gets its own sha256 and random hashes, so that the file compresses like a real one."""
    con = catalog.open_catalog(db, program="bench/ray_ingest.py")
    con.execute(f"ATTACH '{source_db}' AS src (READ_ONLY)")
    stride, events = con.execute("SELECT (SELECT max(image_id) FROM src.images), "
                                 "(SELECT max(event_id) FROM src.label_events)").fetchone()
    copies = -(-images // stride)
    for table in ("datasets", "classes", "annotators"):
        con.execute(f"INSERT INTO {table} SELECT * FROM src.{table}")
    con.execute(f"""INSERT INTO images SELECT i.* REPLACE (i.image_id + k * {stride} AS image_id,
        printf('%05d/', k) || i.path AS path, sha256(i.sha256 || k) AS sha256,
        hash(i.phash, k) AS phash, hash(i.dhash, k) AS dhash)
        FROM src.images i, range({copies}) t(k)
        WHERE i.image_id + k * {stride} <= {images}""")
    con.execute("""INSERT INTO file_events SELECT image_id, 'added', NULL, sha256, NULL,
        ingested_at FROM images""")
    con.execute(f"""INSERT INTO label_events SELECT e.* REPLACE (
        e.event_id + k * {events} AS event_id, e.object_id + k * {events} AS object_id,
        e.image_id + k * {stride} AS image_id) FROM src.label_events e, range({copies}) t(k)
        WHERE e.image_id + k * {stride} <= {images}""")
    con.execute("DETACH src")
    con.close()


class _Recorder:
    """A connection that notes the statements a catalog function runs, to explain them."""

    def __init__(self, con):
        self.con, self.statements = con, []

    def execute(self, sql: str, parameters=None):
        self.statements.append((sql, parameters))
        if parameters is None:
            return self.con.execute(sql)
        return self.con.execute(sql, parameters)

    def __getattr__(self, name: str):
        return getattr(self.con, name)


_BOX = re.compile(r"╭─ (.+?) [─┚┖┬┴]")
_ROWS = re.compile(r"│ ([\d,]+) rows?\s+([\d.]+)(µs|ms|s)\s*│")
_UNIT = {"µs": 1e-6, "ms": 1e-3, "s": 1.0}


def explain_operators(con, sql: str, parameters) -> list[tuple[str, int, float]]:
    """(operator, rows out, seconds) of every operator of EXPLAIN ANALYZE `sql`."""
    plan = con.execute("EXPLAIN ANALYZE " + sql, parameters).fetchall()[0][1]
    operators, name = [], None
    for line in plan.splitlines():
        if box := _BOX.search(line):
            name = box.group(1).strip()
        elif (rows := _ROWS.search(line)) and name:
            operators.append((name, int(rows.group(1).replace(",", "")),
                              float(rows.group(2)) * _UNIT[rows.group(3)]))
    return operators


def profile_query(con, name: str, arguments: dict) -> tuple[float, str]:
    """(median wall s of 3 runs, the two costliest operators of its statements)."""
    call = getattr(catalog, name)
    times = []
    for _ in range(3):
        started = time.perf_counter()
        call(con, 1, **arguments)
        times.append(time.perf_counter() - started)
    recorder = _Recorder(con)
    call(recorder, 1, **arguments)
    operators = [op for sql, parameters in recorder.statements
                 for op in explain_operators(con, sql, parameters)]
    top = sorted(operators, key=lambda op: -op[2])[:2]
    return statistics.median(times), ", ".join(
        f"{op} {seconds:.3f} s ({rows:,} rows)" for op, rows, seconds in top)


def time_queries(images: int, folder: Path, data: Path) -> None:
    con = catalog.open_catalog(folder / "cifar.duckdb", program="bench/ray_ingest.py")
    ingest(con, data / "cifar10-test" / "images", fmt="csv", dataset="cifar10-test",
           labels=labels_csv(data, folder / "labels.csv"))
    con.close()
    started = time.perf_counter()
    scale_catalog(folder / "cifar.duckdb", folder / "scaled.duckdb", images)
    built = time.perf_counter() - started
    size = (folder / "scaled.duckdb").stat().st_size
    print(f"{images:,} images with one file event and one label each: built in {built:.1f} s, "
          f"catalog "
          f"{size / 1e6:,.0f} MB ({size / images:,.0f} bytes per image)\n")
    con = catalog.open_catalog(folder / "scaled.duckdb", read_only=True)
    print("| page query | catalog function | wall s (median of 3) | costliest operators |")
    print("|---|---|---:|---|")
    for label, (name, arguments) in PAGE_QUERIES.items():
        if arguments.get("offset") == -48:
            arguments = {**arguments, "offset": images - 48}
        seconds, top = profile_query(con, name, arguments)
        print(f"| {label} | `{name}` | {seconds:.3f} | {top} |")
    con.close()


# ---------------------------------------------------------------- near-duplicate search at scale

SEARCH_DISTANCE = 4  # phash's default threshold (`python -m core duplicates --method phash`)


def time_search(n: int) -> dict:
    """In this (fresh) process: wall s, CPU s, pairs and peak RSS of one search over n hashes."""
    import resource

    import numpy as np

    from core.hashsearch import find_pairs_within

    hashes = np.random.default_rng(0).integers(0, 2**64, n, dtype=np.uint64)
    started, cpu = time.perf_counter(), time.process_time()
    pairs = find_pairs_within(hashes, max_distance=SEARCH_DISTANCE)
    return {"n": n, "wall_s": time.perf_counter() - started, "cpu_s": time.process_time() - cpu,
            "pairs": len(pairs),
            "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}  # kB to MiB


def print_search(sizes: list[int]) -> None:
    from multiprocessing import get_context

    from core.hashsearch import plan_search

    print(f"All pairs within Hamming distance {SEARCH_DISTANCE} of N random hashes:\n")
    print("| N | wall s | CPU s | pairs | peak RSS MiB | planner estimate s (1 core) | plan |")
    print("|---:|---:|---:|---:|---:|---:|---|")
    for n in sorted(set(sizes) | {10_000_000, 100_000_000}):
        plan = plan_search(n, max_distance=SEARCH_DISTANCE)
        shape = f"{plan.method}, chunks {plan.chunk_bits}, radii {plan.chunk_radii}"
        if n not in sizes:
            print(f"| {n:,} | | | | | {plan.estimated_seconds:,.1f} | {shape} |")
            continue
        with get_context("spawn").Pool(1) as pool:
            row = pool.apply(time_search, (n,))
        print(f"| {n:,} | {row['wall_s']:.2f} | {row['cpu_s']:.2f} | {row['pairs']:,} | "
              f"{row['peak_mib']:,.0f} | {plan.estimated_seconds:,.1f} | {shape} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="warm runs per contender")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs every contender gets")
    parser.add_argument("--queries", type=int, metavar="N",
                        help="instead: time the pages' catalog queries on N images")
    parser.add_argument("--search", type=int, nargs="+", metavar="N",
                        help="instead: time the near-duplicate search on N random hashes")
    args = parser.parse_args()
    if args.search:
        print_search(args.search)
        return 0
    data = shared_data_dir()
    source = data / "cifar10-test" / "images"
    if not source.is_dir():
        print(f"error: {source} not found (set SIEVE_SHARED_DATA)", file=sys.stderr)
        return 2
    if args.queries:
        with tempfile.TemporaryDirectory() as tmp:
            time_queries(args.queries, Path(tmp), data)
        return 0
    print(f"# Ingest engines on {source} ({platform.machine()}, {os.cpu_count()} CPUs here, "
          f"load average {os.getloadavg()[0]:.1f} at start)\n")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        labels = labels_csv(data, folder / "labels.csv")
        cost = probe_cost(source)
        rows = contenders(args, source, labels, folder)
    print_table(rows, cost, 10000)
    print(f"\nLoad average at end: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
