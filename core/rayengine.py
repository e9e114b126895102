"""The Ray engine: ingest's image reading and a micro-model's per-image inference as Ray tasks on a
cluster, for sources past one machine. Entry points: `probe_chunks(chunks, address=...)` (what
`core.ingest.probe_all` yields with engine 'ray'), `load_images` and `predict_files` (inference).

Ray is optional (requirements-ray.txt) and imported only here, only when this engine is asked
for. Sieve's code travels with the job (Ray's `py_modules`); every node needs Sieve's
dependencies (requirements.txt) and must see the images at the same paths as this machine
(shared storage). Only this process writes to the catalog: tasks return facts, never rows.
"""
from __future__ import annotations

import os
import socket
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from pathlib import Path

import numpy as np

from core.catalog import CatalogError

ENGINES = ("local", "ray")
ADDRESS_VARIABLE = "SIEVE_RAY_ADDRESS"  # the cluster the dashboard offers (and the CLI default)
MAX_RETRIES = 5  # reruns of a task whose worker or node died (Ray retries system failures only)
IN_FLIGHT_PER_CPU = 4  # tasks submitted ahead per cluster CPU: bounds driver and object store
CONNECT_TIMEOUT_S = 10.0  # a cluster's address must answer this fast (Ray itself waits minutes)
PREDICT_CHUNK = 2000  # images per inference task: `core.autolabel._predict`'s chunk, same batches

_lock = threading.Lock()  # dashboard jobs run in threads of one process: connect once
_connected: list = []  # [address] this process is connected to


class RayEngineError(CatalogError):
    """The Ray engine cannot run: Ray is not installed, or the cluster cannot be reached."""


def configured_address() -> str | None:
    """The cluster configured for this installation (SIEVE_RAY_ADDRESS), or None."""
    return os.environ.get(ADDRESS_VARIABLE) or None


def check_engine(engine: str) -> str:
    """`engine` if it is one of ENGINES, else a RayEngineError naming it."""
    if engine not in ENGINES:
        raise RayEngineError(f"unknown engine {engine!r}: choose one of {', '.join(ENGINES)}")
    return engine


def _import_ray():
    try:
        import ray
    except ImportError as err:
        raise RayEngineError("the ray engine needs Ray, which is not installed: "
                             "pip install -r requirements-ray.txt") from err
    return ray


def connect(address: str | None = None):
    """The `ray` module, connected to the cluster at `address` (None: SIEVE_RAY_ADDRESS, else
    RAY_ADDRESS, else a Ray started on this machine for this process). Connects once per
    process."""
    ray = _import_ray()
    address = address or configured_address() or os.environ.get("RAY_ADDRESS") or None
    with _lock:
        if ray.is_initialized() and _connected and _connected[0] != address:
            raise RayEngineError(f"this process already uses the Ray cluster at {_connected[0]}; "
                                 f"restart it to use {address}")
        if not ray.is_initialized():
            _init(ray, address)
    return ray


def _check_reachable(address: str) -> None:
    """Fail fast, naming the address, when nothing listens at a 'host:port' (or 'ray://host:port')
    cluster address; 'auto', 'local' and other forms are left to Ray."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as err:
        raise RayEngineError(f"cannot reach the Ray cluster at {address}: {err} (is the head "
                             "node running, and is its port open to this machine?)") from err


def _init(ray, address: str | None) -> None:
    import core

    if address:
        _check_reachable(address)
    try:
        ray.init(address=address, logging_level="WARNING", log_to_driver=False,
                 runtime_env={"py_modules": [str(Path(core.__file__).parent)]})
    except Exception as err:  # noqa: BLE001 — connection failures come as several types
        what = f"connect to the Ray cluster at {address}" if address else "start Ray here"
        raise RayEngineError(f"cannot {what}: {type(err).__name__}: {err}") from err
    _connected[:] = [address]


def disconnect() -> None:
    """Leave the cluster (a Ray started for this process stops)."""
    with _lock:
        if _connected:
            _import_ray().shutdown()
            _connected.clear()


def _window(ray) -> int:
    """Tasks kept in flight: IN_FLIGHT_PER_CPU per CPU of the cluster, at least 2."""
    return max(2, int(ray.cluster_resources().get("CPU", 1)) * IN_FLIGHT_PER_CPU)


def _in_order(ray, submit: Callable, items: Iterable) -> Iterator:
    """`ray.get(submit(item))` for every item, in order, with a window of tasks in flight.
    A task whose worker dies is rerun by Ray (MAX_RETRIES); waiting for it pauses, in order."""
    items = iter(items)
    pending = deque(submit(item) for item in islice(items, _window(ray)))
    while pending:
        value = ray.get(pending.popleft())
        pending.extend(submit(item) for item in islice(items, 1))  # one new for each collected
        yield value


def probe_chunks(chunks: list[tuple[list, list]], *, address: str | None = None
                 ) -> Iterator:
    """`core.imageprobe.probe_batch(paths, known_sha)` of every (paths, known_sha) chunk as Ray
    tasks; yields each chunk's `ProbeBatch` in chunk order."""
    from core.imageprobe import probe_batch

    ray = connect(address)
    task = ray.remote(max_retries=MAX_RETRIES, num_cpus=1)(probe_batch)
    yield from _in_order(ray, lambda chunk: task.remote(*chunk), chunks)


def _read_chunk(paths: list, size: int) -> np.ndarray:
    """(n, size, size, 3) uint8 pixels of these files, read on one thread (a task holds one CPU)."""
    from core.micromodel import load_images as read

    return read(paths, size=size, workers=1)


def _predict_chunk(model, paths: list) -> np.ndarray:
    """(n, K) probabilities of these files, read and predicted on the worker."""
    from core.micromodel import predict_proba

    return predict_proba(model, _read_chunk(paths, model.config.image_size))


def _chunks(paths: list, size: int) -> list[list]:
    return [paths[start:start + size] for start in range(0, len(paths), size)]


def _collect(parts: Iterator[np.ndarray], total: int, progress, message: str) -> list:
    collected, done = [], 0
    for part in parts:
        collected.append(part)
        done += len(part)
        if progress:
            progress(done, total, message)
    return collected


def load_images(paths: list, *, size: int = 32, address: str | None = None,
                progress: Callable | None = None, chunk: int = 1000) -> np.ndarray:
    """(N, size, size, 3) uint8 pixels, as `core.micromodel.load_images`, read by Ray tasks of
    `chunk` files. A file that cannot be read fails the job with its name and reason."""
    ray = connect(address)
    task = ray.remote(max_retries=MAX_RETRIES, num_cpus=1)(_read_chunk)
    parts = _in_order(ray, lambda part: task.remote(part, size), _chunks(list(paths), chunk))
    collected = _collect(parts, len(paths), progress, "reading images")
    return np.concatenate(collected) if collected else np.zeros((0, size, size, 3), np.uint8)


def predict_files(model, paths: list, *, address: str | None = None,
                  progress: Callable | None = None) -> np.ndarray:
    """(N, K) probabilities of the image files, as `core.micromodel.predict_proba` of their
    pixels: each Ray task reads PREDICT_CHUNK files and runs the model, whose weights go to the
    cluster once (`ray.put`)."""
    ray = connect(address)
    task = ray.remote(max_retries=MAX_RETRIES, num_cpus=1)(_predict_chunk)
    shared = ray.put(model)
    parts = _in_order(ray, lambda part: task.remote(shared, part),
                      _chunks(list(paths), PREDICT_CHUNK))
    collected = _collect(parts, len(paths), progress, "predicting")
    return np.concatenate(collected) if collected else np.zeros((0, len(model.config.classes)))
