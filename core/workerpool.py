"""Worker processes that read images for ingest, started lean.

Entry point: `context()` → a multiprocessing context for
`ProcessPoolExecutor(mp_context=context())`. Workers fork from one server process, started once
per process and left running, that has imported `core.imageprobe` and nothing of the parent:
none of its threads, its DuckDB connection, pandas or the dashboard's script.

This module imports only the standard library, and must stay so. A new worker unpickles its
process object, whose class lives here, and so imports this module before its first task. When
these classes lived in `core.ingest`, every worker imported the catalog, DuckDB and pandas
first: 0.7-0.9 s before its first image, on every pooled ingest.
"""
from __future__ import annotations

import multiprocessing
import multiprocessing.context
import multiprocessing.forkserver
import multiprocessing.popen_forkserver
import multiprocessing.spawn
import os
import signal
import threading
from pathlib import Path

WORKER_ENV = {  # the worker server's environment, read by numpy's BLAS and glibc at start
    "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
    "MALLOC_MMAP_THRESHOLD_": str(32 << 20), "MALLOC_TRIM_THRESHOLD_": str(128 << 20)}
PRELOAD = ["core.workerpool", "core.imageprobe"]  # what the server imports for its workers


def context() -> multiprocessing.context.ForkServerContext:
    """The workers' context; starts their server unless it runs. Its environment (WORKER_ENV)
    gives numpy one thread per worker, the pool being the parallelism, and keeps freed memory
    in the process: returning every 2 MB array to the kernel costs a page fault per 4 kB when
    the next batch takes it back (10% of the CPU time on CIFAR)."""
    multiprocessing.get_context("forkserver").set_forkserver_preload(PRELOAD)
    here = str(Path(__file__).resolve().parent.parent)  # Python 3.11's server ignores sys.path
    environment = dict(WORKER_ENV, PYTHONPATH=os.pathsep.join(
        [here] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])))
    saved = {name: os.environ.get(name) for name in environment}
    os.environ.update(environment)
    try:
        multiprocessing.forkserver.ensure_running()
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return _WorkerContext()


def ignore_interrupts() -> None:
    """A worker's initializer: Ctrl-C at the terminal reaches every process of its group; the
    ingest process stops the work (and the pool), so the workers need not print tracebacks."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


_LAUNCH_LOCK = threading.Lock()


class _WorkerPopen(multiprocessing.popen_forkserver.Popen):
    """Starts a worker without the parent's main module. `multiprocessing` has each new worker
    import the parent's main script first; in the dashboard that is Streamlit's app, whose
    code then runs in the worker and fails (the catalog is held, there is no session), and
    every pooled ingest fell back to reading in one process. Workers need only what their
    server has imported (PRELOAD)."""

    def _launch(self, process_obj):
        with _LAUNCH_LOCK:
            prepare = multiprocessing.spawn.get_preparation_data
            multiprocessing.spawn.get_preparation_data = lambda name: {
                key: value for key, value in prepare(name).items()
                if key not in ("init_main_from_path", "init_main_from_name")}
            try:
                super()._launch(process_obj)
            finally:
                multiprocessing.spawn.get_preparation_data = prepare


class _WorkerProcess(multiprocessing.context.ForkServerProcess):
    @staticmethod
    def _Popen(process_obj):
        return _WorkerPopen(process_obj)


class _WorkerContext(multiprocessing.context.ForkServerContext):
    Process = _WorkerProcess
