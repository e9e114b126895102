"""The catalog: one DuckDB file holding datasets, images, classes, annotators, label events and jobs.

Every SQL statement of Sieve lives here: the schema, then one small named function per query.
Entry points: `open_catalog(path)` for a connection, then the query functions with that connection
(or a thread's `con.cursor()`).
"""
from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa

from core.config import home_dir

SCHEMA_VERSION = 1
_FILE_LOG = logging.getLogger("sieve.files")  # image paths refused as outside their root

SCHEMA = """
CREATE SEQUENCE IF NOT EXISTS seq_dataset START 1;
CREATE SEQUENCE IF NOT EXISTS seq_image START 1;
CREATE SEQUENCE IF NOT EXISTS seq_annotator START 1;
CREATE SEQUENCE IF NOT EXISTS seq_event START 1;
CREATE SEQUENCE IF NOT EXISTS seq_job START 1;
CREATE SEQUENCE IF NOT EXISTS seq_problem START 1;

CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR);

CREATE TABLE IF NOT EXISTS datasets (
    dataset_id   INTEGER PRIMARY KEY DEFAULT nextval('seq_dataset'),
    name         VARCHAR NOT NULL UNIQUE,
    root         VARCHAR NOT NULL,          -- absolute folder the image paths are relative to
    description  VARCHAR,
    created_at   TIMESTAMP NOT NULL DEFAULT current_timestamp
);

-- One row per file. Rows are never deleted; a re-ingest updates the facts of a changed file
-- and records the change in file_events.
CREATE TABLE IF NOT EXISTS images (
    image_id     BIGINT PRIMARY KEY,
    dataset_id   INTEGER NOT NULL,
    path         VARCHAR NOT NULL,          -- relative to datasets.root, '/'-separated, UTF-8
    path_bytes   BLOB,                      -- raw file name bytes when not valid UTF-8, else NULL
    split        VARCHAR,
    bytes        BIGINT,
    sha256       VARCHAR,
    width        INTEGER,                   -- after EXIF rotation
    height       INTEGER,
    format       VARCHAR,                   -- Pillow's format name: JPEG, PNG, ...
    mode         VARCHAR,                   -- Pillow's mode before conversion: RGB, L, P, CMYK, I;16, ...
    phash        UBIGINT,                   -- imagehash.phash bits, first bit most significant
    dhash        UBIGINT,                   -- imagehash.dhash bits, first bit most significant
    status       VARCHAR NOT NULL,          -- 'ok' or 'unreadable'
    error        VARCHAR,                   -- why it could not be read
    ingested_at  TIMESTAMP NOT NULL,
    UNIQUE (dataset_id, path)
);

CREATE TABLE IF NOT EXISTS file_events (
    image_id     BIGINT NOT NULL,
    event        VARCHAR NOT NULL,          -- 'added', 'changed'
    old_sha256   VARCHAR,
    new_sha256   VARCHAR,
    job_id       BIGINT,
    recorded_at  TIMESTAMP NOT NULL
);

CREATE TABLE IF NOT EXISTS classes (
    dataset_id   INTEGER NOT NULL,
    class_id     INTEGER NOT NULL,
    name         VARCHAR NOT NULL,
    PRIMARY KEY (dataset_id, class_id),
    UNIQUE (dataset_id, name)
);

-- People, imports and models alike. kind: 'import' (a dataset's given labels), 'human', 'model'.
CREATE TABLE IF NOT EXISTS annotators (
    annotator_id INTEGER PRIMARY KEY DEFAULT nextval('seq_annotator'),
    name         VARCHAR NOT NULL UNIQUE,
    kind         VARCHAR NOT NULL
);

-- Append-only. Each row is one act on one object (a whole-image class, a box or a polygon) of
-- one image, in the layer of one annotator. An edit is a new row with the same object_id;
-- a deletion is a row with op = 'delete'. Nothing is updated in place.
CREATE TABLE IF NOT EXISTS label_events (
    event_id     BIGINT PRIMARY KEY,
    object_id    BIGINT NOT NULL,           -- event_id of the object's first event
    dataset_id   INTEGER NOT NULL,
    image_id     BIGINT NOT NULL,
    annotator_id INTEGER NOT NULL,
    kind         VARCHAR NOT NULL,          -- 'class', 'box', 'polygon'
    op           VARCHAR NOT NULL,          -- 'set' or 'delete'
    class_id     INTEGER,
    x DOUBLE, y DOUBLE, w DOUBLE, h DOUBLE, -- pixels, top-left origin; a polygon's bounding box
    points       VARCHAR,                   -- polygon vertices as JSON [[x, y], ...], pixels
    source       VARCHAR NOT NULL,          -- 'import', 'edit', 'review', 'model'
    model_run_id BIGINT,
    score        DOUBLE,
    replaces     BIGINT,                    -- the event this one supersedes
    flag         VARCHAR,                   -- a problem kept visible, e.g. 'zero-area box'
    job_id       BIGINT,
    created_at   TIMESTAMP NOT NULL
);

-- What ingest could not take, with the reason: the user sees it, nothing is silently dropped.
CREATE TABLE IF NOT EXISTS ingest_problems (
    problem_id   BIGINT PRIMARY KEY DEFAULT nextval('seq_problem'),
    dataset_id   INTEGER,
    job_id       BIGINT,
    file         VARCHAR NOT NULL,          -- the image or annotation file concerned
    location     VARCHAR,                   -- line, element or object within the file
    reason       VARCHAR NOT NULL,
    action       VARCHAR NOT NULL,          -- 'skipped', 'flagged', 'clipped', 'refused', 'noted'
    recorded_at  TIMESTAMP NOT NULL
);

CREATE TABLE IF NOT EXISTS jobs (
    job_id       BIGINT PRIMARY KEY DEFAULT nextval('seq_job'),
    kind         VARCHAR NOT NULL,
    params       VARCHAR NOT NULL,          -- JSON
    status       VARCHAR NOT NULL,          -- 'running', 'done', 'failed', 'cancelled'
    done         BIGINT NOT NULL DEFAULT 0,
    total        BIGINT,
    message      VARCHAR,
    result       VARCHAR,                   -- JSON summary when done
    error        VARCHAR,
    started_at   TIMESTAMP NOT NULL,
    finished_at  TIMESTAMP,
    updated_at   TIMESTAMP NOT NULL
);

-- The current state of every object: its latest event, unless that event deleted it. Most
-- objects have one event (event_id = object_id), so the latest is looked up only for objects
-- with several: a small aggregate instead of one over every event (5x faster at 2M events).
CREATE OR REPLACE VIEW current_labels AS
WITH edited AS (
    SELECT object_id, max(event_id) AS last_event FROM label_events
    WHERE object_id IN (SELECT object_id FROM label_events WHERE event_id <> object_id)
    GROUP BY object_id
)
SELECT e.* FROM label_events e LEFT JOIN edited USING (object_id)
WHERE e.op = 'set' AND (edited.last_event IS NULL OR edited.last_event = e.event_id);

-- Current labels with who made them: the per-annotator view.
CREATE OR REPLACE VIEW annotator_labels AS
SELECT c.*, a.name AS annotator, a.kind AS annotator_kind
FROM current_labels c JOIN annotators a USING (annotator_id);

-- The resolved objects (boxes, polygons) of an image: the reviewed layer when the image has
-- one, else the given (imported) layer, else the first person's layer, else a model's.
CREATE OR REPLACE VIEW resolved_objects AS
WITH layers AS (
    SELECT dataset_id, image_id, annotator_id,
           min(CASE WHEN source = 'review' THEN 0 WHEN annotator_kind = 'import' THEN 1
                    WHEN annotator_kind = 'human' THEN 2 ELSE 3 END) AS tier
    FROM annotator_labels WHERE kind IN ('box', 'polygon') GROUP BY ALL
), chosen AS (
    SELECT dataset_id, image_id,
           arg_min(annotator_id, tier::BIGINT * 1000000000 + annotator_id) AS annotator_id
    FROM layers GROUP BY dataset_id, image_id
)
SELECT l.* FROM annotator_labels l JOIN chosen USING (dataset_id, image_id, annotator_id)
WHERE l.kind IN ('box', 'polygon');
"""


# Consensus, review queues: what the agreement analysis writes and the fix page reads.
REVIEW_SCHEMA = """
CREATE SEQUENCE IF NOT EXISTS seq_queue START 1;

-- The consensus label of each voted image, as last computed (e.g. Dawid-Skene); the resolved
-- class uses it where no review and no given label exists.
CREATE TABLE IF NOT EXISTS consensus (
    dataset_id   INTEGER NOT NULL,
    image_id     BIGINT NOT NULL,
    class_id     INTEGER NOT NULL,
    confidence   DOUBLE,
    n_votes      INTEGER,
    method       VARCHAR NOT NULL,
    computed_at  TIMESTAMP NOT NULL
);

-- The resolved whole-image class: a review beats the dataset's given (imported) labels, which
-- beat the consensus of people (the stored consensus where one was computed, else their
-- majority; ties go to the earliest label), which beats a model.
-- Groups carry dataset_id (an image has one) so a filter on the dataset or on a set of image
-- ids reaches the label scan instead of resolving the whole catalog.
CREATE OR REPLACE VIEW resolved_class AS
WITH ranked AS (
    SELECT image_id, dataset_id, class_id, event_id, 1 AS weight,
           CASE WHEN source = 'review' THEN 0
                WHEN annotator_kind = 'import' THEN 1
                WHEN annotator_kind = 'human' THEN 2
                ELSE 3 END AS tier
    FROM annotator_labels WHERE kind = 'class'
    UNION ALL
    SELECT image_id, dataset_id, class_id, 0, 1000000000, 2 FROM consensus  -- outweighs votes
), votes AS (
    SELECT image_id, dataset_id, class_id, tier, sum(weight) AS n, max(event_id) AS latest,
           min(event_id) AS first
    FROM ranked GROUP BY ALL
), best AS (
    -- the winner sorts first on (tier, then for people most votes and earliest first label, for
    -- the others the latest label), packed into one number: arg_min over it takes half the
    -- time of a row_number() window at 1M images. n < 2^40, event ids < 2^62.
    SELECT image_id, dataset_id, min(tier) AS tier,
           arg_min(class_id, tier * (1::HUGEINT << 104) + CASE WHEN tier = 2
               THEN ((1::HUGEINT << 40) - n) * (1::HUGEINT << 62) + first
               ELSE (1::HUGEINT << 62) - latest END) AS class_id
    FROM votes GROUP BY image_id, dataset_id
)
SELECT image_id, dataset_id, class_id,
       ['review', 'given', 'consensus', 'model'][tier + 1] AS resolved_by
FROM best;

-- Decisions about whole images (duplicate resolution and the like), append-only: 'exclude' and
-- 'include' toggle whether an image takes part in training, balance and export; 'move' puts it
-- in another split. Undo is a new event. `image_state` is what everything else reads.
CREATE SEQUENCE IF NOT EXISTS seq_image_event START 1;
CREATE TABLE IF NOT EXISTS image_events (
    image_event_id BIGINT PRIMARY KEY DEFAULT nextval('seq_image_event'),
    dataset_id   INTEGER NOT NULL,
    image_id     BIGINT NOT NULL,
    action       VARCHAR NOT NULL,          -- 'exclude', 'include', 'move'
    split        VARCHAR,                   -- the split moved to ('move')
    reason       VARCHAR,                   -- e.g. 'duplicate of images/00012.png (phash 0)'
    author       VARCHAR,
    batch        VARCHAR,                   -- one resolution acting on several images
    created_at   TIMESTAMP NOT NULL
);
CREATE OR REPLACE VIEW image_state AS
WITH last_move AS (
    SELECT image_id, arg_max(split, image_event_id) AS split FROM image_events
    WHERE action = 'move' GROUP BY image_id
), last_flag AS (
    SELECT image_id, arg_max(action, image_event_id) = 'exclude' AS excluded,
           arg_max(reason, image_event_id) AS reason FROM image_events
    WHERE action IN ('exclude', 'include') GROUP BY image_id
)
SELECT i.image_id, i.dataset_id, i.path, coalesce(m.split, i.split) AS split, i.split AS split_at_ingest,
       coalesce(f.excluded, false) AS excluded, CASE WHEN f.excluded THEN f.reason END AS excluded_reason,
       i.status
FROM images i LEFT JOIN last_move m USING (image_id) LEFT JOIN last_flag f USING (image_id);

-- People's verdicts on shown near-duplicate pairs (latest per pair wins): the ground truth for
-- precision and recall per threshold on the Duplicates page.
CREATE TABLE IF NOT EXISTS pair_marks (
    dataset_id   INTEGER NOT NULL,
    image_a      BIGINT NOT NULL,            -- image_a < image_b
    image_b      BIGINT NOT NULL,
    verdict      VARCHAR NOT NULL,           -- 'duplicate' or 'not duplicate'
    method       VARCHAR,
    distance     INTEGER,
    author       VARCHAR,
    created_at   TIMESTAMP NOT NULL
);

-- Named lists of images to review, in order, with why each is there.
CREATE TABLE IF NOT EXISTS queues (
    queue_id     BIGINT PRIMARY KEY DEFAULT nextval('seq_queue'),
    dataset_id   INTEGER NOT NULL,
    name         VARCHAR NOT NULL,
    kind         VARCHAR NOT NULL,          -- 'disagreement', 'suspect', 'duplicates', ...
    created_by   VARCHAR,
    created_at   TIMESTAMP NOT NULL
);
CREATE TABLE IF NOT EXISTS queue_items (
    queue_id     BIGINT NOT NULL,
    position     INTEGER NOT NULL,
    image_id     BIGINT NOT NULL,
    reason       VARCHAR
);
"""


