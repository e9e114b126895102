"""Fix labels: server time to move to the next image, on the 60,000-image demo catalog (CIFAR-10)
and on BCCD. Goal: under 300 ms per move.

Run: `.venv/bin/python bench/fix.py [--db .sieve/demo.duckdb] [--moves 40]`. The catalog is
copied into a temporary folder first (moving writes review positions). Prints a Markdown table:
each core call one move makes, timed alone over `--moves` consecutive images (median and 90th
percentile); beside them, reading the same image's labels through the catalog's views
(annotator_labels, resolved_class, resolved_objects), the way one would write it without
core.edits, and the ratio; and the AppTest rerun of the whole page after a Next click (the
script's time in the server; the browser's drawing is not included), as wall-clock time and
as the process's CPU time (all threads, DuckDB's included), which other programs on a busy
machine do not inflate. The load average before and after is printed with the table.
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from core import catalog, edits, queues  # noqa: E402
from core.demo import build_demo  # noqa: E402
from core.drawing import display_scale, to_drawing  # noqa: E402

USER = "bench"


def timed(func, *args, **kwargs) -> tuple[float, object]:
    start = time.perf_counter()
    result = func(*args, **kwargs)
    return (time.perf_counter() - start) * 1000, result


def through_views(con, image_id: int) -> tuple:
    """The image's labels as the views give them: what core.edits.load_view replaces."""
    return (con.execute("SELECT * FROM annotator_labels WHERE image_id = ?", [image_id]).df(),
            con.execute("SELECT * FROM resolved_class WHERE image_id = ?", [image_id]).df(),
            con.execute("SELECT * FROM resolved_objects WHERE image_id = ?", [image_id]).df())


def core_moves(con, dataset: catalog.Dataset, moves: int) -> dict[str, list[float]]:
    """Milliseconds per step for `moves` consecutive images of the dataset's "All images" queue."""
    from ui.canvas import background_image  # cached by st.cache_data: each image is new here

    spec = queues.QueueSpec(dataset.dataset_id)
    ids = queues.queue_images(con, spec)["image_id"].tolist()[:moves]
    classes = catalog.class_table(con, dataset.dataset_id)
    class_ids = dict(zip(classes["name"], classes["class_id"]))
    times: dict[str, list[float]] = {}
    for position, image_id in enumerate(ids):
        steps = {}
        steps["load_view (3 queries)"], view = timed(edits.load_view, con, image_id, user=USER)
        steps["history_table"], _ = timed(edits.history_table, view)
        shapes = [o.shape() for o in view.working]
        steps["unchanged-canvas check (plan_shape_edits)"], _ = timed(
            edits.plan_shape_edits, view, shapes, class_ids=class_ids)
        scale = display_scale(view.image["width"], view.image["height"])
        steps["canvas drawing (to_drawing)"], _ = timed(to_drawing, shapes, scale=scale, colours={})
        steps["background image (read, scale, encode)"], _ = timed(
            background_image, view.image["root"], view.image["path"], None, scale=scale)
        steps["newer-change check (latest_image_event)"], _ = timed(
            catalog.latest_image_event, con, image_id)
        steps["save_position"], _ = timed(queues.save_position, con, USER, spec, position, image_id)
        steps["**core calls, sum**"] = sum(steps.values())
        steps["same labels through the views"], _ = timed(through_views, con, image_id)
        for name, ms in steps.items():
            times.setdefault(name, []).append(ms)
    return times


def share_script_cache() -> None:
    """AppTest compiles app.py and the page afresh on every run (a new ScriptCache each time);
    the server compiles them once. One shared cache makes a rerun what the server runs."""
    from streamlit.runtime.scriptrunner.script_cache import ScriptCache
    from streamlit.testing.v1 import app_test

    shared = ScriptCache()
    app_test.ScriptCache = lambda: shared


def apptest_moves(db: Path, dataset: str, moves: int) -> dict[str, list[float]]:
    from streamlit.testing.v1 import AppTest

    os.environ["SIEVE_DB"] = str(db)
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120)
    at.session_state["dataset"], at.session_state["user"] = dataset, USER
    at.run()
    at.switch_page("pages/fix.py")
    at.session_state["dataset"], at.session_state["user"] = dataset, USER
    first, _ = timed(at.run)
    assert not at.exception, [e.value for e in at.exception]
    reruns, cpu = [], []
    for _ in range(moves):
        at.button(key="fix_next").click()
        started = time.process_time()
        ms, _ = timed(at.run)
        cpu.append((time.process_time() - started) * 1000)
        reruns.append(ms)
        assert not at.exception, [e.value for e in at.exception]
    return {"**AppTest rerun after Next (whole page), wall clock**": reruns,
            "**AppTest rerun after Next, CPU time of the process**": cpu,
            "AppTest first run of the page, wall clock": [first]}


def p90(values: list[float]) -> float:
    return statistics.quantiles(values, n=10)[-1] if len(values) > 1 else values[0]


def table(results: dict[str, dict[str, list[float]]]) -> str:
    names = list(results)
    header = "| per move | " + " | ".join(f"{n} median ms | {n} p90 ms" for n in names) + " |"
    lines = [header, "|---|" + "---:|---:|" * len(names)]
    for step in next(iter(results.values())):
        cells = []
        for name in names:
            values = results[name].get(step)
            cells += [f"{statistics.median(values):.1f}", f"{p90(values):.1f}"] if values else ["", ""]
        lines.append(f"| {step} | " + " | ".join(cells) + " |")
    ratios = []
    for name in names:
        views = statistics.median(results[name]["same labels through the views"])
        ours = statistics.median(results[name]["load_view (3 queries)"])
        ratios.append(f"{name}: {views / ours:.1f}x")
    return "\n".join(lines) + "\n\nViews / load_view (medians): " + ", ".join(ratios)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", default=str(REPO / ".sieve" / "demo.duckdb"))
    parser.add_argument("--moves", type=int, default=40)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fixbench-"))
    db = work / "demo.duckdb"
    if Path(args.db).exists():
        shutil.copy(args.db, db)
    else:
        print(f"{args.db} not found: building a demo catalog in {work}", file=sys.stderr)
        build_demo(db)
    before = os.getloadavg()
    con = catalog.open_catalog(db, program="bench/fix.py")
    datasets = [catalog.find_dataset(con, n) for n in catalog.list_dataset_names(con)][:2]
    results = {}
    for dataset in datasets:
        images = catalog.count_images(con, dataset.dataset_id)
        results[f"{dataset.name} ({images:,} images)"] = core_moves(con, dataset, args.moves)
    con.close()
    for dataset, name in zip(datasets, list(results)):
        results[name] |= apptest_moves(db, dataset.name, args.moves)
    share_script_cache()
    for dataset, name in zip(datasets, list(results)):
        server_like = apptest_moves(db, dataset.name, args.moves)
        results[name] |= {f"{step} (scripts compiled once, as the server does)": values
                          for step, values in server_like.items() if "rerun" in step}
    load = f"load average {before[0]:.1f} before, {os.getloadavg()[0]:.1f} after"
    print(f"`.venv/bin/python bench/fix.py --db {args.db} --moves {args.moves}` on "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}, {load}\n")
    print(table(results))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
