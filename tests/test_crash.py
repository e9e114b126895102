"""An ingest killed with SIGKILL halfway, then run again, leaves a complete and consistent
catalog: the 10,000 CIFAR-10 test images once each, their 10,000 labels, nothing orphaned."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd

from core import catalog

REPO = Path(__file__).resolve().parent.parent
IMAGES = 10_000
PROGRESS = re.compile(rb"reading images[^\r\n]*?(\d+)/(\d+)")


def labels_csv(data: Path, out: Path) -> Path:
    """cifar10-test's labels.csv (index, label_id, label_name) as image,label rows."""
    table = pd.read_csv(data / "cifar10-test" / "labels.csv")
    pd.DataFrame({"image": [f"{i:05d}.png" for i in table["index"]],
                  "label": table["label_name"]}).to_csv(out, index=False)
    return out


def ingest_command(data: Path, labels: Path, db: Path) -> list[str]:
    return [sys.executable, "-m", "core", "ingest", str(data / "cifar10-test" / "images"),
            "--format", "csv", "--labels", str(labels), "--dataset", "cifar10-test",
            "--db", str(db), "--workers", "2"]


class Output:
    """Collects a process's stderr in a thread, so that its progress can be read while it runs."""

    def __init__(self, stream):
        self.data = b""
        self.thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self.thread.start()

    def _read(self, stream) -> None:
        for chunk in iter(lambda: stream.read1(4096), b""):
            self.data += chunk

    def images_read(self) -> int:
        found = PROGRESS.findall(self.data)
        return int(found[-1][0]) if found else 0


def kill_when_half_read(command: list[str], *, timeout: float = 300) -> int:
    """Run `command`, SIGKILL it (and its reader processes) once half the images are read;
    returns how many had been read."""
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, start_new_session=True)
    output = Output(process.stderr)
    deadline = time.monotonic() + timeout
    try:
        while output.images_read() < IMAGES // 2:
            assert process.poll() is None, f"ingest ended first: {output.data[-2000:]!r}"
            assert time.monotonic() < deadline, "ingest too slow to reach half"
            time.sleep(0.02)
        read = output.images_read()
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # the ingest and its reader processes
        process.wait()
    return read


def counts(db: Path) -> dict:
    con = catalog.open_catalog(db, read_only=True)
    try:
        one = lambda sql: con.execute(sql).fetchall()[0][0]  # noqa: E731
        return {
            "images": one("SELECT count(*) FROM images"),
            "distinct paths": one("SELECT count(DISTINCT (dataset_id, path)) FROM images"),
            "unreadable": one("SELECT count(*) FROM images WHERE status <> 'ok'"),
            "added events": one("SELECT count(*) FROM file_events WHERE event = 'added'"),
            "orphan labels": one("SELECT count(*) FROM label_events e LEFT JOIN images i "
                                 "USING (image_id) WHERE i.image_id IS NULL"),
            "labelled images": one("SELECT count(DISTINCT image_id) FROM current_labels"),
            "labels": one("SELECT count(*) FROM current_labels"),
            "per class": dict(con.execute("SELECT c.name, count(*) FROM current_labels l "
                                          "JOIN classes c USING (dataset_id, class_id) "
                                          "GROUP BY 1").fetchall()),
        }
    finally:
        con.close()


def test_ingest_killed_halfway_then_rerun_is_complete(shared_data, tmp_path):
    db = tmp_path / "catalog.duckdb"
    command = ingest_command(shared_data, labels_csv(shared_data, tmp_path / "labels.csv"), db)
    read = kill_when_half_read(command)
    assert IMAGES // 2 <= read < IMAGES
    partial = counts(db)["images"]
    assert 0 < partial < IMAGES  # some batches were committed, not all
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"{IMAGES - partial} added, {partial} unchanged" in done.stdout
    found = counts(db)
    assert found.pop("per class") == {name: 1000 for name in (
        "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
        "truck")}
    assert found == {"images": IMAGES, "distinct paths": IMAGES, "unreadable": 0,
                     "added events": IMAGES, "orphan labels": 0, "labelled images": IMAGES,
                     "labels": IMAGES}