class CatalogError(Exception):
    """A catalog problem the user can act on; the message says what and what to do."""


class CatalogBusy(CatalogError):
    """Another process holds the catalog file for writing."""


@dataclass(frozen=True)
class Dataset:
    dataset_id: int
    name: str
    root: str
    description: str | None


# ---------------------------------------------------------------- connection


def _holder_file(path: Path) -> Path:
    return path.with_name(path.name + ".holder.json")


def _describe_holder(path: Path, message: str) -> str:
    """Name the process holding `path`, from DuckDB's message and the holder note we leave."""
    pid_match = re.search(r"PID (\d+)", message)
    pid = int(pid_match.group(1)) if pid_match else None
    note = {}
    try:
        note = json.loads(_holder_file(path).read_text())
    except (OSError, ValueError):
        pass
    if pid is None:
        pid = note.get("pid")
    program = note.get("program") if note.get("pid") == pid else None
    if program is None and pid is not None:
        try:
            program = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except OSError:
            program = None
    program = " ".join(program.split())[:200] if program else None  # one line, even for -c '...'
    who = f"{program or 'another process'} (PID {pid})" if pid else (program or "another process")
    since = f" since {note['since']}" if note.get("pid") == pid and note.get("since") else ""
    return who + since


def open_catalog(path: str | Path, *, read_only: bool = False, program: str | None = None):
    """Open (creating if needed) the catalog at `path`; raise CatalogBusy naming the holder.

    `program` describes this process for the message another process gets while we hold the file.
    """
    path = Path(path)
    if read_only and not path.exists():
        raise CatalogError(f"no catalog at {path}: build one with `python -m core demo` or `ingest`")
    if path.is_dir():
        raise CatalogError(f"{path} is a folder: give the catalog's file, e.g. {path / 'sieve.duckdb'}")
    if not read_only and not path.exists() and path.parent == home_dir(create=False):
        home_dir()  # Sieve's own folder (the demo's): made on first use
    if str(path) != ":memory:" and not path.exists() and _missing(path.parent):
        raise CatalogError(f"cannot create the catalog {path}: the folder {path.parent} does not "
                           "exist")
    if not read_only and str(path) != ":memory:":
        _check_writable(path)
    try:
        con = duckdb.connect(str(path), read_only=read_only)
    except duckdb.IOException as err:
        text = " ".join(str(err).split())  # one line, whatever DuckDB wrote
        if "lock" in text.lower():
            raise CatalogBusy(
                f"the catalog {path} is open in {_describe_holder(path, text)}. "
                "Only one process can write to it, and none while another has it open: stop "
                "that process (if it is the dashboard, do this from the dashboard), then try "
                "again."
            ) from err
        if "permission denied" in text.lower():
            raise CatalogError(f"cannot read the catalog {path}: permission denied") from err
        raise CatalogError(_damaged(path, text)) from err
    except duckdb.ConnectionException as err:  # this process has it open in the other mode
        raise CatalogError(f"the catalog {path} is already open in this process "
                           f"{'for writing' if read_only else 'read-only'}: use that "
                           "connection, or close it first") from err
    except duckdb.Error as err:
        raise CatalogError(_damaged(path, " ".join(str(err).split()))) from err
    _check_complete(con, path)
    if not read_only:
        _ensure_schema(con)
        if str(path) != ":memory:":
            _leave_holder_note(path, program)
    return con


def _missing(folder: Path) -> bool:
    """Whether `folder` does not exist (not merely out of this user's reach)."""
    try:
        folder.stat()
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return False


def _check_writable(path: Path) -> None:
    """Raise CatalogError when this process may not write the catalog file or, as DuckDB does
    beside it (its write-ahead log), its folder: said up front, not at the first write."""
    folder = path.parent if str(path.parent) else Path(".")
    if path.exists() and not os.access(path, os.W_OK):
        raise CatalogError(f"the catalog {path} is read-only for you (file permissions): make it "
                           "writable, or open it read-only (commands that only read it work)")
    if folder.is_dir() and not os.access(folder, os.W_OK):
        raise CatalogError(f"the catalog {path} is read-only for you: its folder {folder} is not "
                           "writable, and a catalog keeps its write-ahead log beside it")


def _check_complete(con, path: Path) -> None:
    """Close `con` and raise CatalogError when the file is shorter than the blocks its header
    counts (cut short by a failed copy or a full disk): refused before anything is written.
    With a write-ahead log beside it, the log may hold those blocks: not checked then."""
    if str(path) == ":memory:" or Path(str(path) + ".wal").exists():
        return
    size_row = _one(con.execute("PRAGMA database_size"))
    # used blocks, not total: DuckDB truncates free blocks off the end of the file, so a healthy
    # file can be shorter than total_blocks; it is never shorter than the blocks in use
    block_size, used_blocks = int(size_row[2]), int(size_row[4])
    size = path.stat().st_size
    if size < block_size * used_blocks:
        con.close()
        raise CatalogError(_damaged(path, f"cut short: {size:,} bytes of at least "
                                          f"{block_size * used_blocks:,}"))


def _damaged(path: Path, detail: str) -> str:
    return (f"the catalog {path} is damaged or is not a Sieve catalog ({detail}): restore it from "
            "a backup, or choose another catalog file")


def _leave_holder_note(path: Path, program: str | None) -> None:
    """Write who holds `path` beside it, for the message another process gets; removed when
    this process ends (if it is still this process's note)."""
    note = {"pid": os.getpid(), "program": program or " ".join(os.sys.argv)[:200],
            "since": datetime.now().strftime("%Y-%m-%d %H:%M:%S")}
    try:
        _holder_file(path).write_text(json.dumps(note))
    except OSError:
        return  # the note is a courtesy; DuckDB's own lock is what protects the file
    atexit.register(_remove_holder_note, _holder_file(path), os.getpid())


def _remove_holder_note(note: Path, pid: int) -> None:
    if os.getpid() != pid:  # a forked child exiting: the note is its parent's
        return
    try:
        if json.loads(note.read_text()).get("pid") == pid:
            note.unlink()
    except (OSError, ValueError):
        pass


def _ensure_schema(con) -> None:
    """Create what is missing, in one transaction (one commit instead of seven: 30 ms less on
    a new catalog)."""
    try:
        con.begin()
        for schema in (SCHEMA, REVIEW_SCHEMA, SNAPSHOT_SCHEMA, EDIT_SCHEMA, MICROMODEL_SCHEMA,
                       ACCOUNT_SCHEMA):
            con.execute(schema)
        con.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", [str(SCHEMA_VERSION)])
        con.commit()
    except duckdb.Error as err:
        with contextlib.suppress(duckdb.Error):
            con.rollback()
        raise CatalogError(f"the file is not a Sieve catalog or is damaged: {err}") from err


def _one(result):
    """The first row of a result, reading it to the end (DuckDB wants results finished)."""
    rows = result.fetchall()
    return rows[0] if rows else None


def now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


# ---------------------------------------------------------------- datasets


def get_or_create_dataset(con, name: str, root: str | Path, *, description: str | None = None) -> Dataset:
    """The dataset called `name`, created with `root` if new. An existing one keeps its root."""
    row = _one(con.execute("SELECT dataset_id, name, root, description FROM datasets WHERE name = ?",
                      [name]))
    if row is None:
        row = _one(con.execute(
            "INSERT INTO datasets (name, root, description) VALUES (?, ?, ?) "
            "RETURNING dataset_id, name, root, description",
            [name, str(Path(root).resolve()), description]))
    return Dataset(*row)


def find_dataset(con, name: str) -> Dataset:
    row = _one(con.execute("SELECT dataset_id, name, root, description FROM datasets WHERE name = ?",
                      [name]))
    if row is None:
        known = ", ".join(list_dataset_names(con)) or "none yet"
        raise CatalogError(f"no dataset named {name!r} in the catalog (datasets: {known})")
    return Dataset(*row)


def list_dataset_names(con) -> list[str]:
    return [r[0] for r in con.execute("SELECT name FROM datasets ORDER BY dataset_id").fetchall()]


def set_dataset_description(con, dataset_id: int, description: str) -> None:
    con.execute("UPDATE datasets SET description = ? WHERE dataset_id = ?", [description, dataset_id])


def get_meta(con, key: str) -> str | None:
    row = _one(con.execute("SELECT value FROM meta WHERE key = ?", [key]))
    return row[0] if row else None


def set_meta(con, key: str, value: str) -> None:
    con.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", [key, value])


# ---------------------------------------------------------------- images


def known_images(con, dataset_id: int) -> pd.DataFrame:
    """Columns: image_id, path, sha256, status — every file the catalog has for the dataset."""
    return con.execute("SELECT image_id, path, sha256, status FROM images WHERE dataset_id = ?",
                       [dataset_id]).df()


def next_image_ids(con, count: int) -> list[int]:
    if count == 0:
        return []
    rows = con.execute("SELECT nextval('seq_image') FROM range(?)", [count]).fetchall()
    return [r[0] for r in rows]


IMAGE_COLUMNS = ["image_id", "dataset_id", "path", "path_bytes", "split", "bytes", "sha256",
                 "width", "height", "format", "mode", "phash", "dhash", "status", "error",
                 "ingested_at"]


IMAGE_SCHEMA = pa.schema([
    ("image_id", pa.int64()), ("dataset_id", pa.int64()), ("path", pa.string()),
    ("path_bytes", pa.binary()), ("split", pa.string()), ("bytes", pa.int64()),
    ("sha256", pa.string()), ("width", pa.int64()), ("height", pa.int64()),
    ("format", pa.string()), ("mode", pa.string()), ("phash", pa.uint64()),
    ("dhash", pa.uint64()), ("status", pa.string()), ("error", pa.string()),
    ("ingested_at", pa.timestamp("us"))])
FILE_EVENT_SCHEMA = pa.schema([
    ("image_id", pa.int64()), ("event", pa.string()), ("old_sha256", pa.string()),
    ("new_sha256", pa.string()), ("job_id", pa.int64()), ("recorded_at", pa.timestamp("us"))])


def _columns(frame, names: list[str]):
    """Those columns of a pandas frame or an Arrow table, in that order."""
    return frame.select(names) if isinstance(frame, pa.Table) else frame[names]


def insert_images(con, frame) -> None:
    """Insert new image rows; `frame` (pandas or Arrow, as IMAGE_SCHEMA) has IMAGE_COLUMNS."""
    if len(frame):
        con.register("new_images", _columns(frame, IMAGE_COLUMNS))
        con.execute(f"INSERT INTO images ({', '.join(IMAGE_COLUMNS)}) "
                    f"SELECT {', '.join(IMAGE_COLUMNS)} FROM new_images")
        con.unregister("new_images")


def update_changed_images(con, frame) -> None:
    """Replace the facts of files whose bytes changed (matched on image_id); `frame` as for
    `insert_images`."""
    if len(frame):
        con.register("changed", _columns(frame, IMAGE_COLUMNS))
        con.execute("""
            UPDATE images SET bytes = c.bytes, sha256 = c.sha256, width = c.width,
                height = c.height, format = c.format, mode = c.mode, phash = c.phash,
                dhash = c.dhash, status = c.status, error = c.error, ingested_at = c.ingested_at
            FROM changed c WHERE images.image_id = c.image_id""")
        con.unregister("changed")


def insert_file_events(con, frame) -> None:
    """`frame` (pandas or Arrow, as FILE_EVENT_SCHEMA) columns: image_id, event, old_sha256,
    new_sha256, job_id, recorded_at."""
    if len(frame):
        con.register("fe", frame)
        con.execute("INSERT INTO file_events SELECT image_id, event, old_sha256, new_sha256, "
                    "job_id, recorded_at FROM fe")
        con.unregister("fe")


