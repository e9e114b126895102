"""Load: simulated dashboard sessions browsing pages and saving class edits at the same time,
against one copy of a catalog, counting errors and timing each page.

Entry point: `python bench/load.py [--sessions 20] [--seconds 60] [--db .sieve/demo.duckdb]
[--dataset cifar10] [--pages a.py,b.py] [--out bench/out/load.md]`; `run_load(db, ...)` for
tests.
Each session is an AppTest of app.py in its own thread; all share the process's one catalog
connection (`st.cache_resource`), as the browser sessions of one dashboard server do. A session
alternates: open a page (Overview, Class balance, Duplicates, Agreement, Fix labels, Export), or
press a class key on Fix labels (a save; two sessions on one image get the conflict message).
An error is an exception inside a page or raised by a run. Every page is opened once first
(untimed, filling the caches); then one session alone runs for the same time in the same
process: the baseline the page times under load are compared with.
"""
from __future__ import annotations

import argparse
import builtins
import contextlib
import os
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

APP = str(ROOT / "app.py")
PAGES = ["pages/overview.py", "pages/balance.py", "pages/duplicates.py", "pages/agreement.py",
         "pages/fix.py", "pages/export.py"]
FIX = "pages/fix.py"


@dataclass
class SessionLog:
    """What one session did: (page, seconds) per script run, saves pressed, errors seen."""
    times: list = field(default_factory=list)
    saves: int = 0
    conflicts: int = 0
    errors: list = field(default_factory=list)
    restarts: list = field(default_factory=list)  # AppTest's own failures (see Session._run)


class Session:
    """One simulated user of the dashboard (an AppTest), keeping its page and session state."""

    def __init__(self, k: int, dataset: str, log: SessionLog, *, seed: int,
                 pages: tuple[str, ...] = tuple(PAGES)):
        from streamlit.testing.v1 import AppTest

        self.user, self.dataset, self.log, self.pages = f"load{k}", dataset, log, pages
        self.rng = random.Random(seed)
        self.app = AppTest.from_file(APP, default_timeout=600)
        self.page = "pages/overview.py"

    def _run(self, page: str) -> None:
        """Run the page once and time it. AppTest, not made for threads, now and then loses a
        widget's state between two runs and raises KeyError('$$ID-...') before the script
        starts: that session is started afresh on the same page and the event kept apart
        (`restarts`); nothing of the kind exists in a server."""
        self.app.session_state["dataset"] = self.dataset
        self.app.session_state["user"] = self.user
        started = time.perf_counter()
        try:
            self.app.run()
        except KeyError as err:
            if not str(err).startswith("'$$ID-"):
                raise
            self.log.restarts.append(f"{page}: KeyError {err}")
            self._restart(page.split(" ")[0])
            return
        self.log.times.append((page, time.perf_counter() - started))
        self.log.errors += [f"{page}: {e.value}" for e in self.app.exception]

    def _restart(self, page: str) -> None:
        from streamlit.testing.v1 import AppTest

        self.app = AppTest.from_file(APP, default_timeout=600)
        self.app.session_state["dataset"] = self.dataset
        self.app.session_state["user"] = self.user
        self.app.run()
        self.app.switch_page(page)
        self.page = page
        self._run(page)

    def browse(self) -> None:
        page = self.rng.choice(self.pages)
        if page != self.page or not self.log.times:
            self.app.switch_page(page)
            self.page = page
        self._run(page)

    def edit(self) -> None:
        """Press one class key on Fix labels (opening the page first when elsewhere)."""
        if self.page != FIX or not self.log.times:
            self.app.switch_page(FIX)
            self.page = FIX
            self._run(FIX)
        keys = [b for b in self.app.button if str(b.key or "").startswith("fix_class_")]
        if not keys:
            self.log.errors.append("Fix labels shows no class keys")
            return
        self.rng.choice(keys).click()
        self._run(FIX + " (save)")
        self.log.saves += 1
        self.log.conflicts += any("changed by" in w.value for w in self.app.warning)


def _session(k: int, dataset: str, deadline: float, min_actions: int, log: SessionLog,
             pages: tuple[str, ...]) -> None:
    try:
        session = Session(k, dataset, log, seed=k, pages=pages)
        actions = 0
        while time.monotonic() < deadline or actions < min_actions:
            if actions % 2 == 0:
                session.browse()
            else:
                session.edit()
            actions += 1
    except Exception as err:  # noqa: BLE001 — counted: the load must see none
        where = traceback.extract_tb(err.__traceback__)[-1]
        log.errors.append(f"session {k}: {type(err).__name__}: {err} "
                          f"(at {Path(where.filename).name}:{where.lineno})")


@contextlib.contextmanager
def shared_runtime():
    """One Streamlit runtime for every session, as one server has. AppTest installs a mock
    runtime process-wide before each run and removes it after, so concurrent runs would remove
    each other's: here its swaps go to a stand-in while one mock, made the same way, serves all.
    Page scripts are compiled once, into one shared cache, and `compile` takes a lock: CPython
    3.11 fails building ASTs in several threads at once ('AST constructor recursion depth
    mismatch'), which a server avoids by compiling each page once."""
    from unittest.mock import MagicMock

    from streamlit.components.v2.component_manager import BidiComponentManager
    from streamlit.runtime import Runtime
    from streamlit.runtime.scriptrunner.script_cache import ScriptCache
    from streamlit.runtime.caching.storage.dummy_cache_storage import MemoryCacheStorageManager
    from streamlit.runtime.dataframe_source_manager import DataframeSourceManager
    from streamlit.runtime.media_file_manager import MediaFileManager
    from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage
    from streamlit.testing.v1 import app_test

    runtime = MagicMock(spec=Runtime)
    runtime.media_file_mgr = MediaFileManager(MemoryMediaFileStorage("/mock/media"))
    runtime.cache_storage_manager = MemoryCacheStorageManager()
    runtime.dataframe_source_mgr = DataframeSourceManager()
    runtime.bidi_component_registry = BidiComponentManager()
    runtime.bidi_component_registry.discover_and_register_components(start_file_watching=False)
    scripts = ScriptCache()
    saved = app_test.Runtime, app_test.ScriptCache, builtins.compile
    app_test.Runtime = type("RuntimeStandIn", (), {"_instance": None})
    app_test.ScriptCache = lambda: scripts
    builtins.compile = _locked(builtins.compile)
    Runtime._instance = runtime
    try:
        yield
    finally:
        (app_test.Runtime, app_test.ScriptCache, builtins.compile), Runtime._instance = saved, None


