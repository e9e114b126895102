"""Render time of each dashboard page (AppTest runs) on the 60,000-image demo catalog and on a
synthetic 1,000,000-image catalog built here (rows only, no image files), with the peak memory
of the dashboard process. Goal: under 1 s at 60,000, under 3 s at 1,000,000, under 1.5 GB.

Run: `.venv/bin/python bench/pages.py [--compare HEAD] [--dir /tmp/pagesbench]
[--images 1000000] [--runs 5]`. `--compare REF` also measures the pages as committed at REF
(exported with `git archive`), in the same run, for a before/after ratio.
Each catalog and code version is measured in its own child process, so the peak RSS is that of
a dashboard process alone. A page's first run follows cleared caches (the catalog connection
stays open); the reruns are what a user waits for after a click.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tarfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ROOT = Path(os.environ.get("SIEVE_BENCH_ROOT", REPO))  # the code measured: this tree or REF's
sys.path.insert(0, str(ROOT))

from core import catalog  # noqa: E402

APP = str(ROOT / "app.py")
PAGES = [("Overview", None), ("Class balance", "pages/balance.py")]
SYNTHETIC_KEY = "bench_synthetic_images"
CLASS_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
               "truck"]
BOX_CLASSES = ["car", "person", "bicycle"]
HUMANS = 300


# ---------------------------------------------------------------- the synthetic catalog


def build_synthetic(path: Path, *, images: int, seed: int = 7) -> Path:
    """A catalog of `images` classified images (80/10/10 train/val/test, 10 classes with shares
    ∝ 0.7^k, one import label each, three labels by 300 people on 20%, reviews on 1%, edits and
    deletions among the people's labels) plus a boxes dataset of images // 20 images with about
    6 boxes each. Rows only: the image files do not exist. Built once, then reused."""
    if path.exists():
        con = catalog.open_catalog(path, read_only=True)
        built = catalog.get_meta(con, SYNTHETIC_KEY)
        con.close()
        if built == str(images):
            return path
    temporary = path.with_name(path.name + ".building")
    for stale in (temporary, Path(str(temporary) + ".wal")):
        stale.unlink(missing_ok=True)
    con = catalog.open_catalog(temporary, program="bench/pages.py")
    started = time.perf_counter()
    _synthetic_classes(con, images=images, seed=seed)
    _synthetic_boxes(con, first_image=images + 1, images=max(images // 20, 1), seed=seed)
    _burn_sequences(con)
    catalog.set_meta(con, SYNTHETIC_KEY, str(images))
    con.execute("CHECKPOINT")
    con.close()
    temporary.replace(path)
    print(f"built {path} in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return path


def _insert_images(con, dataset_id: int, *, first: int, count: int, seed: int) -> None:
    """`count` image rows from id `first`; 0.1% are unreadable; sizes from a short list."""
    con.execute("""
        INSERT INTO images (image_id, dataset_id, path, split, bytes, sha256, width, height,
                            format, mode, phash, dhash, status, error, ingested_at)
        SELECT i, ?, 'img/' || lpad(i::VARCHAR, 8, '0') || '.jpg',
               ['train', 'train', 'train', 'train', 'train', 'train', 'train', 'train', 'val',
                'test'][(hash(i, ?) % 10)::INTEGER + 1],
               20000 + hash(i, ? + 1) % 80000, sha256(i::VARCHAR),
               [640, 1280, 800, 1024][(hash(i, ? + 2) % 4)::INTEGER + 1],
               [480, 720, 600, 768][(hash(i, ? + 2) % 4)::INTEGER + 1],
               'JPEG', 'RGB', hash(i, ? + 3), hash(i, ? + 4),
               CASE WHEN hash(i, ? + 5) % 1000 = 0 THEN 'unreadable' ELSE 'ok' END,
               CASE WHEN hash(i, ? + 5) % 1000 = 0 THEN 'image file is truncated' END,
               current_timestamp::TIMESTAMP
        FROM range(?, ?) t(i)""", [dataset_id] + [seed] * 8 + [first, first + count])


def _synthetic_classes(con, *, images: int, seed: int) -> None:
    ds = catalog.get_or_create_dataset(con, "synthetic", "/nonexistent/synthetic", description=(
        f"synthetic: {images:,} images (rows only), 10 skewed classes, 300 annotators"))
    catalog.add_classes(con, ds.dataset_id, CLASS_NAMES)
    given = catalog.get_or_create_annotators(con, ["synthetic/given"], kind="import")
    people = catalog.get_or_create_annotators(
        con, [f"synthetic/person{k:03d}" for k in range(HUMANS)], kind="human")
    person_ids = [people[f"synthetic/person{k:03d}"] for k in range(HUMANS)]
    _insert_images(con, ds.dataset_id, first=1, count=images, seed=seed)
    # the true class: geometric shares 0.7^k, the tail folded into class 9
    con.execute("""
        CREATE TEMP TABLE truth AS SELECT i AS image_id,
            least(9, floor(ln(1 - (hash(i, ?) % 1000000) / 1e6) / ln(0.7)))::INTEGER AS class_id
        FROM range(1, ?) t(i)""", [seed + 10, images + 1])
    _insert_events(con, """
        SELECT image_id AS event_id, image_id AS object_id, ?, image_id, ?, 'class', 'set',
               class_id, NULL, NULL, NULL, NULL, 'import', NULL, ts(0) FROM truth""",
                   [ds.dataset_id, given["synthetic/given"]])
    # three people on 20% of images, distinct people per image, 80% agreeing with the truth
    con.execute("""
        CREATE TEMP TABLE votes AS SELECT ? + 3 * t.image_id + j AS event_id, t.image_id,
            (?::INTEGER[])[((hash(t.image_id, ?) + j * 101) % ?)::INTEGER + 1] AS annotator_id,
            CASE WHEN hash(t.image_id, j, ?) % 10 < 8 THEN t.class_id
                 ELSE (t.class_id + 1 + hash(t.image_id, j, ? + 1) % 9)::INTEGER % 10 END AS class_id
        FROM truth t, range(3) r(j) WHERE hash(t.image_id, ? + 2) % 5 = 0""",
                [images, person_ids, seed, HUMANS, seed, seed, seed])
    _insert_events(con, """
        SELECT event_id, event_id, ?, image_id, annotator_id, 'class', 'set', class_id,
               NULL, NULL, NULL, NULL, 'import', NULL, ts(1) FROM votes""", [ds.dataset_id])
    base = 4 * images + 10
    # 2% of the people's labels edited later, 0.5% deleted; a review on 1% of images
    _insert_events(con, """
        SELECT ? + event_id, event_id, ?, image_id, annotator_id, 'class',
               CASE WHEN hash(event_id, ?) % 5 = 0 THEN 'delete' ELSE 'set' END,
               (class_id + 1) % 10, NULL, NULL, NULL, NULL, 'edit', event_id, ts(2)
        FROM votes WHERE hash(event_id, ? + 3) % 40 = 0""", [base, ds.dataset_id, seed, seed])
    _insert_events(con, """
        SELECT ? + image_id AS e, e, ?, image_id, (?::INTEGER[])[(image_id % ?)::INTEGER + 1],
               'class', 'set', class_id, NULL, NULL, NULL, NULL, 'review', NULL, ts(3)
        FROM truth WHERE hash(image_id, ? + 4) % 100 = 0""",
                   [2 * base, ds.dataset_id, person_ids, HUMANS, seed])


def _synthetic_boxes(con, *, first_image: int, images: int, seed: int) -> None:
    """Boxes: 1-11 per image, given by an import annotator; a reviewed layer on 2% of images."""
    ds = catalog.get_or_create_dataset(con, "synthetic-boxes", "/nonexistent/boxes", description=(
        f"synthetic boxes: {images:,} images (rows only), 3 skewed classes"))
    catalog.add_classes(con, ds.dataset_id, BOX_CLASSES)
    given = catalog.get_or_create_annotators(con, ["synthetic-boxes/given"], kind="import")
    reviewer = catalog.get_or_create_annotators(con, ["synthetic/person000"], kind="human")
    _insert_images(con, ds.dataset_id, first=first_image, count=images, seed=seed)
    start = _one_value(con, "SELECT max(event_id) + 1 FROM label_events")
    con.execute("""
        CREATE TEMP TABLE boxes AS
        SELECT ? + row_number() OVER (ORDER BY i.image_id, b) AS event_id, i.image_id,
               CASE WHEN hash(i.image_id, b, ?) % 10 < 7 THEN 0
                    WHEN hash(i.image_id, b, ?) % 10 < 9 THEN 1 ELSE 2 END AS class_id,
               (hash(i.image_id, b, ? + 1) % 1000) / 1000 * (i.width - 40) AS x,
               (hash(i.image_id, b, ? + 2) % 1000) / 1000 * (i.height - 40) AS y,
               8 + hash(i.image_id, b, ? + 3) % 120 AS w, 8 + hash(i.image_id, b, ? + 4) % 90 AS h
        FROM images i, range(11) r(b)
        WHERE i.dataset_id = ? AND b <= hash(i.image_id, ? + 5) % 11""",
                [start] + [seed] * 6 + [ds.dataset_id, seed])
    _insert_events(con, """
        SELECT event_id, event_id, ?, image_id, ?, 'box', 'set', class_id, x, y, w, h, 'import',
               NULL, ts(0) FROM boxes""", [ds.dataset_id, given["synthetic-boxes/given"]])
    offset = _one_value(con, "SELECT max(event_id) FROM label_events")
    _insert_events(con, """
        SELECT ? + event_id, ? + event_id, ?, image_id, ?, 'box', 'set', class_id, x + 2, y + 2,
               w, h, 'review', NULL, ts(3) FROM boxes WHERE hash(image_id, ?) % 50 = 0""",
                   [offset, offset, ds.dataset_id, reviewer["synthetic/person000"], seed])


def _insert_events(con, select: str, params: list) -> None:
    """Insert label events from `select`, whose columns are event_id, object_id, dataset_id,
    image_id, annotator_id, kind, op, class_id, x, y, w, h, source, replaces, created_at."""
    con.execute("CREATE OR REPLACE TEMP MACRO ts(k) AS TIMESTAMP '2024-01-01' + to_days(k::INTEGER)")
    con.execute(f"""INSERT INTO label_events (event_id, object_id, dataset_id, image_id,
        annotator_id, kind, op, class_id, x, y, w, h, source, replaces, created_at) {select}""",
                params)


def _burn_sequences(con) -> None:
    """Move the id sequences past the ids used here, so later writes to the catalog work."""
    for sequence, table, column in (("seq_event", "label_events", "event_id"),
                                    ("seq_image", "images", "image_id")):
        top = _one_value(con, f"SELECT max({column}) FROM {table}")
        con.execute(f"SELECT max(nextval('{sequence}')) FROM range(?)", [top]).fetchall()


def _one_value(con, sql: str):
    return con.execute(sql).fetchall()[0][0]


# ---------------------------------------------------------------- measuring


def measure_catalog(db: str, datasets: list[str], runs: int) -> dict:
    """In this process: every page on every dataset, first run then `runs` reruns. Both pages
    are drawn once on an empty catalog first, so that imports are not counted as page time."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    import ui

    warmup = _render_both(AppTest, str(Path(db).with_name("empty.duckdb")))
    os.environ["SIEVE_DB"] = db
    rows = []
    for name in datasets:
        st.cache_data.clear()
        if hasattr(ui, "_figure"):
            ui._figure.clear()  # the cached figures, not the open catalog connection
        at = AppTest.from_file(APP, default_timeout=600)
        at.session_state["dataset"] = name
        for page, path in PAGES:
            if path:
                at.switch_page(path)
                at.session_state["dataset"] = name
            rows.append(_measure_page(at, name, page, runs))
            classes = at.selectbox(key="grid_class").options[1:] if page == "Overview" else []
            if classes:  # the grid filtered to one class: its query, not a cached one
                at.session_state["grid_class"] = classes[-1]
                rows.append(_measure_page(at, name, f"Overview, grid of '{classes[-1]}' "
                                          "(first run: the rest of the page cached)", runs))
                at.session_state["grid_class"] = "all"
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {"warmup": warmup, "peak_mb": peak, "rows": rows}


def _measure_page(at, dataset: str, page: str, runs: int) -> dict:
    wall, cpu = zip(*[_timed_run(at) for _ in range(runs + 1)])
    return {"dataset": dataset, "page": page, "first": wall[0], "first_cpu": cpu[0],
            "median": statistics.median(wall[1:]), "min": min(wall[1:]), "max": max(wall[1:]),
            "cpu": statistics.median(cpu[1:]), "metrics": {m.label: m.value for m in at.metric}}


def _render_both(AppTest, db: str) -> float:
    os.environ["SIEVE_DB"] = db
    started = time.perf_counter()
    at = AppTest.from_file(APP, default_timeout=600)
    _timed_run(at)
    _timed_run(at.switch_page(PAGES[1][1]))
    return time.perf_counter() - started


def _timed_run(at) -> tuple[float, float]:
    """(wall, CPU) seconds of one run; CPU counts every thread of the process (DuckDB's too)."""
    started, cpu = time.perf_counter(), _cpu_seconds()
    at.run()
    elapsed = time.perf_counter() - started, _cpu_seconds() - cpu
    if at.exception:
        raise RuntimeError(f"page raised: {[e.value for e in at.exception]}")
    return elapsed


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure_in_child(db: Path, datasets: list[str], runs: int, root: Path) -> dict:
    env = dict(os.environ, SIEVE_BENCH_ROOT=str(root))
    out = subprocess.run([sys.executable, __file__, "--measure", str(db), "--datasets",
                          ",".join(datasets), "--runs", str(runs)],
                         check=True, capture_output=True, text=True, cwd=root, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def export_ref(ref: str, folder: Path) -> tuple[Path, str]:
    """The tree of git `ref` unpacked under `folder` (git archive: no worktree, no index)."""
    sha = subprocess.run(["git", "rev-parse", "--short", ref], check=True, capture_output=True,
                         text=True, cwd=REPO).stdout.strip()
    target = folder / f"code-{sha}"
    if not (target / "app.py").exists():
        archive = folder / f"code-{sha}.tar"
        subprocess.run(["git", "archive", "--format=tar", "-o", str(archive), sha], check=True,
                       cwd=REPO)
        with tarfile.open(archive) as tar:
            tar.extractall(target, filter="data")
        archive.unlink()
    return target, sha


def markdown(results: list[dict], command: str, runs: int, load: str, base: str | None) -> str:
    """`results`: per catalog {label, images, now, before (or None)}."""
    then = f"{base} → now" if base else "now"
    lines = [f"Command: `{command}`  ",
             f"Machine: {os.cpu_count()} cores, Python {platform.python_version()}, load average "
             f"{load} (shared machine: wall times stretch with the load, CPU seconds much less). "
             f"Seconds. First run: after cleared caches. Rerun: median of {runs} (min-max). "
             "CPU: all threads of the process, DuckDB's included.",
             "",
             f"| catalog | dataset | page | first run ({then}) | first-run CPU | "
             f"rerun median ({then}) | rerun CPU | rerun speed-up |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for result in results:
        before = result["before"]["rows"] if result["before"] else [None] * len(
            result["now"]["rows"])
        for row, old in zip(result["now"]["rows"], before):
            first = f"{row['first']:.2f}"
            rerun = f"{row['median']:.2f} ({row['min']:.2f}-{row['max']:.2f})"
            ratio = ""
            if old:
                first = f"{old['first']:.2f} → {first}"
                rerun = f"{old['median']:.2f} → {rerun}"
                ratio = f"{old['median'] / row['median']:.1f}x"
            lines.append(f"| {result['label']} ({result['images']:,} images) | {row['dataset']} | "
                         f"{row['page']} | {first} | {row['first_cpu']:.2f} | {rerun} | "
                         f"{row['cpu']:.2f} | {ratio} |")
    lines.append("")
    for result in results:
        peaks = f"{result['now']['peak_mb']:,.0f} MB"
        if result["before"]:
            peaks = f"{result['before']['peak_mb']:,.0f} MB → {peaks}"
        lines.append(f"Peak RSS of the dashboard process, {result['label']}: {peaks} (imports "
                     f"and a first drawing on an empty catalog, not counted above: "
                     f"{result['now']['warmup']:.1f} s).  ")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default="/tmp/pagesbench", help="where the catalogs are built")
    parser.add_argument("--images", type=int, default=1_000_000,
                        help="images in the synthetic catalog")
    parser.add_argument("--runs", type=int, default=5, help="timed reruns per page")
    parser.add_argument("--compare", metavar="REF", help="also measure the code of git REF")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument("--datasets", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure_catalog(args.measure, args.datasets.split(","), args.runs)))
        return
    from core.demo import build_demo

    folder = Path(args.dir)
    folder.mkdir(parents=True, exist_ok=True)
    base_root, base = export_ref(args.compare, folder) if args.compare else (None, None)
    demo = folder / "demo.duckdb"
    kind = build_demo(demo)["demo"]
    synthetic = build_synthetic(folder / f"synthetic-{args.images}.duckdb", images=args.images)
    catalogs = [(f"demo ({kind})", demo, ["cifar10", "bccd"] if kind == "shared" else ["mnist"]),
                ("synthetic", synthetic, ["synthetic", "synthetic-boxes"])]
    results = []
    for label, db, datasets in catalogs:
        # the catalog's views are re-created by whichever code opens it: measure REF first
        before = measure_in_child(db, datasets, args.runs, base_root) if base_root else None
        results.append({"label": label, "images": _count_images(db), "before": before,
                        "now": measure_in_child(db, datasets, args.runs, REPO)})
    command = " ".join([".venv/bin/python", "bench/pages.py"] + sys.argv[1:])
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    print(markdown(results, command, args.runs, load, base))


def _count_images(path: Path) -> int:
    con = catalog.open_catalog(path, read_only=True)
    count = _one_value(con, "SELECT count(*) FROM images")
    con.close()
    return count


if __name__ == "__main__":
    main()