def set_splits(con, dataset_id: int, splits: pd.DataFrame) -> int:
    """Set the split of images by path; `splits` columns: path, split. Returns rows changed."""
    con.register("new_splits", splits[["path", "split"]])
    count = _one(con.execute("""
        UPDATE images SET split = s.split FROM new_splits s
        WHERE images.dataset_id = ? AND images.path = s.path
          AND images.split IS DISTINCT FROM s.split""", [dataset_id]))[0]
    con.unregister("new_splits")
    return count


def image_paths(con, dataset_id: int) -> pd.DataFrame:
    """Columns: image_id, path, width, height, status — to attach labels to images."""
    return con.execute("SELECT image_id, path, width, height, status FROM images "
                       "WHERE dataset_id = ?", [dataset_id]).df()


# an image of the class: its resolved class, or one of its resolved boxes or polygons ({id}: the
# image id column); values: dataset_id, class_id, dataset_id, class_id
_HAS_CLASS = """({id} IN (SELECT image_id FROM resolved_class WHERE dataset_id = ? AND class_id = ?)
    OR {id} IN (SELECT image_id FROM resolved_objects WHERE dataset_id = ? AND class_id = ?))"""


def _page_filter(dataset_id: int, split, class_id, status) -> tuple[str, list]:
    """WHERE clause (on images) and its values for `image_page` and `count_images`: the
    class filter takes an image whose resolved class, or one of whose resolved boxes or
    polygons, is of the class (as the Fix page's queue does)."""
    where = "dataset_id = ? AND (? IS NULL OR split = ?) AND (? IS NULL OR status = ?)"
    values = [dataset_id, split, split, status, status]
    if class_id is None:
        return where, values
    return (f"{where} AND {_HAS_CLASS.format(id='image_id')}",
            values + [dataset_id, class_id, dataset_id, class_id])


def image_page(con, dataset_id: int, *, offset: int, limit: int, split: str | None = None,
               class_id: int | None = None, status: str | None = None) -> pd.DataFrame:
    """One page of images in path order. Columns: image_id, path, split, width, height,
    status, error, path_bytes, class (resolved class name or NULL), objects (its resolved boxes
    and polygons per class, e.g. 'RBC 12, WBC 1', or NULL). The page is chosen first, then the
    labels of its images only (not a whole-dataset resolution)."""
    where, values = _page_filter(dataset_id, split, class_id, status)
    return con.execute(f"""
        WITH page AS (
            SELECT image_id, dataset_id, path, split, width, height, status, error, path_bytes
            FROM images WHERE {where}
            ORDER BY image_id LIMIT ? OFFSET ?),
        counted AS (
            SELECT o.image_id, c.name, count(*) AS n FROM resolved_objects o
            JOIN classes c ON c.dataset_id = o.dataset_id AND c.class_id = o.class_id
            WHERE o.dataset_id = ? AND o.image_id IN (SELECT image_id FROM page) GROUP BY ALL)
        SELECT p.image_id, p.path, p.split, p.width, p.height, p.status, p.error, p.path_bytes,
               c.name AS class, obj.objects
        FROM page p
        LEFT JOIN (SELECT image_id, class_id FROM resolved_class
                   WHERE dataset_id = ? AND image_id IN (SELECT image_id FROM page)) r
          USING (image_id)
        LEFT JOIN classes c ON c.dataset_id = p.dataset_id AND c.class_id = r.class_id
        LEFT JOIN (SELECT image_id, string_agg(name || ' ' || n, ', ' ORDER BY n DESC, name)
                   AS objects FROM counted GROUP BY image_id) obj USING (image_id)
        ORDER BY p.image_id""", values + [limit, offset, dataset_id, dataset_id]).df()


def count_images(con, dataset_id: int, *, split: str | None = None, class_id: int | None = None,
                 status: str | None = None) -> int:
    """How many images `image_page` pages through with the same filters."""
    where, values = _page_filter(dataset_id, split, class_id, status)
    return _one(con.execute(f"SELECT count(*) FROM images WHERE {where}", values))[0]


def image_file(con, image_id: int) -> tuple[str, str, bytes | None]:
    """(dataset root, relative path, raw path bytes or None) of one image."""
    row = _one(con.execute("""SELECT d.root, i.path, i.path_bytes FROM images i
        JOIN datasets d USING (dataset_id) WHERE i.image_id = ?""", [image_id]))
    if row is None:
        raise CatalogError(f"no image with id {image_id}")
    return row


class PathOutsideRoot(CatalogError):
    """An image path that would leave its dataset's root (e.g. '../' from an annotation file)."""


def dataset_file(root: str, path: str, raw: bytes | None = None) -> str | bytes:
    """The full name of an image file: `path` (or its raw bytes, for names that are not UTF-8)
    under the dataset `root`. Refuses, and logs, a path that is absolute or climbs out of the
    root with '..' (checked on the normalised name; symbolic links inside the root are followed,
    as `export --images link` makes them)."""
    base = os.path.abspath(os.fsencode(root) if raw else root)
    full = os.path.abspath(os.path.join(base, raw if raw else path))
    if os.path.commonpath([base, full]) != base:
        _FILE_LOG.warning("refused to read %r: outside the dataset root %r", raw or path, root)
        raise PathOutsideRoot(f"image path {path!r} points outside the dataset folder {root}")
    return full


def unreadable_images(con, dataset_id: int, *, limit: int | None = 1000) -> pd.DataFrame:
    """Columns: path, error — files that could not be read, with why; the first `limit`
    (None: all)."""
    return con.execute("""SELECT path, error FROM images WHERE dataset_id = ? AND status <> 'ok'
        ORDER BY path LIMIT ?""", [dataset_id, limit]).df()


def split_names(con, dataset_id: int) -> list[str]:
    return [r[0] for r in con.execute(
        "SELECT DISTINCT split FROM images WHERE dataset_id = ? AND split IS NOT NULL ORDER BY 1",
        [dataset_id]).fetchall()]


def hash_table(con, dataset_id: int, *, include_excluded: bool = False) -> pd.DataFrame:
    """Columns: image_id, path, split (after moves), sha256, phash, dhash, excluded — the readable
    images, without those excluded by a resolution unless asked."""
    return con.execute("""SELECT i.image_id, i.path, s.split, i.sha256, i.phash, i.dhash, s.excluded
        FROM images i JOIN image_state s USING (image_id)
        WHERE i.dataset_id = ? AND i.status = 'ok' AND (? OR NOT s.excluded)
        ORDER BY i.image_id""", [dataset_id, include_excluded]).df()


# ---------------------------------------------------------------- classes and annotators


def class_table(con, dataset_id: int) -> pd.DataFrame:
    """Columns: class_id, name, ordered by class_id."""
    return con.execute("SELECT class_id, name FROM classes WHERE dataset_id = ? ORDER BY class_id",
                       [dataset_id]).df()


def add_classes(con, dataset_id: int, names: list[str]) -> None:
    """Add class names not yet known, with the next free ids, in the order given."""
    known = set(class_table(con, dataset_id)["name"])
    start = _one(con.execute("SELECT coalesce(max(class_id) + 1, 0) FROM classes WHERE dataset_id = ?",
                        [dataset_id]))[0]
    fresh = [n for n in dict.fromkeys(names) if n not in known]
    if fresh:
        con.executemany("INSERT INTO classes VALUES (?, ?, ?)",
                        [[dataset_id, start + k, n] for k, n in enumerate(fresh)])


def get_or_create_annotators(con, names: list[str], *, kind: str) -> dict[str, int]:
    """Map each annotator name to its id, creating unknown ones with `kind`."""
    names = [str(n) for n in dict.fromkeys(names)]
    if not names:
        return {}
    frame = pd.DataFrame({"name": pd.Series(names, dtype=object), "kind": kind})
    con.register("new_annotators", frame)
    con.execute("""INSERT INTO annotators (name, kind) SELECT n.name, n.kind FROM new_annotators n
        WHERE n.name NOT IN (SELECT name FROM annotators)""")
    con.unregister("new_annotators")
    rows = con.execute("SELECT name, annotator_id FROM annotators WHERE list_contains(?, name)",
                       [names]).fetchall()
    return dict(rows)


def annotator_table(con, dataset_id: int) -> pd.DataFrame:
    """Columns: annotator, kind, labels, images, sources — who labelled this dataset."""
    return con.execute("""
        SELECT annotator, annotator_kind AS kind, count(*) AS labels,
               count(DISTINCT image_id) AS images, string_agg(DISTINCT source, ', ') AS sources
        FROM annotator_labels WHERE dataset_id = ? GROUP BY ALL ORDER BY labels DESC, annotator""",
        [dataset_id]).df()


# ---------------------------------------------------------------- label events

EVENT_COLUMNS = ["event_id", "object_id", "dataset_id", "image_id", "annotator_id", "kind", "op",
                 "class_id", "x", "y", "w", "h", "points", "source", "model_run_id", "score",
                 "replaces", "flag", "job_id", "created_at"]


def next_event_ids(con, count: int) -> list[int]:
    if count == 0:
        return []
    return [r[0] for r in con.execute("SELECT nextval('seq_event') FROM range(?)", [count]).fetchall()]


def append_label_events(con, frame: pd.DataFrame) -> int:
    """Append events (EVENT_COLUMNS; event_id/object_id may be NULL for new objects)."""
    if not len(frame):
        return 0
    frame = frame.copy()
    missing = frame["event_id"].isna()
    ids = next_event_ids(con, int(missing.sum()))
    frame.loc[missing, "event_id"] = ids
    frame["object_id"] = frame["object_id"].fillna(frame["event_id"])
    con.register("new_events", frame[EVENT_COLUMNS])
    con.execute(f"INSERT INTO label_events ({', '.join(EVENT_COLUMNS)}) "
                f"SELECT {', '.join(EVENT_COLUMNS)} FROM new_events")
    con.unregister("new_events")
    return len(frame)


def current_objects(con, dataset_id: int, annotator_ids: list[int]) -> pd.DataFrame:
    """Current labels of these annotators: event_id, object_id, image_id, annotator_id, kind,
    class_id, x, y, w, h, points, flag — what a re-import compares against."""
    return con.execute("""SELECT event_id, object_id, image_id, annotator_id, kind, class_id,
            x, y, w, h, points, flag FROM current_labels
        WHERE dataset_id = ? AND list_contains(?, annotator_id)""",
        [dataset_id, annotator_ids]).df()


# ---------------------------------------------------------------- problems


def add_problems(con, frame: pd.DataFrame) -> None:
    """`frame` columns: dataset_id, job_id, file, location, reason, action."""
    if len(frame):
        frame = frame.assign(recorded_at=now())
        con.register("new_problems", frame)
        con.execute("""INSERT INTO ingest_problems (dataset_id, job_id, file, location, reason,
            action, recorded_at) SELECT dataset_id, job_id, file, location, reason, action,
            recorded_at FROM new_problems""")
        con.unregister("new_problems")


def problem_table(con, dataset_id: int, *, limit: int | None = 1000) -> pd.DataFrame:
    """Columns: file, location, reason, action, recorded_at — newest first, without repeats;
    the first `limit` (None: all)."""
    return con.execute("""
        SELECT file, location, reason, action, max(recorded_at) AS recorded_at
        FROM ingest_problems WHERE dataset_id = ? GROUP BY ALL
        ORDER BY recorded_at DESC, file LIMIT ?""",
        [dataset_id, limit]).df()


def problem_count(con, dataset_id: int) -> int:
    """How many rows `problem_table` has without its limit."""
    return _one(con.execute("""SELECT count(*) FROM (SELECT DISTINCT file, location, reason,
        action FROM ingest_problems WHERE dataset_id = ?)""", [dataset_id]))[0]


# ---------------------------------------------------------------- jobs


def create_job(con, kind: str, params: dict, *, total: int | None = None) -> int:
    t = now()
    return _one(con.execute("""INSERT INTO jobs (kind, params, status, total, started_at, updated_at)
        VALUES (?, ?, 'running', ?, ?, ?) RETURNING job_id""",
        [kind, json.dumps(params, default=str), total, t, t]))[0]


def update_job(con, job_id: int, *, done: int | None = None, total: int | None = None,
               message: str | None = None) -> None:
    con.execute("""UPDATE jobs SET done = coalesce(?, done), total = coalesce(?, total),
        message = coalesce(?, message), updated_at = ? WHERE job_id = ?""",
        [done, total, message, now(), job_id])


