"""Ingest: scan a source, read every image once (facts and hashes), record what cannot be read,
and import its labels as append-only events. Running it again adds and changes nothing.

Entry point: `ingest(con, source, ...)` → `IngestSummary`. Images are read by a pool of worker
processes (`core.imageprobe`), or by tasks on a Ray cluster (`core.rayengine`); only this process
writes to the catalog, batch by batch.
"""
from __future__ import annotations

import contextlib
import os
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import pandas as pd
import pyarrow as pa
from threadpoolctl import ThreadpoolController

from core import catalog, imageprobe, native, users, workerpool
from core.formats import (Annotations, FormatError, detect_format, empty_labels, problem,
                          read_annotations, scan_images, utf8_text)
from core.imageprobe import ProbeBatch, probe_batch  # probe_batch: what reader processes run
from core.labels import import_labels

Progress = Callable[[int, int, str], None]  # (done, total, message)
CHUNK = 256        # most files per worker task
WRITE_BATCH = 4096  # image rows per catalog transaction
# less work than this (by the sample's time per file) is done here: the worker server, started
# before the sample for folders of many small files, answers after about 0.2-0.3 s, while this
# process reads ahead. Measured on CIFAR-10's PNGs: reading here is faster up to about 3,000
# files (0.25 s against 0.35 s at 2,000; 0.39 s against 0.35 s at 4,000).
POOL_WORTH_S = 0.15
THREADS_WORTH_S = 0.1  # less work than this is done here: threads start at once
THREADS_FROM_PIXELS = 65_536  # pixels: images this big on average are read by threads
THREAD_CHUNK_S = 0.05  # reading time of a thread's chunk: short, so that threads end together
SAMPLE_S = 0.02  # reading time of the sample that decides between here, threads and processes
IN_FLIGHT = 4  # chunks given to each reader process ahead of the results taken
BIG_FILE = 16 << 10  # bytes: files this big are seldom small images (a hint for booting workers)


@dataclass(frozen=True)
class IngestSummary:
    """What one ingest did. `unreadable` counts the files of the source that cannot be read
    (new, changed or already known as such); `problems` counts those files ('skipped') and the
    label problems by action ('skipped', 'flagged', ...); `examples` holds up to 20 of them
    (file, location, reason, action)."""
    dataset: str
    format: str
    files: int
    added: int
    unchanged: int
    changed: int
    unreadable: int
    labels_added: int
    labels_unchanged: int
    problems: dict = field(default_factory=dict)
    examples: list = field(default_factory=list)
    moved: int = 0  # images already in the catalog that `split` put in that split

    @property
    def ingested_anything(self) -> bool:
        """At least one readable image (labels on unreadable files alone do not count)."""
        return self.files > self.unreadable


