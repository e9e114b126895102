"""core.jobs: progress rows, failures recorded, cancellation, background threads."""
import threading

import pytest

from core import catalog, jobs


@pytest.fixture
def con(tmp_path):
    connection = catalog.open_catalog(tmp_path / "jobs.duckdb")
    yield connection
    connection.close()


def test_run_job_records_progress_and_result(con):
    seen = []

    def work(cursor, progress, job_id):
        for k in range(1, 4):
            progress(k, 3, "counting")
        return {"counted": 3}

    assert jobs.run_job(con, "count", {}, work, progress=lambda d, t, m: seen.append(d)) == {"counted": 3}
    job = catalog.recent_jobs(con).iloc[0]
    assert seen == [1, 2, 3]
    assert (job["status"], job["done"], job["total"]) == ("done", 3, 3)
    assert '"counted": 3' in job["result"]


def test_run_job_failure_is_recorded(con):
    def work(cursor, progress, job_id):
        raise ValueError("labels.csv line 12: unknown class 'cta'")

    with pytest.raises(ValueError):
        jobs.run_job(con, "ingest", {}, work)
    job = catalog.recent_jobs(con).iloc[0]
    assert job["status"] == "failed" and "unknown class 'cta'" in job["error"]


def test_start_job_runs_in_background_and_can_be_cancelled(con):
    started, release = threading.Event(), threading.Event()

    def work(cursor, progress, job_id):
        started.set()
        release.wait(10)
        progress(1, 2, "half way")  # the cancel request surfaces here
        return {}

    job_id = jobs.start_job(con, "slow", {}, work)
    assert started.wait(10) and jobs.is_running(job_id)
    jobs.cancel_job(job_id)
    release.set()
    jobs.wait(job_id, timeout=10)
    assert catalog.job_row(con, job_id)["status"] == "cancelled"


def test_start_job_alone_lets_one_of_many_simultaneous_starts_through(con):
    """Eight sessions press "Start ingest" at the same moment: one job starts, seven are told
    which job runs. A check before the start, apart from it, lets several through."""
    release, gate = threading.Event(), threading.Barrier(8)
    started, refused = [], []

    def press() -> None:
        gate.wait(10)
        try:
            started.append(jobs.start_job(con, "ingest", {}, lambda c, p, j: release.wait(30),
                                          alone=True))
        except jobs.JobBusy as err:
            refused.append(err)

    presses = [threading.Thread(target=press) for _ in range(8)]
    for thread in presses:
        thread.start()
    for thread in presses:
        thread.join(30)
    try:
        assert len(started) == 1 and len(refused) == 7
        assert {err.job_id for err in refused} == set(started)
        assert str(refused[0]) == (f"Ingest job {started[0]} is still running: wait until it "
                                   "has finished, then start the next one")
        other = jobs.start_job(con, "export", {}, lambda c, p, j: None, alone=True)
    finally:
        release.set()
        jobs.wait(started[0], timeout=30)
    again = jobs.start_job(con, "ingest", {}, lambda c, p, j: None, alone=True)  # free again
    for job_id in (other, again):
        jobs.wait(job_id, timeout=30)
        assert catalog.job_row(con, job_id)["status"] == "done"


def test_mark_interrupted_jobs_fails_leftovers(con):
    job_id = catalog.create_job(con, "ingest", {})
    catalog.mark_interrupted_jobs(con)
    row = catalog.job_row(con, job_id)
    assert row["status"] == "failed" and "interrupted" in row["error"]