def finish_job(con, job_id: int, *, status: str, result: dict | None = None,
               error: str | None = None) -> None:
    t = now()
    con.execute("""UPDATE jobs SET status = ?, result = ?, error = ?, finished_at = ?,
        updated_at = ?, done = CASE WHEN ? = 'done' THEN coalesce(total, done) ELSE done END
        WHERE job_id = ?""",
        [status, json.dumps(result, default=str) if result is not None else None, error, t, t,
         status, job_id])


def job_row(con, job_id: int) -> dict:
    frame = con.execute("SELECT * FROM jobs WHERE job_id = ?", [job_id]).df()
    if frame.empty:
        raise CatalogError(f"no job with id {job_id}")
    return frame.iloc[0].to_dict()


def recent_jobs(con, *, limit: int = 20) -> pd.DataFrame:
    """Columns of `jobs`, newest first."""
    return con.execute("SELECT * FROM jobs ORDER BY job_id DESC LIMIT ?", [limit]).df()


def mark_interrupted_jobs(con) -> None:
    """Jobs left 'running' by a process that died are marked failed, so nobody waits on them."""
    con.execute("""UPDATE jobs SET status = 'failed', error = 'interrupted: the process running it '
        || 'stopped', finished_at = ? WHERE status = 'running'""", [now()])


# ---------------------------------------------------------------- overview and balance


def data_version(con) -> tuple:
    """A key that changes whenever images, label events, problems, classes or snapshots are added
    or a job records progress or ends: what cached results of the queries below depend on."""
    return _one(con.execute("""SELECT (SELECT count(*) FROM images),
        (SELECT coalesce(max(event_id), 0) FROM label_events),
        (SELECT coalesce(max(problem_id), 0) FROM ingest_problems),
        (SELECT count(*) FROM classes),
        (SELECT max(updated_at) FROM jobs),
        (SELECT coalesce(max(image_event_id), 0) FROM image_events),
        (SELECT count(*) FROM pair_marks),
        (SELECT max(computed_at) FROM consensus),
        (SELECT coalesce(max(snapshot_id), 0) FROM snapshots)"""))


def catalog_file(con) -> str | None:
    """The catalog's file path, or None for an in-memory catalog (caches beside it go there)."""
    return _one(con.execute(
        "SELECT path FROM duckdb_databases() WHERE database_name = current_database()"))[0]


def dataset_overview(con, dataset_id: int) -> dict:
    """Headline counts: images, unreadable, labelled, unlabelled, classes, annotators, events."""
    row = _one(con.execute("""
        SELECT count(*) AS images,
               count(*) FILTER (WHERE i.status <> 'ok') AS unreadable,
               count(*) FILTER (WHERE i.image_id IN (
                   SELECT image_id FROM current_labels WHERE dataset_id = ?)) AS labelled,
               (SELECT count(*) FROM classes WHERE dataset_id = ?) AS classes,
               (SELECT count(DISTINCT annotator_id) FROM label_events WHERE dataset_id = ?) AS annotators,
               (SELECT count(*) FROM label_events WHERE dataset_id = ?) AS events
        FROM images i WHERE i.dataset_id = ?""",
        [dataset_id] * 5))
    keys = ["images", "unreadable", "labelled", "classes", "annotators", "events"]
    result = dict(zip(keys, row))
    result["unlabelled"] = result["images"] - result["labelled"]
    return result


def label_source_counts(con, dataset_id: int) -> pd.DataFrame:
    """Columns: source, annotator_kind, kind, labels — current labels by where they came from."""
    return con.execute("""SELECT source, annotator_kind, kind, count(*) AS labels
        FROM annotator_labels WHERE dataset_id = ? GROUP BY ALL ORDER BY labels DESC""",
        [dataset_id]).df()


def label_counts(con, dataset_id: int) -> pd.DataFrame:
    """Columns: class, split, annotator, annotator_kind, source, kind, labels, flagged — current
    labels of every annotator, counted per class x split x annotator."""
    return con.execute("""
        SELECT c.name AS class, i.split, l.annotator, l.annotator_kind, l.source, l.kind,
               count(*) AS labels, count(l.flag) AS flagged
        FROM annotator_labels l JOIN image_state i USING (dataset_id, image_id)
        JOIN classes c ON c.dataset_id = l.dataset_id AND c.class_id = l.class_id
        WHERE l.dataset_id = ? AND NOT i.excluded GROUP BY ALL ORDER BY class, split, annotator""",
        [dataset_id]).df()


def resolved_counts(con, dataset_id: int) -> pd.DataFrame:
    """Columns: class, split, kind, count, flagged — resolved whole-image classes (kind 'class',
    one per image) and resolved objects (kind 'box' or 'polygon'), per class x split (after
    moves), leaving out images excluded by a resolution."""
    return con.execute("""
        SELECT c.name AS class, i.split, 'class' AS kind, count(*) AS count, 0 AS flagged
        FROM resolved_class r JOIN image_state i USING (dataset_id, image_id)
        JOIN classes c ON c.dataset_id = r.dataset_id AND c.class_id = r.class_id
        WHERE r.dataset_id = ? AND NOT i.excluded GROUP BY ALL
        UNION ALL
        SELECT c.name, i.split, o.kind, count(*), count(o.flag)
        FROM resolved_objects o JOIN image_state i USING (dataset_id, image_id)
        JOIN classes c ON c.dataset_id = o.dataset_id AND c.class_id = o.class_id
        WHERE o.dataset_id = ? AND NOT i.excluded GROUP BY ALL
        ORDER BY 1, 2, 3""", [dataset_id, dataset_id]).df()


def resolved_source_counts(con, dataset_id: int) -> pd.DataFrame:
    """Columns: resolved_by, images — how each image's class was resolved."""
    return con.execute("""SELECT resolved_by, count(*) AS images FROM resolved_class
        WHERE dataset_id = ? GROUP BY ALL ORDER BY images DESC""", [dataset_id]).df()


def object_geometry(con, dataset_id: int, *, limit: int = 200_000) -> pd.DataFrame:
    """Columns: class, x, y, w, h, image_width, image_height — resolved objects (a seeded sample
    of `limit` when there are more), for box size and position statistics."""
    return con.execute(f"""
        SELECT c.name AS class, o.x, o.y, o.w, o.h, i.width AS image_width,
               i.height AS image_height
        FROM resolved_objects o JOIN images i USING (dataset_id, image_id)
        JOIN classes c ON c.dataset_id = o.dataset_id AND c.class_id = o.class_id
        WHERE o.dataset_id = ? USING SAMPLE reservoir({int(limit)} ROWS) REPEATABLE (7)""",
        [dataset_id]).df()


def objects_per_image(con, dataset_id: int) -> pd.DataFrame:
    """Columns: objects, images — how many readable images hold each number of objects."""
    return con.execute("""
        WITH per AS (SELECT i.image_id, count(o.object_id) AS objects FROM images i
            LEFT JOIN (SELECT image_id, object_id FROM resolved_objects WHERE dataset_id = ?) o
              USING (image_id)
            WHERE i.dataset_id = ? AND i.status = 'ok' GROUP BY i.image_id)
        SELECT objects, count(*) AS images FROM per GROUP BY objects ORDER BY objects""",
        [dataset_id, dataset_id]).df()


def image_size_counts(con, dataset_id: int) -> pd.DataFrame:
    """Columns: width, height, images — readable images per size."""
    return con.execute("""SELECT width, height, count(*) AS images FROM images
        WHERE dataset_id = ? AND status = 'ok' GROUP BY ALL ORDER BY images DESC""",
        [dataset_id]).df()


# ---------------------------------------------------------------- agreement and consensus


def class_votes(con, dataset_id: int, *, kinds: list[str]) -> pd.DataFrame:
    """Columns: image_id, annotator (name), class_id — the current whole-image label of every
    annotator of these kinds ('human', 'import', 'model'), one per (image, annotator)."""
    return con.execute("""
        SELECT image_id, annotator, class_id FROM annotator_labels
        WHERE dataset_id = ? AND kind = 'class' AND list_contains(?, annotator_kind)
        QUALIFY row_number() OVER (PARTITION BY image_id, annotator_id ORDER BY event_id DESC) = 1
        ORDER BY image_id, annotator""", [dataset_id, kinds]).df()


def image_facts(con, dataset_id: int, image_ids: list[int]) -> pd.DataFrame:
    """Columns: image_id, path, split, width, height, status — for these images."""
    return con.execute("""SELECT image_id, path, split, width, height, status FROM images
        WHERE dataset_id = ? AND list_contains(?, image_id)""", [dataset_id, image_ids]).df()


def replace_consensus(con, dataset_id: int, frame: pd.DataFrame, *, method: str) -> int:
    """Replace the dataset's stored consensus; `frame` columns: image_id, class_id, confidence,
    n_votes. One transaction: readers see the old or the new consensus, never a mix."""
    con.begin()
    try:
        con.execute("DELETE FROM consensus WHERE dataset_id = ?", [dataset_id])
        con.register("new_consensus", frame)
        con.execute("""INSERT INTO consensus SELECT ?, image_id, class_id, confidence, n_votes,
            ?, ? FROM new_consensus""", [dataset_id, method, now()])
        con.unregister("new_consensus")
        con.commit()
    except Exception:
        con.rollback()
        raise
    return len(frame)


def create_queue(con, dataset_id: int, name: str, kind: str, items: pd.DataFrame, *,
                 created_by: str | None) -> int:
    """A new review queue; `items` columns: image_id, reason (in review order)."""
    queue_id = _one(con.execute("""INSERT INTO queues (dataset_id, name, kind, created_by,
        created_at) VALUES (?, ?, ?, ?, ?) RETURNING queue_id""",
        [dataset_id, name, kind, created_by, now()]))[0]
    frame = pd.DataFrame({"queue_id": queue_id, "position": range(len(items)),
                          "image_id": items["image_id"].astype("int64").to_numpy(),
                          "reason": items["reason"].astype(str).to_numpy()})
    con.register("new_items", frame)
    con.execute("INSERT INTO queue_items SELECT queue_id, position, image_id, reason FROM new_items")
    con.unregister("new_items")
    return queue_id


def queue_table(con, dataset_id: int) -> pd.DataFrame:
    """Columns: queue_id, name, kind, created_by, created_at, images — newest first."""
    return con.execute("""SELECT q.queue_id, q.name, q.kind, q.created_by, q.created_at,
            count(i.image_id) AS images
        FROM queues q LEFT JOIN queue_items i USING (queue_id) WHERE q.dataset_id = ?
        GROUP BY ALL ORDER BY q.queue_id DESC""", [dataset_id]).df()


def queue_items(con, queue_id: int) -> pd.DataFrame:
    """Columns: position, image_id, reason — in review order."""
    return con.execute("""SELECT position, image_id, reason FROM queue_items WHERE queue_id = ?
        ORDER BY position""", [queue_id]).df()


# ---------------------------------------------------------------- duplicates


def append_image_events(con, dataset_id: int, frame: pd.DataFrame, *, author: str | None,
                        batch: str) -> int:
    """Append image events; `frame` columns: image_id, action ('exclude'|'include'|'move'),
    split (for moves, else NULL), reason."""
    frame = frame.assign(dataset_id=dataset_id, author=author, batch=batch, created_at=now())
    con.register("new_image_events", frame)
    con.execute("""INSERT INTO image_events (dataset_id, image_id, action, split, reason, author,
        batch, created_at) SELECT dataset_id, image_id, action, split, reason, author, batch,
        created_at FROM new_image_events""")
    con.unregister("new_image_events")
    return len(frame)


def move_paths_to_split(con, dataset_id: int, paths: list[str], split: str, *,
                        author: str | None, reason: str, batch: str) -> int:
    """Move the images at `paths` whose split (after earlier moves) is another one into `split`,
    as one batch of move events (undone like any resolution). Returns how many moved."""
    con.register("paths_to_move", pd.DataFrame({"path": pd.Series(paths, dtype=object)}))
    ids = [r[0] for r in con.execute("""SELECT s.image_id FROM image_state s
        JOIN paths_to_move p USING (path) WHERE s.dataset_id = ?
          AND s.split IS DISTINCT FROM ? ORDER BY s.image_id""", [dataset_id, split]).fetchall()]
    con.unregister("paths_to_move")
    if ids:
        append_image_events(con, dataset_id, pd.DataFrame(
            {"image_id": ids, "action": "move", "split": split, "reason": reason}),
            author=author, batch=batch)
    return len(ids)


def image_event_batches(con, dataset_id: int, *, limit: int = 50) -> pd.DataFrame:
    """Columns: batch, author, created_at, images, actions — resolutions, newest first."""
    return con.execute("""SELECT batch, any_value(author) AS author, max(created_at) AS created_at,
            count(DISTINCT image_id) AS images, string_agg(DISTINCT action, ', ') AS actions
        FROM image_events WHERE dataset_id = ? GROUP BY batch ORDER BY created_at DESC LIMIT ?""",
        [dataset_id, limit]).df()