def stored_path(path: str) -> tuple[str, bytes | None]:
    """(UTF-8 text to store and show, raw bytes when the name is not valid UTF-8)."""
    if path.isascii():  # nearly every name: nothing to encode or check
        return path, None
    try:
        raw = os.fsencode(path)
    except UnicodeEncodeError:  # not a file name (a lone surrogate from an annotation file)
        return utf8_text(path), None
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError:
        return utf8_text(path), raw


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def probe_all(paths: list, known_sha: list, *, workers: int, engine: str = "local",
              ray_address: str | None = None) -> Iterator[ProbeBatch]:
    """Probe files in order, a batch of results (columns) at a time.

    Engine 'local': this process first reads a sample, in batches that double from 4 files
    until the batches after the first (which pays for one-off set-up) have taken SAMPLE_S, or
    the first chunk is read, or the images are big and, by a batch after the first, the rest
    would clearly take threads (twice THREADS_WORTH_S). Then it shares the rest out: among
    `workers` threads when the images are big (THREADS_FROM_PIXELS on average: decoding,
    converting, hashing and resizing them is C code that lets go of Python's lock) and reading
    the rest here would take over THREADS_WORTH_S, in chunks of about THREAD_CHUNK_S so that
    the threads finish together; else among `workers` processes when it would take over
    POOL_WORTH_S. (Size, not time, picks threads: the time per image differs twofold between
    machines, and between runs on a shared one.)

    Engine 'ray': every chunk is a task on the Ray cluster at `ray_address`
    (`core.rayengine`). Chunks shrink for small sources so that every worker gets several."""
    size = max(1, min(CHUNK, -(-len(paths) // (4 * workers))))
    if not paths:
        return
    if engine == "ray":
        from core import rayengine

        chunks = list(zip(_chunks(paths, size), _chunks(known_sha, size)))
        yield from rayengine.probe_chunks(chunks, address=ray_address)
        return
    if workers > 1 and len(paths) >= CHUNK and not _look_big(paths[:8]):
        workerpool.context()  # likely needed: the server boots while the sample is read
    done, batch, warm_files, warm_seconds, seconds = 0, 4, 0, 0.0, 0.0
    decoded = []  # pixels of each image the sample decoded
    while done < size and warm_seconds < SAMPLE_S:
        stop = min(done + batch, size)
        started = time.monotonic()
        results = _probe_here((paths[done:stop], known_sha[done:stop]), sample=True)
        seconds = time.monotonic() - started
        if done:
            warm_files, warm_seconds = warm_files + stop - done, warm_seconds + seconds
        done, batch = stop, batch * 2
        decoded += [w * h for w, h in zip(results.width, results.height) if w]
        yield results
        if workers > 1 and warm_files and _big(decoded) and \
                warm_seconds / warm_files * (len(paths) - done) > 2 * THREADS_WORTH_S:
            break  # big images, and plenty of work left: threads, whatever the time per file
    per_file = warm_seconds / warm_files if warm_files else seconds / done
    rest = list(zip(paths[done:], known_sha[done:]))
    readers = _readers(per_file * len(rest), decoded, workers)
    if readers == "here":
        for chunk in _chunks(rest, CHUNK):
            yield _probe_here(tuple(map(list, zip(*chunk))))
    elif readers == "threads":
        size = max(1, min(size, round(THREAD_CHUNK_S / per_file)))
        yield from _probe_in_threads([tuple(map(list, zip(*c))) for c in _chunks(rest, size)],
                                     workers)
    else:
        yield from _probe_in_processes([tuple(map(list, zip(*c))) for c in _chunks(rest, size)],
                                       workers)


def _big(decoded: list[int]) -> bool:
    """Whether the images decoded so far (their pixels) are big: then threads read the rest."""
    return bool(decoded) and sum(decoded) / len(decoded) >= THREADS_FROM_PIXELS


def _readers(seconds_here: float, decoded: list[int], workers: int) -> str:
    """'here', 'threads' or 'processes': who reads the rest of the files, given how long this
    process would take and the pixels of the images the sample decoded (see `probe_all`)."""
    big = _big(decoded)
    if workers <= 1 or seconds_here <= (THREADS_WORTH_S if big else POOL_WORTH_S):
        return "here"
    return "threads" if big else "processes"


@lru_cache(maxsize=1)
def _blas() -> ThreadpoolController:
    """Finds the BLAS libraries once (7 ms each time `threadpool_limits` looks for them)."""
    return ThreadpoolController()


def _probe_here(chunk: tuple[list, list], *, sample: bool = False) -> ProbeBatch:
    """One chunk read by this thread, numpy's BLAS on one thread meanwhile (as in the workers:
    then a matrix product resizes big images faster than Pillow, and the batches of small
    images do not spin BLAS threads beside the reader processes). The sample, read before
    any reader starts, needs no limit where the compiled kernel resizes big images: that
    saves finding the BLAS libraries (9 ms) when threads, which need none either, read the
    rest."""
    if sample and native.available():
        return imageprobe.probe_batch(*chunk, numpy_resize=False)
    with _blas().limit(limits=1, user_api="blas"):
        return imageprobe.probe_batch(*chunk, numpy_resize=True)


def _look_big(paths: list) -> bool:
    """Whether these files average over BIG_FILE bytes (a hint only: timing decides)."""
    sizes = []
    for path in paths:
        try:
            sizes.append(os.stat(path).st_size)
        except OSError:
            pass
    return bool(sizes) and sum(sizes) / len(sizes) > BIG_FILE


def _probe_in_threads(chunks: list, workers: int) -> Iterator[ProbeBatch]:
    """Chunks of big images read by `workers` threads. With the compiled kernel
    (`core.native`) they need no BLAS, and the few it leaves (much taller than wide) go to
    Pillow's resize; without it, numpy's matrix products resize them, BLAS on one thread."""
    kernel = native.available()
    limit = contextlib.nullcontext() if kernel else _blas().limit(limits=1, user_api="blas")
    with limit, ThreadPoolExecutor(workers) as pool:
        yield from pool.map(
            lambda chunk: imageprobe.probe_batch(*chunk, numpy_resize=not kernel), chunks)


def _probe_in_processes(chunks: list, workers: int) -> Iterator[ProbeBatch]:
    """Chunks read by `workers` processes, given out IN_FLIGHT per worker at a time, results in
    order. The first chunks are given out by a helper thread: a pool's first `submit` starts its
    processes and waits until their server can fork them (it may still be importing numpy and
    Pillow, about 0.3 s). Meanwhile this thread reads the chunks after those."""
    ready: dict[int, ProbeBatch] = {}  # chunk index → results read here
    done = 0
    try:
        with ProcessPoolExecutor(workers, mp_context=workerpool.context(),
                                 initializer=workerpool.ignore_interrupts) as pool:
            first = range(min(len(chunks), IN_FLIGHT * workers))
            given = len(first)
            with ThreadPoolExecutor(1) as helper:
                starting = helper.submit(  # columns: cheap to send back
                    lambda: {k: pool.submit(probe_batch, *chunks[k]) for k in first})
                while not starting.done() and given < len(chunks):
                    ready[given] = _probe_here(chunks[given])
                    given += 1
                futures: dict[int, Future] = starting.result()
            for index in range(len(chunks)):
                while given < len(chunks) and len(futures) < IN_FLIGHT * workers:
                    futures[given] = pool.submit(probe_batch, *chunks[given])
                    given += 1
                if index in ready:
                    yield ready.pop(index)
                else:
                    yield futures.pop(index).result()
                done += 1
    except BrokenProcessPool as err:  # a worker was killed (memory, signal): finish here
        warnings.warn(f"a reader process stopped ({err}); reading the remaining "
                      f"{len(chunks) - done} chunks in this process", RuntimeWarning, stacklevel=2)
        for index in range(done, len(chunks)):
            yield ready.pop(index) if index in ready else imageprobe.probe_batch(*chunks[index])


def _image_rows(batch: ProbeBatch, names: list[tuple[str, bytes | None]], ids: list[int], *,
                dataset_id: int, split: str | None) -> pa.Table:
    """Rows of the images table (catalog.IMAGE_SCHEMA), as Arrow, from the batch's columns;
    `names`: `stored_path` of each row."""
    fields = ("bytes", "sha256", "width", "height", "format", "mode", "phash", "dhash", "error")
    columns = {name: getattr(batch, name) for name in fields}
    count = len(batch)
    columns.update(
        image_id=ids, dataset_id=[dataset_id] * count, path=[t for t, _ in names],
        path_bytes=[raw for _, raw in names], split=[split] * count,
        ingested_at=[catalog.now()] * count,
        status=["unreadable" if e else "ok" for e in batch.error])
    return pa.Table.from_pydict({name: columns[name] for name in catalog.IMAGE_COLUMNS},
                                schema=catalog.IMAGE_SCHEMA)


def _file_events(ids: list[int], event: str, old_sha: list, new_sha: list,
                 job_id: int | None) -> pa.Table:
    count = len(ids)
    return pa.Table.from_pydict({
        "image_id": ids, "event": [event] * count, "old_sha256": old_sha, "new_sha256": new_sha,
        "job_id": [job_id] * count, "recorded_at": [catalog.now()] * count},
        schema=catalog.FILE_EVENT_SCHEMA)


class _ImageWriter:
    """Collects probe results (batches of columns) and writes them in batches of rows, one
    transaction each."""

    def __init__(self, con, dataset_id: int, known: pd.DataFrame, *, split, job_id):
        self.con, self.dataset_id, self.split, self.job_id = con, dataset_id, split, job_id
        sha = [None if pd.isna(s) else s for s in known["sha256"]]
        self.known = dict(zip(known["path"], zip(known["image_id"], sha)))
        unreadable = catalog.unreadable_images(con, dataset_id, limit=len(known))
        self.known_errors = dict(zip(unreadable["path"], unreadable["error"]))
        self.pending: list[tuple[ProbeBatch, list[str], list[tuple]]] = []
        self.pending_rows = 0
        self.counts = Counter()
        self.failed: list[tuple[str, str]] = []  # (path, reason) of files that could not be read

    def add(self, batch: ProbeBatch, rels: list[str], names: list[tuple]) -> None:
        """The results of the files `rels` (paths below the dataset's root), in order;
        `names`: their `stored_path`."""
        self.pending.append((batch, rels, names))
        self.pending_rows += len(rels)
        if self.pending_rows >= WRITE_BATCH:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        batch = ProbeBatch.concat([b for b, _, _ in self.pending])
        rels = [rel for _, part, _ in self.pending for rel in part]
        names = [name for _, _, part in self.pending for name in part]
        self.pending, self.pending_rows = [], 0
        if not self.known:  # a dataset's first ingest: every file is new
            new, changed = range(len(rels)), []
        else:
            new, changed = [], []
            for k, (path, _) in enumerate(names):
                if path not in self.known:
                    new.append(k)
                elif not (batch.unchanged[k]  # same bytes, or still impossible to open
                          or (batch.sha256[k] is None and self.known[path][1] is None)):
                    changed.append(k)
                else:
                    self.counts["unchanged"] += 1
                    if path in self.known_errors:  # known as unreadable, and still is
                        self.failed.append((rels[k], batch.error[k] or self.known_errors[path]))
        self.failed.extend((rels[k], batch.error[k]) for k in [*new, *changed] if batch.error[k])
        self.con.begin()
        try:
            self._write_new(batch.take(new), [names[k] for k in new])
            self._write_changed(batch.take(changed), [names[k] for k in changed])
            self.con.commit()
        except Exception:
            self.con.rollback()
            raise

    def _write_new(self, batch: ProbeBatch, names: list) -> None:
        if not len(batch):
            return
        ids = catalog.next_image_ids(self.con, len(batch))
        frame = _image_rows(batch, names, ids, dataset_id=self.dataset_id, split=self.split)
        catalog.insert_images(self.con, frame)
        catalog.insert_file_events(self.con, _file_events(
            ids, "added", [None] * len(ids), batch.sha256, self.job_id))
        self.counts["added"] += len(batch)

    def _write_changed(self, batch: ProbeBatch, names: list) -> None:
        if not len(batch):
            return
        olds = [self.known[path] for path, _ in names]
        ids = [image_id for image_id, _ in olds]
        frame = _image_rows(batch, names, ids, dataset_id=self.dataset_id, split=self.split)
        catalog.update_changed_images(self.con, frame)
        catalog.insert_file_events(self.con, _file_events(
            ids, "changed", [sha for _, sha in olds], batch.sha256, self.job_id))
        self.counts["changed"] += len(batch)


def ingest_images(con, source: Path, paths: list[str], dataset_id: int, *, split: str | None,
                  job_id: int | None, workers: int, progress: Progress | None,
                  prefix: str = "", engine: str = "local",
                  ray_address: str | None = None) -> _ImageWriter:
    """Probe and record every file of `paths` (relative to `source`); the writer holds counts by
    outcome and the files that failed."""
    known = catalog.known_images(con, dataset_id)
    writer = _ImageWriter(con, dataset_id, known, split=split, job_id=job_id)
    rels = [prefix + p for p in paths]  # below the dataset's root
    names = [stored_path(rel) for rel in rels]  # as stored
    known_sha = [writer.known.get(path, (None, None))[1] for path, _ in names]
    base = os.path.join(source, "")  # paths are relative: joined by concatenation (10x faster)
    full = [base + p for p in paths]
    done = 0
    for results in probe_all(full, known_sha, workers=workers, engine=engine,
                             ray_address=ray_address):
        stop = done + len(results)
        writer.add(results, rels[done:stop], names[done:stop])
        done = stop
        if progress:
            progress(done, len(paths), "reading images")
    writer.flush()
    return writer


def _prefix_in_root(source: Path, ds: catalog.Dataset) -> str:
    """Where `source` sits below the dataset's root ('' when it is the root)."""
    rel = os.path.relpath(Path(source).resolve(), Path(ds.root).resolve())
    if rel == ".":
        return ""
    if rel.startswith(".."):
        raise FormatError(f"dataset {ds.name!r} lives in {ds.root}: ingest a folder inside it, "
                          "or give another --dataset name")
    return Path(rel).as_posix() + "/"


def _with_prefix(frame: pd.DataFrame, prefix: str) -> pd.DataFrame:
    """Reader paths (relative to the source) as stored: below the root, names made UTF-8."""
    if frame is not None and "path" in frame and len(frame):
        frame = frame.assign(path=[stored_path(prefix + str(p))[0] for p in frame["path"]])
    return frame


def _read_source(source: Path, fmt: str, labels: Path | None) -> tuple[str, Annotations]:
    """The annotations of `source` in `fmt` (known by now: see `check_source`)."""
    if fmt in ("csv", "coco") and labels is None:
        raise FormatError(f"the {fmt} format needs --labels FILE")
    try:
        return fmt, read_annotations(source, fmt, labels)
    except FormatError as err:  # the annotation file is unusable: images still go in
        return fmt, Annotations(empty_labels(), problems=[problem(labels or source, str(err))])


def check_source(source: str | Path, labels: str | Path | None,
                 fmt: str = "auto") -> tuple[Path, Path | None, str]:
    """(source, labels, format) with `auto` resolved; FormatError when the folder or the
    annotation file is not there, or `auto` cannot tell their format (checked before a catalog
    is opened or created, or a job started, for them)."""
    source = Path(source)
    if not source.is_dir():
        raise FormatError(f"source {source} is not a folder")
    labels = Path(labels) if labels else None
    if labels is not None and not labels.exists():
        raise FormatError(f"the annotation file or folder {labels} does not exist")
    if fmt == "auto":
        fmt = detect_format(source, labels)  # names and a folder listing: cheap
    return source, labels, fmt


def ingest(con, source: str | Path, *, fmt: str = "auto", labels: str | Path | None = None,
           dataset: str | None = None, split: str | None = None, annotator: str | None = None,
           classes: list[str] | None = None, workers: int | None = None,
           job_id: int | None = None, progress: Progress | None = None,
           user: str | None = None, engine: str = "local",
           ray_address: str | None = None) -> IngestSummary:
    """Ingest the images (and labels) under `source` into `dataset` (default: folder name).

    `classes` fixes the vocabulary: a label naming another class is skipped with its reason.
    `user`: who ingests (a lead, once the catalog has accounts). `engine`: 'local' (a pool of
    `workers` processes) or 'ray' (tasks on the Ray cluster at `ray_address`, whose nodes see
    `source` at the same path); both record the same rows.
    """
    users.require(con, user, "ingest")
    if engine != "local":
        from core.rayengine import check_engine

        check_engine(engine)
    source, labels, fmt = check_source(source, labels, fmt)
    fmt, annotations = _read_source(source, fmt, labels)
    ds = catalog.get_or_create_dataset(con, dataset or source.resolve().name, source)
    prefix = _prefix_in_root(source, ds)
    paths = annotations.images if annotations.images is not None else scan_images(source)
    annotations.labels = _with_prefix(annotations.labels, prefix)
    if annotations.splits is not None:
        annotations.splits = _with_prefix(annotations.splits, prefix)
    writer = ingest_images(con, source, paths, ds.dataset_id, split=split, job_id=job_id,
                           workers=workers or os.cpu_count() or 1, progress=progress,
                           prefix=prefix, engine=engine, ray_address=ray_address)
    moved = 0
    if split is not None and len(writer.known):  # a re-ingest naming the split: it applies to
        # the images already there too (new ones have it), but for those whose annotations give
        # their own split; as move events, which the Duplicates page lists and can undo
        named = [stored_path(prefix + p)[0] for p in paths]  # as stored (names made UTF-8)
        if annotations.splits is not None:
            own = set(annotations.splits["path"])
            named = [p for p in named if p not in own]
        moved = catalog.move_paths_to_split(
            con, ds.dataset_id, named, split, author=user,
            reason=f"ingest of {source} with split {split}",
            batch=f"ingest-split-{catalog.now():%Y%m%d%H%M%S%f}")
    if annotations.splits is not None and len(annotations.splits):
        catalog.set_splits(con, ds.dataset_id, annotations.splits)
    if progress:
        progress(len(paths), len(paths), "importing labels")
    added, unchanged, label_problems = import_labels(
        con, ds.dataset_id, annotations.labels, annotator=annotator or f"{ds.name}/given",
        vocabulary=classes or annotations.classes, fixed=classes is not None, job_id=job_id)
    problems = annotations.problems + label_problems  # unreadable files are in images.error
    catalog.add_problems(con, pd.DataFrame(problems, columns=["file", "location", "reason", "action"])
                         .assign(dataset_id=ds.dataset_id, job_id=job_id))
    problems = [problem(stored_path(p)[0], e) for p, e in writer.failed] + problems
    counts = writer.counts
    return IngestSummary(ds.name, fmt, len(paths), counts["added"], counts["unchanged"],
                         counts["changed"], len(writer.failed), added, unchanged,
                         dict(Counter(p["action"] for p in problems)), problems[:20], moved)