def _locked(function):
    lock = threading.Lock()

    def call(*args, **kwargs):
        with lock:
            return function(*args, **kwargs)

    return call


def run_load(db: str | Path, *, sessions: int, seconds: float, dataset: str,
             min_actions: int = 2, pages: tuple[str, ...] = tuple(PAGES)) -> list[SessionLog]:
    """Run `sessions` sessions on the catalog `db` for `seconds` (each does at least
    `min_actions` actions: a page, then a save, ...; pages drawn from `pages`); returns their
    logs."""
    os.environ["SIEVE_DB"] = str(db)
    logs = [SessionLog() for _ in range(sessions)]
    deadline = time.monotonic() + seconds
    threads = [threading.Thread(target=_session, name=f"load-session-{k}", daemon=True,
                                args=(k, dataset, deadline, min_actions, log, pages))
               for k, log in enumerate(logs)]
    with shared_runtime():
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    return logs


def warm_up(db: str | Path, *, dataset: str, pages: tuple[str, ...]) -> list[str]:
    """Open every page once (untimed), so both runs find the caches a running server has;
    returns the errors seen."""
    os.environ["SIEVE_DB"] = str(db)
    log = SessionLog()
    with shared_runtime():
        session = Session(0, dataset, log, seed=0, pages=pages)
        for page in pages:
            session.app.switch_page(page)
            session._run(page)
    return log.errors


def summary(logs: list[SessionLog]) -> dict:
    """Pages viewed, saves, conflicts, errors, and median / p95 page time in seconds."""
    times = sorted(t for log in logs for _, t in log.times)
    p95 = times[min(len(times) - 1, int(0.95 * len(times)))] if times else float("nan")
    return {"sessions": len(logs), "page views": len(times),
            "saves": sum(log.saves for log in logs),
            "conflicts shown": sum(log.conflicts for log in logs),
            "errors": sum(len(log.errors) for log in logs),
            "AppTest restarts": sum(len(log.restarts) for log in logs),
            "median s": statistics.median(times) if times else float("nan"), "p95 s": p95}


def _table(rows: dict[str, dict]) -> str:
    columns = list(next(iter(rows.values())))
    lines = ["| run | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, row in rows.items():
        cells = [f"{v:.2f}" if isinstance(v, float) else f"{v:,}" for v in row.values()]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def report(args, rows: dict[str, dict], errors: list[str], restarts: list[str],
           load: tuple) -> str:
    alone, loaded = rows["1 session (baseline)"], rows[f"{args.sessions} sessions"]
    ratio = loaded["median s"] / alone["median s"] if alone["median s"] else float("nan")
    command = "python bench/load.py " + " ".join(sys.argv[1:])
    return "\n".join([
        f"# Load: {args.sessions} dashboard sessions for {args.seconds:g} s", "",
        f"Command: `{command}`", "",
        f"Machine: {os.cpu_count()} CPUs; load average {load[0]:.1f} before, {load[1]:.1f} after. "
        f"Catalog: a copy of {args.db}, dataset {args.dataset}. Pages: {args.pages}.", "",
        _table(rows), "",
        f"Median page time under load / alone: {ratio:.1f}x. Errors: {len(errors)}"
        + ("".join(f"\n- {e}" for e in errors[:20]) if errors else "."),
        f"AppTest restarts (AppTest lost a widget's state in a thread; no page raised): "
        f"{len(restarts)}" + "".join(f"\n- {r}" for r in restarts[:10]), ""])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--db", default=str(ROOT / ".sieve" / "demo.duckdb"),
                        help="catalog to copy (never written)")
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--out", default=str(ROOT / "bench" / "out" / "load.md"))
    parser.add_argument("--pages", default=",".join(PAGES),
                        help="comma-separated pages browsed (default: %(default)s)")
    args = parser.parse_args()
    pages = tuple(args.pages.split(","))
    with tempfile.TemporaryDirectory(prefix="sieve-load-") as folder:
        db = Path(folder) / "catalog.duckdb"
        shutil.copy(args.db, db)
        before = os.getloadavg()[0]
        warm_errors = warm_up(db, dataset=args.dataset, pages=pages)
        alone = run_load(db, sessions=1, seconds=args.seconds, dataset=args.dataset, pages=pages)
        logs = run_load(db, sessions=args.sessions, seconds=args.seconds, dataset=args.dataset,
                        pages=pages)
        rows = {"1 session (baseline)": summary(alone), f"{args.sessions} sessions": summary(logs)}
        errors = warm_errors + [e for log in alone + logs for e in log.errors]
        restarts = [r for log in alone + logs for r in log.restarts]
    text = report(args, rows, errors, restarts, (before, os.getloadavg()[0]))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(text)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