def image_events_of_batch(con, dataset_id: int, batch: str) -> pd.DataFrame:
    """Columns: image_id, action, split, previous_split — the events of one resolution, with the
    split each image had just before it (for undo)."""
    return con.execute("""
        SELECT e.image_id, e.action, e.split,
               coalesce((SELECT arg_max(p.split, p.image_event_id) FROM image_events p
                         WHERE p.image_id = e.image_id AND p.action = 'move'
                           AND p.image_event_id < e.image_event_id),
                        (SELECT split FROM images i WHERE i.image_id = e.image_id)) AS previous_split
        FROM image_events e WHERE e.dataset_id = ? AND e.batch = ?""", [dataset_id, batch]).df()


def image_states(con, dataset_id: int, image_ids: list[int]) -> pd.DataFrame:
    """Columns of image_state for these images."""
    return con.execute("SELECT * FROM image_state WHERE dataset_id = ? AND list_contains(?, image_id)",
                       [dataset_id, image_ids]).df()


def add_pair_marks(con, dataset_id: int, frame: pd.DataFrame, *, author: str | None) -> int:
    """`frame` columns: image_a, image_b, verdict, method, distance (pairs stored with a < b)."""
    low = frame[["image_a", "image_b"]].min(axis=1)
    high = frame[["image_a", "image_b"]].max(axis=1)
    frame = frame.assign(image_a=low, image_b=high, dataset_id=dataset_id, author=author,
                         created_at=now())
    con.register("new_marks", frame)
    con.execute("""INSERT INTO pair_marks SELECT dataset_id, image_a, image_b, verdict, method,
        distance, author, created_at FROM new_marks""")
    con.unregister("new_marks")
    return len(frame)


def pair_marks(con, dataset_id: int) -> pd.DataFrame:
    """Columns: image_a, image_b, verdict — the latest verdict on each marked pair."""
    return con.execute("""SELECT image_a, image_b, arg_max(verdict, created_at) AS verdict
        FROM pair_marks WHERE dataset_id = ? GROUP BY image_a, image_b""", [dataset_id]).df()


def current_boxes(con, dataset_id: int) -> pd.DataFrame:
    """Columns: image_id, path, annotator_id, object_id, event_id, class_id, class, x, y, w, h —
    every current box of every layer."""
    return con.execute("""SELECT l.image_id, i.path, l.annotator_id, l.object_id, l.event_id,
            l.class_id, c.name AS class, l.x, l.y, l.w, l.h, l.flag
        FROM current_labels l JOIN images i USING (image_id)
        JOIN classes c ON c.dataset_id = l.dataset_id AND c.class_id = l.class_id
        WHERE l.dataset_id = ? AND l.kind = 'box'""", [dataset_id]).df()


# ---- edits, history and review positions

# What the fix page keeps beside the label events: one row per user action on an image (a save,
# an accept, an undo, a revert) naming its events, so history and undo survive a reload; the
# newest edit of each image, the row that two concurrent saves of one image both write, so
# DuckDB lets only one through; and where each reviewer stands in each review queue.
EDIT_SCHEMA = """
CREATE SEQUENCE IF NOT EXISTS seq_edit_action START 1;
CREATE TABLE IF NOT EXISTS edit_actions (
    action_id    BIGINT PRIMARY KEY DEFAULT nextval('seq_edit_action'),
    dataset_id   INTEGER NOT NULL,
    image_id     BIGINT NOT NULL,
    annotator_id INTEGER NOT NULL,
    kind         VARCHAR NOT NULL,          -- 'save', 'accept', 'class', 'undo', 'revert'
    event_ids    BIGINT[] NOT NULL,         -- the label events it appended
    based_on     BIGINT NOT NULL,           -- the newest event on the image the user had seen
    undoes       BIGINT,                    -- the action an undo reverts
    reverts_to   BIGINT,                    -- the event a revert went back to
    summary      VARCHAR,                   -- e.g. '1 added, 2 moved'
    created_at   TIMESTAMP NOT NULL
);
CREATE TABLE IF NOT EXISTS edit_heads (
    image_id     BIGINT PRIMARY KEY,
    event_id     BIGINT NOT NULL,           -- the newest event an edit appended
    annotator_id INTEGER NOT NULL,
    changed_at   TIMESTAMP NOT NULL
);
CREATE TABLE IF NOT EXISTS review_positions (
    reviewer     VARCHAR NOT NULL,
    queue        VARCHAR NOT NULL,          -- core.queues.QueueSpec.key
    position     INTEGER NOT NULL,          -- 0-based place in the queue
    image_id     BIGINT,
    updated_at   TIMESTAMP NOT NULL,
    PRIMARY KEY (reviewer, queue)
);
"""


def _small_frame(result) -> pd.DataFrame:
    """A result of a few rows as a DataFrame (DuckDB's .df() spends ~10 ms on any result)."""
    return pd.DataFrame(result.fetchall(), columns=[d[0] for d in result.description])


def edit_image(con, image_id: int) -> dict:
    """image_id, dataset_id, root, path, path_bytes, split, width, height, status and
    consensus_class (the stored consensus class id, or None) of one image."""
    result = con.execute("""SELECT i.image_id, i.dataset_id, d.root, i.path, i.path_bytes, i.split,
            i.width, i.height, i.status,
            (SELECT min(class_id) FROM consensus c WHERE c.image_id = i.image_id) AS consensus_class
        FROM images i JOIN datasets d USING (dataset_id) WHERE i.image_id = ?""", [image_id])
    columns = [d[0] for d in result.description]
    row = _one(result)
    if row is None:
        raise CatalogError(f"no image with id {image_id}")
    return dict(zip(columns, row))


def image_label_events(con, image_id: int) -> pd.DataFrame:
    """Every label event on one image, oldest first: EVENT_COLUMNS plus annotator (name),
    annotator_kind and class (name)."""
    return _small_frame(con.execute("""SELECT e.*, a.name AS annotator, a.kind AS annotator_kind,
            c.name AS class
        FROM label_events e JOIN annotators a USING (annotator_id)
        LEFT JOIN classes c ON c.dataset_id = e.dataset_id AND c.class_id = e.class_id
        WHERE e.image_id = ? ORDER BY e.event_id""", [image_id]))


def image_edit_actions(con, image_id: int) -> pd.DataFrame:
    """Columns: action_id, annotator_id, annotator, kind, event_ids (list), based_on, undoes,
    reverts_to, summary, created_at — the actions on one image, oldest first."""
    return _small_frame(con.execute("""SELECT x.action_id, x.annotator_id, a.name AS annotator,
            x.kind, x.event_ids, x.based_on, x.undoes, x.reverts_to, x.summary, x.created_at
        FROM edit_actions x JOIN annotators a USING (annotator_id)
        WHERE x.image_id = ? ORDER BY x.action_id""", [image_id]))


def latest_image_event(con, image_id: int) -> tuple | None:
    """(event_id, annotator name, created_at) of the newest label event on the image, or None."""
    return _one(con.execute("""SELECT e.event_id, a.name, e.created_at FROM label_events e
        JOIN annotators a USING (annotator_id) WHERE e.image_id = ?
        ORDER BY e.event_id DESC LIMIT 1""", [image_id]))


def add_edit_action(con, *, dataset_id: int, image_id: int, annotator_id: int, kind: str,
                    event_ids: list[int], based_on: int, undoes: int | None = None,
                    reverts_to: int | None = None, summary: str | None = None) -> int:
    """Record one action on an image; returns its action_id."""
    return _one(con.execute("""INSERT INTO edit_actions (dataset_id, image_id, annotator_id, kind,
            event_ids, based_on, undoes, reverts_to, summary, created_at)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING action_id""",
        [dataset_id, image_id, annotator_id, kind, event_ids, based_on, undoes, reverts_to,
         summary, now()]))[0]


def claim_image(con, image_id: int, event_id: int, annotator_id: int) -> None:
    """Write the image's edit head. Inside a transaction this is the write two concurrent saves
    of one image share: DuckDB fails the second (at this statement, or at commit for a first
    edit) instead of letting both through."""
    con.execute("""INSERT INTO edit_heads VALUES (?, ?, ?, ?) ON CONFLICT (image_id) DO UPDATE
        SET event_id = excluded.event_id, annotator_id = excluded.annotator_id,
            changed_at = excluded.changed_at""", [image_id, event_id, annotator_id, now()])


_QUEUE_FILTERS = {  # fixed SQL fragments of the "all images" queue; values are bound with ?
    "split": "s.split = ?",
    "class_id": _HAS_CLASS.format(id="s.image_id"),
    "annotator": """s.image_id IN (SELECT l.image_id FROM current_labels l JOIN annotators a
                    USING (annotator_id) WHERE l.dataset_id = ? AND a.name = ?)""",
    "source": "s.image_id IN (SELECT image_id FROM current_labels WHERE dataset_id = ? AND source = ?)",
}


def filtered_image_ids(con, dataset_id: int, *, split: str | None = None,
                       class_id: int | None = None, annotator: str | None = None,
                       source: str | None = None) -> pd.DataFrame:
    """Column image_id: the dataset's images in id order with the split (after moves), a
    resolved class or resolved object of the class, a current label by the annotator (name) and
    one from the source ('import', 'edit', 'review', 'model') — each filter only when given."""
    values = {"split": [split], "class_id": [dataset_id, class_id, dataset_id, class_id],
              "annotator": [dataset_id, annotator], "source": [dataset_id, source]}
    given = {"split": split, "class_id": class_id, "annotator": annotator, "source": source}
    where, params = ["s.dataset_id = ?"], [dataset_id]
    for name, value in given.items():
        if value is not None:
            where.append(_QUEUE_FILTERS[name])
            params += values[name]
    return con.execute(f"SELECT s.image_id FROM image_state s WHERE {' AND '.join(where)} "
                       "ORDER BY s.image_id", params).df()


def flagged_images(con, dataset_id: int) -> pd.DataFrame:
    """Columns: image_id, reason — images with a current label that carries a flag (a zero-area
    box, a clipped box, ...), in id order; the reason lists the flags."""
    return con.execute("""SELECT image_id, string_agg(DISTINCT flag, '; ') AS reason
        FROM current_labels WHERE dataset_id = ? AND flag IS NOT NULL
        GROUP BY image_id ORDER BY image_id""", [dataset_id]).df()


def model_label_images(con, dataset_id: int) -> pd.DataFrame:
    """Columns: image_id, reason, score — images with current model labels, lowest score first;
    the reason names the least confident label."""
    return con.execute("""SELECT l.image_id,
            'model score ' || printf('%.3f', min(l.score)) || ' (' ||
                arg_min(coalesce(c.name, '?'), l.score) || ')' AS reason,
            min(l.score) AS score
        FROM current_labels l
        LEFT JOIN classes c ON c.dataset_id = l.dataset_id AND c.class_id = l.class_id
        WHERE l.dataset_id = ? AND l.source = 'model'
        GROUP BY l.image_id ORDER BY score NULLS LAST, l.image_id""", [dataset_id]).df()


def label_event_facts(con, dataset_id: int) -> dict:
    """What the review queues need to know about a dataset's label events at a glance: flagged
    (events with a flag), model (events from a model), kinds (sorted), sources (sorted),
    annotators (names, sorted)."""
    row = _one(con.execute("""SELECT count(flag), count(*) FILTER (WHERE source = 'model'),
            list_sort(list(DISTINCT kind)), list_sort(list(DISTINCT source))
        FROM label_events WHERE dataset_id = ?""", [dataset_id]))
    names = [r[0] for r in con.execute("""SELECT name FROM annotators WHERE annotator_id IN
        (SELECT DISTINCT annotator_id FROM label_events WHERE dataset_id = ?) ORDER BY name""",
        [dataset_id]).fetchall()]
    return {"flagged": row[0], "model": row[1], "kinds": row[2] or [], "sources": row[3] or [],
            "annotators": names}


def review_version(con) -> tuple:
    """(newest queue, classes, newest label event): changes whenever the review queues, their
    filters or the labels change; a few ms, where data_version reads every table."""
    return _one(con.execute("""SELECT (SELECT coalesce(max(queue_id), 0) FROM queues),
        (SELECT count(*) FROM classes), (SELECT coalesce(max(event_id), 0) FROM label_events)"""))


def review_position(con, reviewer: str, queue: str) -> tuple[int, int | None] | None:
    """(position, image_id) where `reviewer` last stood in `queue`, or None."""
    return _one(con.execute("""SELECT position, image_id FROM review_positions
        WHERE reviewer = ? AND queue = ?""", [reviewer, queue]))


