"""The catalog: one DuckDB file holding datasets, images, classes, annotators, label events and jobs.

Every SQL statement of Sieve lives here: the schema, then one small named function per query.
Entry points: `open_catalog(path)` for a connection, then the query functions with that connection
(or a thread's `con.cursor()`).
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import pandas as pd

SCHEMA_VERSION = 1

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

-- The resolved whole-image class: a review beats the dataset's given (imported) labels, which
-- beat the majority of people, which beats a model. Ties among people go to the earliest label.
-- Partitions carry dataset_id (an image has one) so a filter on the dataset or on a range of
-- image ids reaches the label scan instead of resolving the whole catalog.
CREATE OR REPLACE VIEW resolved_class AS
WITH ranked AS (
    SELECT image_id, dataset_id, class_id, source, annotator_kind, event_id,
           CASE WHEN source = 'review' THEN 0
                WHEN annotator_kind = 'import' THEN 1
                WHEN annotator_kind = 'human' THEN 2
                ELSE 3 END AS tier
    FROM annotator_labels WHERE kind = 'class'
), votes AS (
    SELECT image_id, dataset_id, class_id, tier, count(*) AS n, max(event_id) AS latest,
           min(event_id) AS first
    FROM ranked GROUP BY ALL
), best AS (
    SELECT *, row_number() OVER (PARTITION BY dataset_id, image_id ORDER BY tier,
           CASE WHEN tier = 2 THEN -n ELSE 0 END, CASE WHEN tier = 2 THEN first ELSE -latest END) AS rn
    FROM votes
)
SELECT image_id, dataset_id, class_id,
       ['review', 'given', 'consensus', 'model'][tier + 1] AS resolved_by
FROM best WHERE rn = 1;

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
           arg_min(annotator_id, tier * 1000000000 + annotator_id) AS annotator_id
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
    try:
        con = duckdb.connect(str(path), read_only=read_only)
    except duckdb.IOException as err:
        text = str(err)
        if "lock" in text.lower():
            raise CatalogBusy(
                f"the catalog {path} is open for writing by {_describe_holder(path, text)}. "
                "Only one process can write to it: stop that process, or run this from the "
                "dashboard, then try again."
            ) from err
        raise CatalogError(f"cannot open the catalog {path}: {text}") from err
    except duckdb.Error as err:
        raise CatalogError(f"{path} is not a usable catalog file: {err}") from err
    if not read_only:
        _ensure_schema(con)
        if str(path) != ":memory:":
            _leave_holder_note(path, program)
    return con


def _leave_holder_note(path: Path, program: str | None) -> None:
    note = {"pid": os.getpid(), "program": program or " ".join(os.sys.argv)[:200],
            "since": datetime.now().strftime("%Y-%m-%d %H:%M:%S")}
    try:
        _holder_file(path).write_text(json.dumps(note))
    except OSError:
        pass  # the note is a courtesy; DuckDB's own lock is what protects the file


def _ensure_schema(con) -> None:
    try:
        con.execute(SCHEMA)
        con.execute(REVIEW_SCHEMA)
        con.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", [str(SCHEMA_VERSION)])
    except duckdb.Error as err:
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


def insert_images(con, frame: pd.DataFrame) -> None:
    """Insert new image rows; `frame` has IMAGE_COLUMNS."""
    if len(frame):
        con.register("new_images", frame[IMAGE_COLUMNS])
        con.execute(f"INSERT INTO images ({', '.join(IMAGE_COLUMNS)}) "
                    f"SELECT {', '.join(IMAGE_COLUMNS)} FROM new_images")
        con.unregister("new_images")


def update_changed_images(con, frame: pd.DataFrame) -> None:
    """Replace the facts of files whose bytes changed (matched on image_id)."""
    if len(frame):
        con.register("changed", frame[IMAGE_COLUMNS])
        con.execute("""
            UPDATE images SET bytes = c.bytes, sha256 = c.sha256, width = c.width,
                height = c.height, format = c.format, mode = c.mode, phash = c.phash,
                dhash = c.dhash, status = c.status, error = c.error, ingested_at = c.ingested_at
            FROM changed c WHERE images.image_id = c.image_id""")
        con.unregister("changed")


def insert_file_events(con, frame: pd.DataFrame) -> None:
    """`frame` columns: image_id, event, old_sha256, new_sha256, job_id, recorded_at."""
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


def image_page(con, dataset_id: int, *, offset: int, limit: int, split: str | None = None,
               class_id: int | None = None, status: str | None = None) -> pd.DataFrame:
    """One page of images in path order. Columns: image_id, path, split, width, height,
    status, error, path_bytes, class (resolved class name or NULL)."""
    if class_id is not None:
        return con.execute("""
            SELECT i.image_id, i.path, i.split, i.width, i.height, i.status, i.error,
                   i.path_bytes, c.name AS class
            FROM images i
            JOIN resolved_class r USING (dataset_id, image_id)
            LEFT JOIN classes c ON c.dataset_id = i.dataset_id AND c.class_id = r.class_id
            WHERE i.dataset_id = ? AND (? IS NULL OR i.split = ?) AND r.class_id = ?
              AND (? IS NULL OR i.status = ?)
            ORDER BY i.image_id LIMIT ? OFFSET ?""",
            [dataset_id, split, split, class_id, status, status, limit, offset]).df()
    # the page first, then the classes of its images only (not a whole-dataset resolution)
    return con.execute("""
        WITH page AS (
            SELECT image_id, dataset_id, path, split, width, height, status, error, path_bytes
            FROM images WHERE dataset_id = ? AND (? IS NULL OR split = ?)
              AND (? IS NULL OR status = ?)
            ORDER BY image_id LIMIT ? OFFSET ?)
        SELECT p.image_id, p.path, p.split, p.width, p.height, p.status, p.error, p.path_bytes,
               c.name AS class
        FROM page p
        LEFT JOIN (SELECT image_id, class_id FROM resolved_class
                   WHERE image_id IN (SELECT image_id FROM page)) r USING (image_id)
        LEFT JOIN classes c ON c.dataset_id = p.dataset_id AND c.class_id = r.class_id
        ORDER BY p.image_id""",
        [dataset_id, split, split, status, status, limit, offset]).df()


def count_images(con, dataset_id: int, *, split: str | None = None, class_id: int | None = None,
                 status: str | None = None) -> int:
    """How many images `image_page` pages through with the same filters."""
    if class_id is None:
        return _one(con.execute("""SELECT count(*) FROM images WHERE dataset_id = ?
            AND (? IS NULL OR split = ?) AND (? IS NULL OR status = ?)""",
            [dataset_id, split, split, status, status]))[0]
    return _one(con.execute("""SELECT count(*) FROM images i
        JOIN resolved_class r USING (dataset_id, image_id)
        WHERE i.dataset_id = ? AND (? IS NULL OR i.split = ?) AND r.class_id = ?
          AND (? IS NULL OR i.status = ?)""",
        [dataset_id, split, split, class_id, status, status]))[0]


def image_file(con, image_id: int) -> tuple[str, str, bytes | None]:
    """(dataset root, relative path, raw path bytes or None) of one image."""
    row = _one(con.execute("""SELECT d.root, i.path, i.path_bytes FROM images i
        JOIN datasets d USING (dataset_id) WHERE i.image_id = ?""", [image_id]))
    if row is None:
        raise CatalogError(f"no image with id {image_id}")
    return row


def unreadable_images(con, dataset_id: int, *, limit: int = 1000) -> pd.DataFrame:
    """Columns: path, error — files that could not be read, with why."""
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


def problem_table(con, dataset_id: int, *, limit: int = 1000) -> pd.DataFrame:
    """Columns: file, location, reason, action, recorded_at — newest first, without repeats."""
    return con.execute("""
        SELECT file, location, reason, action, max(recorded_at) AS recorded_at
        FROM ingest_problems WHERE dataset_id = ? GROUP BY ALL
        ORDER BY recorded_at DESC, file LIMIT ?""",
        [dataset_id, limit]).df()


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
    """A key that changes whenever images, label events, problems or classes are added or a job
    records progress or ends: what cached results of the queries below depend on."""
    return _one(con.execute("""SELECT (SELECT count(*) FROM images),
        (SELECT coalesce(max(event_id), 0) FROM label_events),
        (SELECT coalesce(max(problem_id), 0) FROM ingest_problems),
        (SELECT count(*) FROM classes),
        (SELECT max(updated_at) FROM jobs),
        (SELECT coalesce(max(image_event_id), 0) FROM image_events),
        (SELECT count(*) FROM pair_marks),
        (SELECT max(computed_at) FROM consensus)"""))


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
        FROM annotator_labels l JOIN images i USING (dataset_id, image_id)
        JOIN classes c ON c.dataset_id = l.dataset_id AND c.class_id = l.class_id
        WHERE l.dataset_id = ? GROUP BY ALL ORDER BY class, split, annotator""",
        [dataset_id]).df()


def resolved_counts(con, dataset_id: int) -> pd.DataFrame:
    """Columns: class, split, kind, count, flagged — resolved whole-image classes (kind 'class',
    one per image) and resolved objects (kind 'box' or 'polygon'), per class x split."""
    return con.execute("""
        SELECT c.name AS class, i.split, 'class' AS kind, count(*) AS count, 0 AS flagged
        FROM resolved_class r JOIN images i USING (dataset_id, image_id)
        JOIN classes c ON c.dataset_id = r.dataset_id AND c.class_id = r.class_id
        WHERE r.dataset_id = ? GROUP BY ALL
        UNION ALL
        SELECT c.name, i.split, o.kind, count(*), count(o.flag)
        FROM resolved_objects o JOIN images i USING (dataset_id, image_id)
        JOIN classes c ON c.dataset_id = o.dataset_id AND c.class_id = o.class_id
        WHERE o.dataset_id = ? GROUP BY ALL
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
