"""Long work (ingest, training) as jobs: a row in `jobs` with progress, run in a background thread
of the dashboard or in the foreground of the command line with a terminal progress bar.

Entry points: `start_job(con, kind, params, work)` (background, returns the job id at once) and
`run_job(con, kind, params, work, progress=...)` (foreground). `work(cursor, progress)` does the
job with its own cursor and reports through `progress(done, total, message)`.
"""
from __future__ import annotations

import contextlib
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, is_dataclass

import duckdb

from core import catalog

Work = Callable[..., object]
REPORT_EVERY_S = 0.25  # progress rows are written at most this often

_cancel_requests: set[int] = set()
_threads: dict[int, threading.Thread] = {}
_kinds: dict[int, str] = {}
_start_lock = threading.Lock()


class JobCancelled(Exception):
    """Raised inside a job's progress callback when someone asked it to stop."""


def _progress_writer(con, job_id: int, echo: Callable | None):
    last = [0.0]

    def progress(done: int, total: int, message: str = "") -> None:
        if job_id in _cancel_requests:
            raise JobCancelled(f"job {job_id} was cancelled")
        if echo:
            echo(done, total, message)
        now = time.monotonic()
        if now - last[0] >= REPORT_EVERY_S or done == total:
            last[0] = now
            catalog.update_job(con, job_id, done=done, total=total, message=message)

    return progress


def _as_result(value) -> dict:
    if is_dataclass(value):
        return asdict(value)
    return value if isinstance(value, dict) else {"result": value}


def interrupted(err: BaseException) -> bool:
    """Whether `err` is Ctrl-C: KeyboardInterrupt; the RuntimeError('Query interrupted') DuckDB
    raises instead when Ctrl-C comes during one of its statements; or its InterruptException,
    when a statement was stopped with `connection.interrupt()`."""
    return (isinstance(err, KeyboardInterrupt | duckdb.InterruptException)
            or (type(err) is RuntimeError and str(err) == "Query interrupted"))


def _execute(con, job_id: int, work: Work, echo: Callable | None):
    try:
        value = work(con, _progress_writer(con, job_id, echo))
    except JobCancelled as err:
        catalog.finish_job(con, job_id, status="cancelled", error=str(err))
        raise
    except (KeyboardInterrupt, Exception) as err:
        if interrupted(err):  # the job ends, marked so; what was committed stays
            with contextlib.suppress(Exception):  # the statement may have ended the
                con.rollback()                    # transaction, or not
            with contextlib.suppress(Exception):
                catalog.finish_job(con, job_id, status="cancelled", error="interrupted (Ctrl-C)")
        else:
            detail = "".join(traceback.format_exception_only(type(err), err)).strip()
            catalog.finish_job(con, job_id, status="failed", error=detail)
        raise
    finally:
        _cancel_requests.discard(job_id)
    catalog.finish_job(con, job_id, status="done", result=_as_result(value))
    return value


def run_job(con, kind: str, params: dict, work: Work, *, progress: Callable | None = None):
    """Run `work` now, recorded as a job; returns what `work` returns (errors propagate)."""
    job_id = catalog.create_job(con, kind, params)
    return _execute(con, job_id, lambda c, p: work(c, p, job_id), progress)


class JobBusy(Exception):
    """A job of this kind already runs, and only one may run at a time."""

    def __init__(self, kind: str, job_id: int) -> None:
        super().__init__(f"{kind.capitalize()} job {job_id} is still running: wait until it "
                         "has finished, then start the next one")
        self.job_id = job_id


def start_job(con, kind: str, params: dict, work: Work, *, alone: bool = False) -> int:
    """Start `work` in a background thread with its own cursor; returns the job id at once.
    Failures are recorded in the job row (status 'failed', error) for the page to show.
    `alone`: refuse (JobBusy) while another job of `kind` runs in this process; the check and
    the start are one step, so two sessions clicking at once cannot both start."""
    with _start_lock:
        if alone and (busy := running(kind)):
            raise JobBusy(kind, busy[0])
        return _start(con, kind, params, work)


def _start(con, kind: str, params: dict, work: Work) -> int:
    job_id = catalog.create_job(con, kind, params)
    cursor = con.cursor()

    def target() -> None:
        try:
            _execute(cursor, job_id, lambda c, p: work(c, p, job_id), None)
        except Exception:  # noqa: BLE001 — already recorded in the jobs table
            pass
        finally:
            cursor.close()

    thread = threading.Thread(target=target, name=f"sieve-job-{job_id}", daemon=True)
    _threads[job_id], _kinds[job_id] = thread, kind
    thread.start()
    return job_id


def cancel_job(job_id: int) -> None:
    """Ask a running job to stop at its next progress report."""
    _cancel_requests.add(job_id)


def is_running(job_id: int) -> bool:
    thread = _threads.get(job_id)
    return thread is not None and thread.is_alive()


def running(kind: str | None = None) -> list[int]:
    """Ids of this process's background jobs (of `kind`, when given) that still run."""
    return [job_id for job_id, thread in list(_threads.items())
            if thread.is_alive() and kind in (None, _kinds.get(job_id))]


def wait(job_id: int, timeout: float | None = None) -> None:
    thread = _threads.get(job_id)
    if thread is not None:
        thread.join(timeout)