def set_review_position(con, reviewer: str, queue: str, position: int, image_id: int | None) -> None:
    con.execute("""INSERT INTO review_positions VALUES (?, ?, ?, ?, ?)
        ON CONFLICT (reviewer, queue) DO UPDATE SET position = excluded.position,
            image_id = excluded.image_id, updated_at = excluded.updated_at""",
        [reviewer, queue, position, image_id, now()])


# ---- snapshots and export

# A snapshot names a point in a dataset's history. The `*_as_of` macros apply the rules of
# current_labels, resolved_class, resolved_objects and image_state to what existed at a point:
# label events up to p_max_event, image events up to p_max_image_event, images up to
# p_max_image. `p_models` false leaves out model labels (annotator kind or source 'model').
# The stored consensus is replaced when recomputed, so a snapshot keeps a copy of it;
# p_snapshot NULL reads the live one.
SNAPSHOT_SCHEMA = """
CREATE SEQUENCE IF NOT EXISTS seq_snapshot START 1;
CREATE TABLE IF NOT EXISTS snapshots (
    snapshot_id        BIGINT PRIMARY KEY DEFAULT nextval('seq_snapshot'),
    dataset_id         INTEGER NOT NULL,
    name               VARCHAR NOT NULL,
    max_event_id       BIGINT NOT NULL,     -- label events up to this one are in the snapshot
    max_image_event_id BIGINT NOT NULL,     -- exclusions and split moves up to this one
    max_image_id       BIGINT NOT NULL,     -- images ingested later are not
    author             VARCHAR,
    note               VARCHAR,
    created_at         TIMESTAMP NOT NULL,
    UNIQUE (dataset_id, name)
);
CREATE TABLE IF NOT EXISTS snapshot_consensus (
    snapshot_id  BIGINT NOT NULL,
    image_id     BIGINT NOT NULL,
    class_id     INTEGER NOT NULL
);

CREATE OR REPLACE MACRO labels_as_of(p_dataset, p_max_event) AS TABLE
WITH upto AS (
    SELECT * FROM label_events WHERE dataset_id = p_dataset AND event_id <= p_max_event
), edited AS (
    SELECT object_id, max(event_id) AS last_event FROM upto
    WHERE object_id IN (SELECT object_id FROM upto WHERE event_id <> object_id)
    GROUP BY object_id
)
SELECT u.*, a.name AS annotator, a.kind AS annotator_kind
FROM upto u LEFT JOIN edited USING (object_id) JOIN annotators a USING (annotator_id)
WHERE u.op = 'set' AND (edited.last_event IS NULL OR edited.last_event = u.event_id);

CREATE OR REPLACE MACRO people_labels_as_of(p_dataset, p_max_event, p_models) AS TABLE
SELECT *, CASE WHEN source = 'review' THEN 0 WHEN annotator_kind = 'import' THEN 1
               WHEN annotator_kind = 'human' THEN 2 ELSE 3 END AS tier
FROM labels_as_of(p_dataset, p_max_event)
WHERE p_models OR (annotator_kind <> 'model' AND source <> 'model');

CREATE OR REPLACE MACRO resolved_class_as_of(p_dataset, p_max_event, p_models, p_snapshot) AS TABLE
WITH ranked AS (
    SELECT image_id, class_id, event_id, 1 AS weight, tier
    FROM people_labels_as_of(p_dataset, p_max_event, p_models) WHERE kind = 'class'
    UNION ALL
    SELECT image_id, class_id, 0, 1000000000, 2 FROM consensus  -- outweighs votes
    WHERE p_snapshot IS NULL AND dataset_id = p_dataset
    UNION ALL
    SELECT image_id, class_id, 0, 1000000000, 2 FROM snapshot_consensus
    WHERE snapshot_id = p_snapshot
), votes AS (
    SELECT image_id, p_dataset AS dataset_id, class_id, tier, sum(weight) AS n,
           max(event_id) AS latest, min(event_id) AS first
    FROM ranked GROUP BY ALL
), best AS (
    SELECT *, row_number() OVER (PARTITION BY dataset_id, image_id ORDER BY tier,
           CASE WHEN tier = 2 THEN -n ELSE 0 END,
           CASE WHEN tier = 2 THEN first ELSE -latest END) AS rn
    FROM votes
)
SELECT image_id, dataset_id, class_id,
       ['review', 'given', 'consensus', 'model'][tier + 1] AS resolved_by
FROM best WHERE rn = 1;

CREATE OR REPLACE MACRO resolved_objects_as_of(p_dataset, p_max_event, p_models) AS TABLE
WITH objects AS (
    SELECT * FROM people_labels_as_of(p_dataset, p_max_event, p_models)
    WHERE kind IN ('box', 'polygon')
), chosen AS (
    SELECT image_id,
           arg_min(annotator_id, tier::BIGINT * 1000000000 + annotator_id) AS annotator_id
    FROM (SELECT image_id, annotator_id, min(tier) AS tier FROM objects GROUP BY ALL)
    GROUP BY image_id
)
SELECT o.* EXCLUDE (tier) FROM objects o JOIN chosen USING (image_id, annotator_id);

CREATE OR REPLACE MACRO image_state_as_of(p_dataset, p_max_image_event, p_max_image) AS TABLE
WITH upto AS (
    SELECT * FROM image_events WHERE dataset_id = p_dataset AND image_event_id <= p_max_image_event
), last_move AS (
    SELECT image_id, arg_max(split, image_event_id) AS split FROM upto
    WHERE action = 'move' GROUP BY image_id
), last_flag AS (
    SELECT image_id, arg_max(action, image_event_id) = 'exclude' AS excluded FROM upto
    WHERE action IN ('exclude', 'include') GROUP BY image_id
)
SELECT i.image_id, i.dataset_id, i.path, i.path_bytes, coalesce(m.split, i.split) AS split,
       coalesce(f.excluded, false) AS excluded, i.width, i.height, i.mode, i.format, i.status
FROM images i LEFT JOIN last_move m USING (image_id) LEFT JOIN last_flag f USING (image_id)
WHERE i.dataset_id = p_dataset AND i.image_id <= p_max_image;
"""


@dataclass(frozen=True)
class Point:
    """A point in the catalog's history: label events, image events and images up to these ids,
    and the snapshot whose copy of the consensus applies (None: the live consensus)."""
    max_event_id: int
    max_image_event_id: int
    max_image_id: int
    snapshot_id: int | None = None


def current_point(con) -> Point:
    """Now, as a point: the newest label event, image event and image."""
    return Point(*_one(con.execute("""SELECT (SELECT coalesce(max(event_id), 0) FROM label_events),
        (SELECT coalesce(max(image_event_id), 0) FROM image_events),
        (SELECT coalesce(max(image_id), 0) FROM images)""")))


def insert_snapshot(con, dataset_id: int, name: str, point: Point, *, author: str | None,
                    note: str | None) -> int:
    """Store a named point with a copy of the dataset's stored consensus, in one transaction;
    raise CatalogError when the dataset already has a snapshot `name`."""
    con.begin()
    try:
        snapshot_id = _one(con.execute("""INSERT INTO snapshots (dataset_id, name, max_event_id,
            max_image_event_id, max_image_id, author, note, created_at)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING snapshot_id""",
            [dataset_id, name, point.max_event_id, point.max_image_event_id, point.max_image_id,
             author, note, now()]))[0]
        con.execute("""INSERT INTO snapshot_consensus SELECT ?, image_id, class_id FROM consensus
            WHERE dataset_id = ?""", [snapshot_id, dataset_id])
        con.commit()
    except duckdb.ConstraintException as err:
        con.rollback()
        raise CatalogError(f"a snapshot named {name!r} already exists: choose another "
                           "name") from err
    except Exception:
        con.rollback()
        raise
    return snapshot_id


def snapshot_table(con, dataset_id: int) -> pd.DataFrame:
    """Columns: snapshot_id, name, max_event_id, max_image_event_id, max_image_id, author, note,
    created_at, labels (every annotator's labels at that point) — newest first."""
    return con.execute("""SELECT s.snapshot_id, s.name, s.max_event_id, s.max_image_event_id,
            s.max_image_id, s.author, s.note, s.created_at,
            (SELECT count(*) FROM labels_as_of(?, s.max_event_id)) AS labels
        FROM snapshots s WHERE s.dataset_id = ? ORDER BY s.snapshot_id DESC""",
        [dataset_id, dataset_id]).df()


def snapshot_point(con, dataset_id: int, name: str) -> Point | None:
    row = _one(con.execute("""SELECT max_event_id, max_image_event_id, max_image_id, snapshot_id
        FROM snapshots WHERE dataset_id = ? AND name = ?""", [dataset_id, name]))
    return Point(*row) if row else None


def snapshot_names(con, dataset_id: int) -> list[str]:
    """Newest first."""
    return [r[0] for r in con.execute("""SELECT name FROM snapshots WHERE dataset_id = ?
        ORDER BY snapshot_id DESC""", [dataset_id]).fetchall()]


def images_as_of(con, dataset_id: int, point: Point, *, with_models: bool) -> pd.DataFrame:
    """Columns: image_id, path, path_bytes, split, excluded, width, height, mode, format, status,
    class_id, class, resolved_by — every image at `point` with its resolved class (NULL when
    none), by image_id."""
    return con.execute("""
        SELECT s.image_id, s.path, s.path_bytes, s.split, s.excluded, s.width, s.height, s.mode,
               s.format, s.status, r.class_id, c.name AS class, r.resolved_by
        FROM image_state_as_of(?, ?, ?) s
        LEFT JOIN resolved_class_as_of(?, ?, ?, ?) r USING (image_id)
        LEFT JOIN classes c ON c.dataset_id = s.dataset_id AND c.class_id = r.class_id
        ORDER BY s.image_id""",
        [dataset_id, point.max_image_event_id, point.max_image_id,
         dataset_id, point.max_event_id, with_models, point.snapshot_id]).df()


def objects_as_of(con, dataset_id: int, point: Point, *, with_models: bool) -> pd.DataFrame:
    """Columns: image_id, object_id, event_id, kind, class_id, class, x, y, w, h, points, flag,
    annotator, annotator_kind, source, model_run_id, score, created_at — the resolved boxes and
    polygons at `point`, by image then object."""
    return con.execute("""
        SELECT o.image_id, o.object_id, o.event_id, o.kind, o.class_id, c.name AS class,
               o.x, o.y, o.w, o.h, o.points, o.flag, o.annotator, o.annotator_kind, o.source,
               o.model_run_id, o.score, o.created_at
        FROM resolved_objects_as_of(?, ?, ?) o
        JOIN classes c ON c.dataset_id = o.dataset_id AND c.class_id = o.class_id
        ORDER BY o.image_id, o.object_id""", [dataset_id, point.max_event_id, with_models]).df()


def labels_with_provenance(con, dataset_id: int, point: Point, *,
                           with_models: bool) -> pd.DataFrame:
    """Columns: image_id, kind, class_id, class, x, y, w, h, points, annotator, annotator_kind,
    source, event_id, object_id, replaces, created_at, model_run_id, score, flag — every
    annotator's labels at `point`, by image then object."""
    return con.execute("""
        SELECT l.image_id, l.kind, l.class_id, c.name AS class, l.x, l.y, l.w, l.h, l.points,
               l.annotator, l.annotator_kind, l.source, l.event_id, l.object_id, l.replaces,
               l.created_at, l.model_run_id, l.score, l.flag
        FROM people_labels_as_of(?, ?, ?) l
        JOIN classes c ON c.dataset_id = l.dataset_id AND c.class_id = l.class_id
        ORDER BY l.image_id, l.object_id""", [dataset_id, point.max_event_id, with_models]).df()


def label_changes(con, dataset_id: int, before: Point, after: Point) -> pd.DataFrame:
    """Columns: change ('added', 'removed', 'changed'), object_id, image_id, path, kind,
    annotator, annotator_kind, old_class, new_class, old_event, new_event — every annotator's
    labels that differ between two points (a changed label differs in class or geometry)."""
    return con.execute("""
        SELECT CASE WHEN a.object_id IS NULL THEN 'added' WHEN b.object_id IS NULL THEN 'removed'
                    ELSE 'changed' END AS change,
               coalesce(b.object_id, a.object_id) AS object_id,
               coalesce(b.image_id, a.image_id) AS image_id, i.path,
               coalesce(b.kind, a.kind) AS kind, coalesce(b.annotator, a.annotator) AS annotator,
               coalesce(b.annotator_kind, a.annotator_kind) AS annotator_kind,
               ca.name AS old_class, cb.name AS new_class, a.event_id AS old_event,
               b.event_id AS new_event
        FROM labels_as_of(?, ?) a FULL OUTER JOIN labels_as_of(?, ?) b USING (object_id)
        JOIN images i ON i.image_id = coalesce(b.image_id, a.image_id)
        LEFT JOIN classes ca ON ca.dataset_id = i.dataset_id AND ca.class_id = a.class_id
        LEFT JOIN classes cb ON cb.dataset_id = i.dataset_id AND cb.class_id = b.class_id
        WHERE a.object_id IS NULL OR b.object_id IS NULL
           OR (a.event_id <> b.event_id AND (a.class_id IS DISTINCT FROM b.class_id
               OR a.x IS DISTINCT FROM b.x OR a.y IS DISTINCT FROM b.y
               OR a.w IS DISTINCT FROM b.w OR a.h IS DISTINCT FROM b.h
               OR a.points IS DISTINCT FROM b.points))
        ORDER BY image_id, object_id""",
        [dataset_id, before.max_event_id, dataset_id, after.max_event_id]).df()


def resolved_counts_as_of(con, dataset_id: int, point: Point, *, with_models: bool) -> pd.DataFrame:
    """Columns: class, split, kind, count — resolved image classes and objects at `point`, per
    class x split, on the images not excluded at that point (what an export holds)."""
    args = [dataset_id, point.max_image_event_id, point.max_image_id]
    return con.execute("""
        WITH kept AS (SELECT image_id, split FROM image_state_as_of(?, ?, ?)
                      WHERE NOT excluded AND status = 'ok'),
             labels AS (SELECT image_id, class_id, 'class' AS kind
                        FROM resolved_class_as_of(?, ?, ?, ?)
                        UNION ALL
                        SELECT image_id, class_id, kind FROM resolved_objects_as_of(?, ?, ?))
        SELECT c.name AS class, k.split, l.kind, count(*) AS count
        FROM labels l JOIN kept k USING (image_id)
        JOIN classes c ON c.dataset_id = ? AND c.class_id = l.class_id
        GROUP BY ALL ORDER BY 1, 2, 3""",
        args + [dataset_id, point.max_event_id, with_models, point.snapshot_id,
                dataset_id, point.max_event_id, with_models, dataset_id]).df()


def object_layers(con, dataset_id: int) -> pd.DataFrame:
    """Columns: image_id, annotator, class_id, x, y, w, h — every current box and polygon (by its
    bounding box) of every layer, on images where at least two layers drew."""
    return con.execute("""
        SELECT image_id, annotator, class_id, x, y, w, h FROM annotator_labels
        WHERE dataset_id = ? AND kind IN ('box', 'polygon')
        QUALIFY count(DISTINCT annotator_id) OVER (PARTITION BY image_id) >= 2
        ORDER BY image_id, annotator""", [dataset_id]).df()


# ---- micro-models
# Runs of small models trained on people's labels (core.micromodel, core.autolabel): the run, its
# per-epoch metrics, the images it trained and was evaluated on, its predictions, and each time
# it was applied. What a run wrote as labels lives in label_events (model_run_id).

MICROMODEL_SCHEMA = """
CREATE SEQUENCE IF NOT EXISTS seq_model_run START 1;
CREATE TABLE IF NOT EXISTS model_runs (
    run_id       BIGINT PRIMARY KEY DEFAULT nextval('seq_model_run'),
    dataset_id   INTEGER NOT NULL,
    task         VARCHAR NOT NULL,          -- 'classify', 'find-more' (one class against the rest), 'detect'
    classes      VARCHAR NOT NULL,          -- JSON [[name, class_id or null], ...] in output order
    config       VARCHAR NOT NULL,          -- JSON: the model's config and how images were chosen
    metrics      VARCHAR,                   -- JSON: training summary and held-out evaluation
    weights      VARCHAR,                   -- checkpoint file: weights with their config
    status       VARCHAR NOT NULL,          -- 'training', 'trained', 'failed'
    error        VARCHAR,
    job_id       BIGINT,
    created_by   VARCHAR,
    created_at   TIMESTAMP NOT NULL,
    updated_at   TIMESTAMP NOT NULL
);
CREATE TABLE IF NOT EXISTS model_run_epochs (
    run_id       BIGINT NOT NULL,
    epoch        INTEGER NOT NULL,
    loss         DOUBLE,                    -- mean training loss of the epoch
    accuracy     DOUBLE,                    -- on the (augmented) training batches
    seconds      DOUBLE,                    -- since training started
    recorded_at  TIMESTAMP NOT NULL
);
CREATE TABLE IF NOT EXISTS model_run_images (
    run_id       BIGINT NOT NULL,
    image_id     BIGINT NOT NULL,
    role         VARCHAR NOT NULL,          -- 'train', 'holdout', or 'target' (predicted, not labelled)
    class_id     INTEGER                    -- the people's label it was given (output index)
);
CREATE TABLE IF NOT EXISTS model_predictions (
    run_id       BIGINT NOT NULL,
    image_id     BIGINT NOT NULL,
    probs        FLOAT[] NOT NULL           -- one probability per output, in the run's order
);
-- A detection run's proposals (task 'detect'): boxes in original pixels, with their scores.
CREATE TABLE IF NOT EXISTS model_box_predictions (
    run_id       BIGINT NOT NULL,
    image_id     BIGINT NOT NULL,
    output       INTEGER NOT NULL,          -- index into the run's classes
    score        DOUBLE NOT NULL,
    x DOUBLE, y DOUBLE, w DOUBLE, h DOUBLE
);
CREATE SEQUENCE IF NOT EXISTS seq_model_apply START 1;
CREATE TABLE IF NOT EXISTS model_applications (
    apply_id     BIGINT PRIMARY KEY DEFAULT nextval('seq_model_apply'),
    run_id       BIGINT NOT NULL,
    threshold    DOUBLE NOT NULL,
    strategy     VARCHAR NOT NULL,          -- how the review queue is ordered
    labelled     INTEGER NOT NULL,          -- model labels written
    queued       INTEGER NOT NULL,          -- images sent to review
    queue_id     BIGINT,
    created_by   VARCHAR,
    created_at   TIMESTAMP NOT NULL,
    rolled_back_at TIMESTAMP,
    rolled_back_by VARCHAR
);
"""


def catalog_folder(con) -> Path | None:
    """The folder holding the catalog file (None for an in-memory catalog)."""
    row = _one(con.execute("""SELECT path FROM duckdb_databases()
        WHERE database_name = current_database()"""))
    return Path(row[0]).resolve().parent if row and row[0] else None


def human_class_labels(con, dataset_id: int, *, split: str | None = None) -> pd.DataFrame:
    """Columns: image_id, path, split, class_id, resolved_by — images whose resolved class
    comes from people (a review, the given labels or consensus, never a model), readable and
    not excluded, in image order."""
    return con.execute("""
        SELECT s.image_id, s.path, s.split, r.class_id, r.resolved_by
        FROM resolved_class r JOIN image_state s USING (dataset_id, image_id)
        WHERE r.dataset_id = ? AND r.resolved_by <> 'model' AND s.status = 'ok'
          AND NOT s.excluded AND (? IS NULL OR s.split = ?)
        ORDER BY s.image_id""", [dataset_id, split, split]).df()


def candidate_images(con, dataset_id: int, *, split: str | None = None) -> pd.DataFrame:
    """Columns: image_id, path, split, human_class (people's resolved class or NULL) — every
    readable, not excluded image a model could label, in image order."""
    return con.execute("""
        SELECT s.image_id, s.path, s.split, r.class_id AS human_class
        FROM image_state s LEFT JOIN (SELECT image_id, class_id FROM resolved_class
            WHERE dataset_id = ? AND resolved_by <> 'model') r USING (image_id)
        WHERE s.dataset_id = ? AND s.status = 'ok' AND NOT s.excluded
          AND (? IS NULL OR s.split = ?)
        ORDER BY s.image_id""", [dataset_id, dataset_id, split, split]).df()


def create_model_run(con, dataset_id: int, *, task: str, classes: list, config: dict,
                     created_by: str | None = None, job_id: int | None = None) -> int:
    t = now()
    return _one(con.execute("""INSERT INTO model_runs (dataset_id, task, classes, config, status,
            job_id, created_by, created_at, updated_at)
        VALUES (?, ?, ?, ?, 'training', ?, ?, ?, ?) RETURNING run_id""",
        [dataset_id, task, json.dumps(classes), json.dumps(config, default=str), job_id,
         created_by, t, t]))[0]


def finish_model_run(con, run_id: int, *, status: str, metrics: dict | None = None,
                     weights: str | None = None, error: str | None = None) -> None:
    con.execute("""UPDATE model_runs SET status = ?, metrics = coalesce(?, metrics),
        weights = coalesce(?, weights), error = ?, updated_at = ? WHERE run_id = ?""",
        [status, json.dumps(metrics, default=str) if metrics is not None else None, weights,
         error, now(), run_id])


def model_run(con, run_id: int) -> dict:
    """One row of model_runs as a dict, with classes, config and metrics decoded."""
    frame = con.execute("SELECT * FROM model_runs WHERE run_id = ?", [run_id]).df()
    if frame.empty:
        raise CatalogError(f"no model run with id {run_id}")
    row = frame.iloc[0].to_dict()
    for key in ("classes", "config", "metrics"):
        row[key] = json.loads(row[key]) if isinstance(row[key], str) else None
    return row


def model_run_table(con, dataset_id: int) -> pd.DataFrame:
    """Columns: run_id, task, status, classes, created_by, created_at, job_id, applied (labels
    of the run now current), accuracy (held-out, NULL before evaluation) — newest first."""
    return con.execute("""
        SELECT r.run_id, r.task, r.status, r.classes, r.created_by, r.created_at, r.job_id,
               (SELECT count(*) FROM current_labels c WHERE c.model_run_id = r.run_id) AS applied,
               try_cast(json_extract(r.metrics, '$.evaluation.accuracy') AS DOUBLE) AS accuracy
        FROM model_runs r WHERE r.dataset_id = ? ORDER BY r.run_id DESC""", [dataset_id]).df()


def add_run_epoch(con, run_id: int, *, epoch: int, loss: float, accuracy: float,
                  seconds: float) -> None:
    con.execute("INSERT INTO model_run_epochs VALUES (?, ?, ?, ?, ?, ?)",
                [run_id, epoch, loss, accuracy, seconds, now()])


def run_epochs(con, run_id: int) -> pd.DataFrame:
    """Columns: epoch, loss, accuracy, seconds — in epoch order."""
    return con.execute("""SELECT epoch, loss, accuracy, seconds FROM model_run_epochs
        WHERE run_id = ? ORDER BY epoch""", [run_id]).df()


def add_run_images(con, run_id: int, frame: pd.DataFrame) -> None:
    """`frame` columns: image_id, role ('train', 'holdout'), class_id (output index)."""
    con.register("new_run_images", frame[["image_id", "role", "class_id"]])
    con.execute("""INSERT INTO model_run_images SELECT ?, image_id, role, class_id
        FROM new_run_images""", [run_id])
    con.unregister("new_run_images")


def run_images(con, run_id: int) -> pd.DataFrame:
    """Columns: image_id, path, role, class_id (output index) — in image order."""
    return con.execute("""SELECT m.image_id, i.path, m.role, m.class_id FROM model_run_images m
        JOIN images i USING (image_id) WHERE m.run_id = ? ORDER BY m.image_id""", [run_id]).df()


def add_predictions(con, run_id: int, frame: pd.DataFrame) -> None:
    """Store a run's predictions; `frame` columns: image_id, probs (one sequence per image)."""
    con.register("new_predictions", frame[["image_id", "probs"]])
    con.execute("INSERT INTO model_predictions SELECT ?, image_id, probs FROM new_predictions",
                [run_id])
    con.unregister("new_predictions")


def run_predictions(con, run_id: int) -> pd.DataFrame:
    """Columns: image_id, path, split, human_class (people's resolved class or NULL), probs
    (list) — in image order."""
    return con.execute("""
        SELECT p.image_id, i.path, s.split, r.class_id AS human_class, p.probs
        FROM model_predictions p JOIN images i USING (image_id)
        JOIN image_state s USING (image_id)
        LEFT JOIN (SELECT image_id, class_id FROM resolved_class WHERE resolved_by <> 'model'
                   AND image_id IN (SELECT image_id FROM model_predictions WHERE run_id = ?)) r
          USING (image_id)
        WHERE p.run_id = ? ORDER BY p.image_id""", [run_id, run_id]).df()


def run_current_labels(con, run_id: int) -> pd.DataFrame:
    """Columns: event_id, object_id, dataset_id, image_id, annotator_id, class_id, kind, x, y,
    w, h — labels a model run wrote that are still current."""
    return con.execute("""SELECT event_id, object_id, dataset_id, image_id, annotator_id, class_id,
            kind, x, y, w, h
        FROM current_labels WHERE model_run_id = ? ORDER BY event_id""", [run_id]).df()


def add_application(con, run_id: int, *, threshold: float, strategy: str, labelled: int,
                    queued: int, queue_id: int | None, created_by: str | None) -> int:
    return _one(con.execute("""INSERT INTO model_applications (run_id, threshold, strategy,
            labelled, queued, queue_id, created_by, created_at)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING apply_id""",
        [run_id, threshold, strategy, labelled, queued, queue_id, created_by, now()]))[0]


def run_applications(con, run_id: int) -> pd.DataFrame:
    """Columns of model_applications for a run, newest first."""
    return con.execute("""SELECT * FROM model_applications WHERE run_id = ?
        ORDER BY apply_id DESC""", [run_id]).df()


def mark_rolled_back(con, run_id: int, *, by: str | None) -> None:
    con.execute("""UPDATE model_applications SET rolled_back_at = ?, rolled_back_by = ?
        WHERE run_id = ? AND rolled_back_at IS NULL""", [now(), by, run_id])


def delete_queue(con, queue_id: int) -> None:
    """Remove a review queue and its items (reviews already made stay: they are label events)."""
    con.execute("DELETE FROM queue_items WHERE queue_id = ?", [queue_id])
    con.execute("DELETE FROM queues WHERE queue_id = ?", [queue_id])


# ---- accounts and audit
# Local accounts (core.users) and what the audit page reads: every recorded act, from label
# events to account changes, as one log of who did what to which thing when.

ACCOUNT_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    name         VARCHAR PRIMARY KEY,       -- also the annotator name of the person's edits
    role         VARCHAR NOT NULL,          -- 'viewer', 'annotator', 'lead', 'admin'
    password_hash VARCHAR NOT NULL,         -- bcrypt, salt and cost included
    active       BOOLEAN NOT NULL,
    must_change_password BOOLEAN NOT NULL,  -- a one-time password was set for them
    created_at   TIMESTAMP NOT NULL
);
CREATE SEQUENCE IF NOT EXISTS seq_user_event START 1;
CREATE TABLE IF NOT EXISTS user_events (
    user_event_id BIGINT PRIMARY KEY DEFAULT nextval('seq_user_event'),
    name         VARCHAR NOT NULL,          -- the account acted on
    action       VARCHAR NOT NULL,          -- 'add', 'set-role', 'disable', 'password'
    detail       VARCHAR,                   -- e.g. the new role
    author       VARCHAR,                   -- who did it (NULL: the first start)
    created_at   TIMESTAMP NOT NULL
);

-- One row per recorded act. kind: 'label', 'image', 'pair', 'snapshot', 'model', 'queue',
-- 'account'; who_kind: the annotator kind for label events ('human', 'import', 'model'),
-- 'human' for the rest (they carry a person's name or none).
CREATE OR REPLACE VIEW audit_log AS
SELECT e.created_at, a.name AS who, a.kind AS who_kind, 'label' AS kind, e.dataset_id,
       e.source || ' ' || CASE WHEN e.op = 'delete' THEN 'delete' ELSE 'set' END || ' ' || e.kind
           AS action,
       'image ' || e.image_id AS target,
       concat_ws(', ', c.name,
                 CASE WHEN e.model_run_id IS NOT NULL THEN 'run ' || e.model_run_id END,
                 e.flag) AS detail
FROM label_events e JOIN annotators a USING (annotator_id)
LEFT JOIN classes c ON c.dataset_id = e.dataset_id AND c.class_id = e.class_id
UNION ALL
SELECT created_at, author, 'human', 'image', dataset_id, action, 'image ' || image_id,
       concat_ws(', ', split, reason) FROM image_events
UNION ALL
SELECT created_at, author, 'human', 'pair', dataset_id, 'mark ' || verdict,
       'images ' || image_a || ', ' || image_b, concat_ws(', ', method, 'distance ' || distance)
FROM pair_marks
UNION ALL
SELECT created_at, author, 'human', 'snapshot', dataset_id, 'snapshot', name, note FROM snapshots
UNION ALL
SELECT created_at, created_by, 'human', 'model', dataset_id, 'train ' || task, 'run ' || run_id,
       status FROM model_runs
UNION ALL
SELECT p.created_at, p.created_by, 'human', 'model', r.dataset_id, 'apply', 'run ' || p.run_id,
       'threshold ' || round(p.threshold, 3) || ', ' || p.labelled || ' labels, ' || p.queued
           || ' queued'
FROM model_applications p JOIN model_runs r USING (run_id)
UNION ALL
SELECT p.rolled_back_at, p.rolled_back_by, 'human', 'model', r.dataset_id, 'roll back',
       'run ' || p.run_id, NULL
FROM model_applications p JOIN model_runs r USING (run_id) WHERE p.rolled_back_at IS NOT NULL
UNION ALL
SELECT created_at, created_by, 'human', 'queue', dataset_id, 'create queue', name, kind FROM queues
UNION ALL
SELECT created_at, author, 'human', 'account', NULL, action, name, detail FROM user_events
UNION ALL
SELECT j.started_at, json_extract_string(j.params, '$.user'), 'human', 'ingest', d.dataset_id,
       'ingest (' || j.status || ')', json_extract_string(j.params, '$.source'),
       CASE WHEN j.status = 'done' THEN
           json_extract_string(j.result, '$.added') || ' added, '
           || json_extract_string(j.result, '$.changed') || ' changed, '
           || json_extract_string(j.result, '$.unreadable') || ' unreadable, '
           || json_extract_string(j.result, '$.labels_added') || ' labels added'
       ELSE j.error END
FROM jobs j LEFT JOIN datasets d ON d.name = coalesce(json_extract_string(j.result, '$.dataset'),
                                                      json_extract_string(j.params, '$.dataset'))
WHERE j.kind = 'ingest';
"""

AUDIT_KINDS = ("label", "image", "pair", "snapshot", "model", "queue", "account", "ingest")


def count_users(con) -> int:
    """How many accounts exist (active or not): none means single-user mode (also for a catalog
    made before accounts existed, opened read-only so without the table)."""
    try:
        return _one(con.execute("SELECT count(*) FROM users"))[0]
    except duckdb.CatalogException:
        return 0


def user_row(con, name: str) -> dict | None:
    """name, role, password_hash, active, must_change_password, created_at of one account."""
    result = con.execute("""SELECT name, role, password_hash, active, must_change_password,
        created_at FROM users WHERE name = ?""", [name])
    columns = [d[0] for d in result.description]
    row = _one(result)
    return dict(zip(columns, row)) if row else None


def user_table(con) -> pd.DataFrame:
    """Columns: name, role, active, must_change_password, created_at — never the hashes."""
    if not count_users(con):
        return pd.DataFrame(columns=["name", "role", "active", "must_change_password",
                                     "created_at"])
    return _small_frame(con.execute("""SELECT name, role, active, must_change_password, created_at
        FROM users ORDER BY name"""))


def count_active_admins(con) -> int:
    return _one(con.execute("SELECT count(*) FROM users WHERE role = 'admin' AND active"))[0]


def insert_user(con, name: str, role: str, password_hash: str, *,
                must_change_password: bool) -> None:
    con.execute("INSERT INTO users VALUES (?, ?, ?, true, ?, ?)",
                [name, role, password_hash, must_change_password, now()])


def update_user(con, name: str, *, role: str | None = None, active: bool | None = None,
                password_hash: str | None = None, must_change_password: bool | None = None) -> None:
    """Change the given fields of one account (None: keep)."""
    con.execute("""UPDATE users SET role = coalesce(?, role), active = coalesce(?, active),
        password_hash = coalesce(?, password_hash),
        must_change_password = coalesce(?, must_change_password) WHERE name = ?""",
        [role, active, password_hash, must_change_password, name])


def add_user_event(con, name: str, action: str, *, detail: str | None,
                   author: str | None) -> None:
    con.execute("""INSERT INTO user_events (name, action, detail, author, created_at)
        VALUES (?, ?, ?, ?, ?)""", [name, action, detail, author, now()])


_AUDIT_WHERE = """(? IS NULL OR dataset_id = ?) AND (? IS NULL OR who = ?)
    AND list_contains(?, kind) AND (? IS NULL OR created_at >= ?)
    AND (? IS NULL OR created_at < ?)"""


def _audit_params(dataset_id, who, kinds, since, until) -> list:
    return [dataset_id, dataset_id, who, who, list(kinds), since, since, until, until]


def audit_page(con, *, dataset_id: int | None, who: str | None, kinds: list[str],
               since: datetime | None, until: datetime | None, limit: int,
               offset: int) -> pd.DataFrame:
    """Columns: created_at, who, who_kind, kind, dataset, action, target, detail — newest first,
    one page of the acts matching every filter given (dataset_id None: all datasets and account
    changes)."""
    return _small_frame(con.execute(f"""SELECT l.created_at, l.who, l.who_kind, l.kind,
            d.name AS dataset, l.action, l.target, l.detail
        FROM (SELECT * FROM audit_log WHERE {_AUDIT_WHERE}) l
        LEFT JOIN datasets d USING (dataset_id)
        ORDER BY l.created_at DESC, l.kind, l.target LIMIT ? OFFSET ?""",
        _audit_params(dataset_id, who, kinds, since, until) + [limit, offset]))


def count_audit(con, *, dataset_id: int | None, who: str | None, kinds: list[str],
                since: datetime | None, until: datetime | None) -> int:
    return _one(con.execute(f"SELECT count(*) FROM audit_log WHERE {_AUDIT_WHERE}",
                            _audit_params(dataset_id, who, kinds, since, until)))[0]


def audit_activity(con, *, dataset_id: int | None, who: str | None, kinds: list[str],
                   since: datetime | None, until: datetime | None) -> pd.DataFrame:
    """Columns: who, day, kind, acts — people's acts (not imports or models) per day and kind."""
    return _small_frame(con.execute(f"""SELECT who, CAST(created_at AS DATE) AS day, kind,
            count(*) AS acts
        FROM audit_log WHERE who_kind = 'human' AND who IS NOT NULL AND {_AUDIT_WHERE}
        GROUP BY ALL ORDER BY day, who, kind""",
        _audit_params(dataset_id, who, kinds, since, until)))


def audit_people(con) -> list[str]:
    """Names that can appear in the audit log: people (annotators of kind 'human', accounts and
    authors of other acts) first, then imports and models."""
    return [r[0] for r in con.execute("""SELECT name FROM (
            SELECT name, kind = 'human' AS person FROM annotators
            UNION ALL SELECT name, true FROM users
            UNION ALL SELECT author, true FROM image_events
            UNION ALL SELECT author, true FROM pair_marks
            UNION ALL SELECT author, true FROM snapshots
            UNION ALL SELECT created_by, true FROM model_runs
            UNION ALL SELECT created_by, true FROM queues
            UNION ALL SELECT author, true FROM user_events)
        WHERE name IS NOT NULL GROUP BY name ORDER BY NOT bool_or(person), name""").fetchall()]


# ---- detection micro-models (core.autodetect): people's boxes in, proposals out


def human_boxes(con, dataset_id: int, *, split: str | None = None) -> pd.DataFrame:
    """Columns: image_id, path, split, class_id, x, y, w, h — the resolved boxes of images whose
    resolved box layer is people's (a review, the given labels or a person, never a model),
    readable and not excluded, in image order."""
    return con.execute("""
        SELECT s.image_id, s.path, s.split, o.class_id, o.x, o.y, o.w, o.h
        FROM resolved_objects o JOIN image_state s USING (dataset_id, image_id)
        WHERE o.dataset_id = ? AND o.kind = 'box' AND o.annotator_kind <> 'model'
          AND s.status = 'ok' AND NOT s.excluded AND (? IS NULL OR s.split = ?)
        ORDER BY s.image_id, o.event_id""", [dataset_id, split, split]).df()


def add_box_predictions(con, run_id: int, frame: pd.DataFrame) -> None:
    """Store a detection run's proposals; `frame` columns: image_id, output, score, x, y, w, h."""
    con.register("new_box_predictions", frame[["image_id", "output", "score", "x", "y", "w", "h"]])
    con.execute("""INSERT INTO model_box_predictions SELECT ?, image_id, output, score, x, y, w, h
        FROM new_box_predictions""", [run_id])
    con.unregister("new_box_predictions")


def run_box_predictions(con, run_id: int) -> pd.DataFrame:
    """Columns: image_id, output, score, x, y, w, h — a detection run's proposals, by image and
    best score first."""
    return con.execute("""SELECT image_id, output, score, x, y, w, h FROM model_box_predictions
        WHERE run_id = ? ORDER BY image_id, score DESC""", [run_id]).df()

