"""The micro-model loop on a catalog: train on people's labels, evaluate on held-out ones, write
the confident predictions as model labels and queue the rest for review, roll a run back.

Entry points: `train_run(con, dataset, request)` (a job: progress, per-epoch metrics, weights
under the catalog's folder), `apply_run(con, run_id, threshold=...)`, `rollback_run(con, run_id)`.
Training reads people's labels only (resolved by review, given or consensus), never a model's.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import NoReturn

import duckdb
import numpy as np
import pandas as pd

from core import catalog, modeleval, users
from core.catalog import CatalogError
from core.config import home_dir

TASKS = ("classify", "find-more")
MAX_DICTIONARY_IMAGES = 10_000  # unlabelled images whose patches the dictionary learns from


@dataclass(frozen=True)
class TrainRequest:
    """What to train on and how; `config` holds MicroConfig fields to override."""

    classes: tuple[str, ...] | None = None  # None: every class people used in the split
    split: str | None = None  # where the training labels come from (None: every split)
    per_class: int | None = None  # k people's labels per class; None: all but the held-out share
    holdout: float = 0.2  # share of each class held out when per_class is None
    max_holdout: int = 5000  # held-out images evaluated at most (a seeded sample)
    max_train: int = 5000  # training images at most when per_class is None (per class equally)
    task: str = "classify"  # or 'find-more': `positive` against every other labelled class
    positive: str | None = None  # the class a find-more model looks for
    seed: int = 0
    weights: str | None = None  # a pretrained backbone file
    config: tuple = ()  # (field, value) pairs for MicroConfig, e.g. (("seconds", 30),)


@dataclass(frozen=True)
class Selection:
    """People's labels chosen for a run. Frames: image_id, path, label (output index)."""

    classes: list  # [[name, class_id or None], ...] in output order
    train: pd.DataFrame
    holdout: pd.DataFrame


@dataclass(frozen=True)
class ApplyResult:
    run_id: int
    labelled: int  # model labels written
    queued: int  # images sent to review
    queue_id: int | None
    threshold: float
    strategy: str


# ---------------------------------------------------------------- choosing labels


def _named_classes(con, dataset_id: int, names) -> pd.DataFrame:
    table = catalog.class_table(con, dataset_id)
    if names:
        unknown = [n for n in names if n not in set(table["name"])]
        if unknown:
            raise CatalogError(f"unknown class {', '.join(map(repr, unknown))} (classes: "
                               f"{', '.join(table['name'])})")
        table = table.set_index("name").loc[list(dict.fromkeys(names))].reset_index()
    return table[["class_id", "name"]]


def _split_class(rows: pd.DataFrame, *, per_class, holdout: float, cap: int, rng, name: str,
                 where: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(training rows, held-out rows) of one class, in a seeded order."""
    order = rows.iloc[rng.permutation(len(rows))]
    if per_class is not None:
        if len(order) < per_class:
            raise CatalogError(f"class {name!r} has only {len(order)} people's labels {where}, "
                               f"fewer than the {per_class} per class asked for")
        return order.iloc[:per_class], order.iloc[per_class:]
    held = int(round(len(order) * holdout)) if len(order) > 2 else 0
    return order.iloc[held:held + cap], order.iloc[:held]


def _outputs(labels: pd.DataFrame, table: pd.DataFrame, request: TrainRequest) -> list:
    """[[name, class_id or None], ...]: the classes a run predicts, in output order."""
    if request.task == "find-more":
        if not request.positive:
            raise CatalogError("find-more needs the class to look for (positive)")
        row = table[table["name"] == request.positive]
        if row.empty:
            raise CatalogError(f"unknown class {request.positive!r} (classes: "
                               f"{', '.join(table['name'])})")
        return [[request.positive, int(row["class_id"].iloc[0])],
                [f"not {request.positive}", None]]
    used = table[table["class_id"].isin(labels["class_id"])] if not request.classes else table
    return [[n, int(c)] for c, n in zip(used["class_id"], used["name"])]


def choose_images(con, dataset: catalog.Dataset, request: TrainRequest) -> Selection:
    """People's labels for training and for held-out evaluation, per class, seeded."""
    if request.task not in TASKS:
        raise CatalogError(f"unknown task {request.task!r}: choose one of {', '.join(TASKS)}")
    where = f"in split {request.split!r}" if request.split else "in the dataset"
    labels = catalog.human_class_labels(con, dataset.dataset_id, split=request.split)
    table = _named_classes(con, dataset.dataset_id, request.classes)
    outputs = _outputs(labels, table, request)
    if request.task == "find-more":
        labels = labels.assign(label=np.where(labels["class_id"] == outputs[0][1], 0, 1))
    else:
        index = {class_id: k for k, (_, class_id) in enumerate(outputs)}
        labels = labels[labels["class_id"].isin(index)]
        labels = labels.assign(label=labels["class_id"].map(index))
    if len(outputs) < 2:
        raise CatalogError(f"people labelled a single class {where} "
                           f"({', '.join(n for n, _ in outputs) or 'none'}): a classifier needs "
                           "two or more; to find more of one class use the find-more task")
    rng = np.random.default_rng(request.seed)
    train, held = [], []
    for k, (name, _) in enumerate(outputs):
        rows = labels[labels["label"] == k]
        if len(rows) < 2:
            raise CatalogError(f"class {name!r} has {len(rows)} people's label(s) {where}: at "
                               "least 2 are needed to train on it")
        a, b = _split_class(rows, per_class=request.per_class, holdout=request.holdout,
                            cap=max(2, request.max_train // len(outputs)), rng=rng, name=name,
                            where=where)
        train.append(a)
        held.append(b)
    holdout = pd.concat(held)
    if len(holdout) > request.max_holdout:
        holdout = holdout.iloc[rng.choice(len(holdout), request.max_holdout, replace=False)]
    columns = ["image_id", "path", "label"]
    return Selection(outputs, pd.concat(train).sort_values("image_id")[columns].reset_index(drop=True),
                     holdout.sort_values("image_id")[columns].reset_index(drop=True))


# ---------------------------------------------------------------- training a run


def _full_paths(root: str, paths) -> list[str]:
    return [str(Path(root) / p) for p in paths]


def _phase(progress, name: str):
    """A progress callback that names its phase (each phase restarts the bar)."""
    if progress is None:
        return None
    return lambda done, total, message="": progress(done, total, f"{name}: {message}".rstrip(": "))


def _micro_config(selection: Selection, request: TrainRequest):
    from core.micromodel import MicroConfig

    overrides = dict(request.config)
    if request.weights and "backbone_file" not in overrides:
        overrides["backbone_file"] = str(request.weights)
    return MicroConfig(classes=tuple(name for name, _ in selection.classes), seed=request.seed,
                       **overrides)


def model_path(con, run_id: int) -> Path:
    """Where a run's checkpoint goes: models/run-<id>.pt beside the catalog file."""
    folder = catalog.catalog_folder(con) or home_dir()
    return folder / "models" / f"run-{run_id}.pt"


def _targets(con, dataset: catalog.Dataset, selection: Selection) -> pd.DataFrame:
    """Images to predict: the held-out ones and every image without a person's label.
    Columns: image_id, path."""
    candidates = catalog.candidate_images(con, dataset.dataset_id)
    unlabelled = candidates[candidates["human_class"].isna()][["image_id", "path"]]
    return (pd.concat([selection.holdout[["image_id", "path"]], unlabelled])
            .drop_duplicates("image_id").sort_values("image_id").reset_index(drop=True))


def _train_model(con, run_id: int, dataset, selection: Selection, request: TrainRequest,
                 pixels: np.ndarray, progress):
    """Train on the selection; `pixels` of the images to predict also teach the dictionary."""
    from core.micromodel import load_images, train_micromodel

    config = _micro_config(selection, request)
    images = load_images(_full_paths(dataset.root, selection.train["path"]), size=config.image_size)
    rng = np.random.default_rng(request.seed)
    sample = rng.choice(len(pixels), min(len(pixels), MAX_DICTIONARY_IMAGES), replace=False)

    def on_epoch(record):
        catalog.add_run_epoch(con, run_id, epoch=record.epoch, loss=record.loss,
                              accuracy=record.accuracy, seconds=record.seconds)

    return train_micromodel(images, selection.train["label"].to_numpy(), config=config,
                            unlabelled=pixels[np.sort(sample)], weights=request.weights,
                            progress=_phase(progress, "training"), on_epoch=on_epoch)


def _predict(model, pixels: np.ndarray, progress, *, chunk: int = 2000) -> tuple[np.ndarray, float]:
    """(N, K) probabilities and images per second."""
    from core.micromodel import predict_proba

    started, parts = time.monotonic(), []
    for start in range(0, len(pixels), chunk):
        parts.append(predict_proba(model, pixels[start:start + chunk]))
        if progress:
            progress(min(start + chunk, len(pixels)), len(pixels), "predicting")
    probs = np.concatenate(parts) if parts else np.zeros((0, len(model.config.classes)))
    return probs, len(pixels) / max(time.monotonic() - started, 1e-9)


def _load_targets(paths: list[str], size: int, progress, *, engine: str,
                  ray_address: str | None) -> np.ndarray:
    """(N, size, size, 3) pixels of the images to predict, read here or by Ray tasks."""
    if engine == "ray":
        from core import rayengine

        return rayengine.load_images(paths, size=size, address=ray_address, progress=progress)
    from core.micromodel import load_images

    return load_images(paths, size=size, progress=progress)


def _predict_targets(model, pixels: np.ndarray, paths: list[str], progress, *, engine: str,
                     ray_address: str | None) -> tuple[np.ndarray, float]:
    """`_predict` here, or on the Ray cluster: tasks read their share of `paths` and run the
    model (shipped once), so the pixels never travel."""
    if engine != "ray":
        return _predict(model, pixels, progress)
    from core import rayengine

    started = time.monotonic()
    probs = rayengine.predict_files(model, paths, address=ray_address, progress=progress)
    return probs, len(paths) / max(time.monotonic() - started, 1e-9)


def _evaluate(selection: Selection, targets: pd.DataFrame, probs: np.ndarray, seed: int):
    if selection.holdout.empty:
        return None
    at = pd.Series(np.arange(len(targets)), index=targets["image_id"])
    rows = at.loc[selection.holdout["image_id"]].to_numpy()
    return modeleval.evaluate_predictions(selection.holdout["label"].to_numpy(), probs[rows],
                                          classes=[n for n, _ in selection.classes], seed=seed)


def _metrics(trained, selection: Selection, evaluation, speed: float, n_targets: int) -> dict:
    return {"training": {"seconds": trained.seconds, "epochs": len(trained.history),
                         "stopped_by_time": trained.stopped_by_time,
                         "train_images": len(selection.train),
                         "holdout_images": len(selection.holdout),
                         "per_class": selection.train["label"].value_counts().sort_index().tolist()},
            "prediction": {"images": n_targets, "images_per_second": speed},
            "evaluation": evaluation.to_json() if evaluation is not None else None}


def train_run(con, dataset: catalog.Dataset, request: TrainRequest, *,
              created_by: str | None = None, job_id: int | None = None, progress=None,
              engine: str = "local", ray_address: str | None = None) -> int:
    """Choose labels, train, save the weights, predict held-out and unlabelled images, evaluate.
    Returns the run id; a failure is recorded on the run (status 'failed') and raised.
    `engine` 'ray': the images to predict are read and predicted by tasks on the Ray cluster
    at `ray_address` (`core.rayengine`); training stays here. Same predictions either way."""
    from core.micromodel import save_micromodel

    users.require(con, created_by, "train")
    if engine != "local":
        from core.rayengine import check_engine

        check_engine(engine)
    selection = choose_images(con, dataset, request)
    config = _micro_config(selection, request)
    run_id = catalog.create_model_run(
        con, dataset.dataset_id, task=request.task, classes=selection.classes,
        config={"model": asdict(config), "request": asdict(request)}, created_by=created_by,
        job_id=job_id)
    try:
        catalog.add_run_images(con, run_id, pd.concat([selection.train.assign(role="train"),
                                                       selection.holdout.assign(role="holdout")])
                               .rename(columns={"label": "class_id"}))
        targets = _targets(con, dataset, selection)
        paths = _full_paths(dataset.root, targets["path"])
        pixels = _load_targets(paths, config.image_size, _phase(progress, "images to predict"),
                               engine=engine, ray_address=ray_address)
        trained = _train_model(con, run_id, dataset, selection, request, pixels, progress)
        weights = save_micromodel(trained.model, model_path(con, run_id))
        probs, speed = _predict_targets(trained.model, pixels, paths,
                                        _phase(progress, "predicting"), engine=engine,
                                        ray_address=ray_address)
        catalog.add_predictions(con, run_id, pd.DataFrame({
            "image_id": targets["image_id"].to_numpy(), "probs": list(probs.astype(np.float32))}))
        evaluation = _evaluate(selection, targets, probs, request.seed)
        catalog.finish_model_run(con, run_id, status="trained", weights=str(weights),
                                 metrics=_metrics(trained, selection, evaluation, speed,
                                                  len(targets)))
    except BaseException as err:
        fail_run(con, run_id, err)
    return run_id


def fail_run(con, run_id: int, err: BaseException) -> NoReturn:
    """Record `err` on the run (status 'failed') and raise it again: a model's input error
    (MicroModelError, the user's to fix) as a CatalogError, anything else as it is."""
    from core.micromodel import MicroModelError

    catalog.finish_model_run(con, run_id, status="failed", error=str(err) or type(err).__name__)
    if isinstance(err, MicroModelError):
        raise CatalogError(str(err)) from err
    raise err


def run_evaluation(con, run_id: int) -> modeleval.Evaluation | None:
    """The held-out evaluation stored with a run (None when nothing was held out)."""
    metrics = catalog.model_run(con, run_id)["metrics"] or {}
    stored = metrics.get("evaluation")
    return modeleval.Evaluation.from_json(stored) if stored else None


# ---------------------------------------------------------------- applying and rolling back


def _transaction(con, work):
    """Run `work()` in one transaction; a write-write conflict becomes a CatalogError."""
    con.begin()
    try:
        value = work()
        con.commit()
    except duckdb.TransactionException as err:
        con.rollback()
        raise CatalogError(f"someone else changed these labels at the same time ({err}); "
                           "nothing was written: try again") from err
    except BaseException:
        con.rollback()
        raise
    return value


def _model_annotator(con, run_id: int) -> int:
    name = f"model/run-{run_id}"
    return catalog.get_or_create_annotators(con, [name], kind="model")[name]


def _label_events(rows: pd.DataFrame, *, dataset_id: int, annotator_id: int | None, run_id: int,
                  op: str = "set", flag: str | None = None) -> pd.DataFrame:
    """Event rows (catalog.EVENT_COLUMNS) for `rows` with image_id, class_id, and optionally
    score, object_id, replaces and annotator_id (else `annotator_id` for all), kind and box
    x, y, w, h (else whole-image class labels)."""
    n = len(rows)
    empty = pd.Series([None] * n, dtype="Int64")
    return pd.DataFrame({
        "event_id": empty, "object_id": rows.get("object_id", empty).astype("Int64").to_numpy(),
        "dataset_id": dataset_id, "image_id": rows["image_id"].astype("int64").to_numpy(),
        "annotator_id": (rows["annotator_id"].astype("int64").to_numpy() if "annotator_id" in rows
                         else annotator_id),
        "kind": rows["kind"].to_numpy() if "kind" in rows else "class", "op": op,
        "class_id": rows["class_id"].astype("int64").to_numpy(),
        **{c: rows[c].astype(float).to_numpy() if c in rows else np.nan for c in "xywh"},
        "points": None, "source": "model",
        "model_run_id": run_id, "score": rows.get("score", pd.Series(np.nan, index=rows.index))
        .astype(float).to_numpy(), "replaces": rows.get("replaces", empty).astype("Int64").to_numpy(),
        "flag": flag, "job_id": None, "created_at": catalog.now()})


def _reason(probs: np.ndarray, names: list[str]) -> str:
    top = np.argsort(-probs)[:2]
    return "model: " + ", ".join(f"{names[k]} {probs[k]:.2f}" for k in top)


def _split_by_threshold(run: dict, predictions: pd.DataFrame, *, threshold: float,
                        strategy: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(labels to write: image_id, class_id, score; review queue: image_id, reason)."""
    probs = np.stack(predictions["probs"].to_numpy()).astype(np.float64)  # (N, K)
    names = [name for name, _ in run["classes"]]
    class_ids = [class_id for _, class_id in run["classes"]]
    if run["task"] == "find-more":
        score, predicted = probs[:, 0], np.zeros(len(probs), np.int64)
        order_key = -probs[:, 0]  # most likely more of the class first
    else:
        score, predicted = probs.max(axis=1), probs.argmax(axis=1)
        order_key = -modeleval.uncertainty(probs, strategy=strategy)
    above = score >= threshold
    labels = pd.DataFrame({"image_id": predictions["image_id"].to_numpy()[above],
                           "class_id": np.asarray(class_ids, dtype=object)[predicted[above]],
                           "score": score[above]})
    rest = np.flatnonzero(~above)
    rest = rest[np.argsort(order_key[rest], kind="stable")]
    queue = pd.DataFrame({"image_id": predictions["image_id"].to_numpy()[rest],
                          "reason": [_reason(probs[i], names) for i in rest]})
    return labels, queue


def apply_run(con, run_id: int, *, threshold: float, strategy: str = "least-confidence",
              include_labelled: bool = False, created_by: str | None = None) -> ApplyResult:
    """Write the run's predictions at or above `threshold` as model labels (annotator
    'model/run-<id>', source 'model', with their score) and queue the rest for review (kind
    'model-review'), most uncertain first by `strategy`. Targets are the images without a
    person's label, or every predicted image with `include_labelled` (a model label never
    overrides a person's: it only adds the model's layer). Training images are never targets."""
    users.require(con, created_by, "train")
    if strategy not in modeleval.STRATEGIES:
        raise CatalogError(f"unknown strategy {strategy!r}: choose one of "
                           f"{', '.join(modeleval.STRATEGIES)}")
    if not 0 <= threshold <= 1:
        raise CatalogError(f"threshold must lie between 0 and 1, got {threshold}")
    run = catalog.model_run(con, run_id)
    if run["task"] == "detect":  # boxes: proposals above the threshold, uncertain images queued
        from core import autodetect

        return autodetect.apply_detect_run(con, run_id, threshold=threshold,
                                           include_labelled=include_labelled, created_by=created_by)
    if run["status"] != "trained":
        raise CatalogError(f"run {run_id} is {run['status']}: only a trained run can be applied")
    if len(catalog.run_current_labels(con, run_id)):
        raise CatalogError(f"run {run_id} is already applied: roll it back first to apply it "
                           "with another threshold")
    predictions = catalog.run_predictions(con, run_id)
    if not include_labelled:
        predictions = predictions[predictions["human_class"].isna()]
    labels, queue = _split_by_threshold(run, predictions, threshold=threshold, strategy=strategy)
    return write_application(con, run, labels, queue, threshold=threshold, strategy=strategy,
                             queue_name=f"model run {run_id}: below {threshold:.2f} ({strategy})",
                             created_by=created_by)


def write_application(con, run: dict, labels: pd.DataFrame, queue: pd.DataFrame, *,
                      threshold: float, strategy: str, queue_name: str,
                      created_by: str | None) -> ApplyResult:
    """In one transaction: `labels` (see `_label_events`) as the run's model labels, `queue`
    (image_id, reason) as a 'model-review' queue named `queue_name`, and the application."""
    run_id = int(run["run_id"])

    def work():
        annotator = _model_annotator(con, run_id)
        catalog.append_label_events(con, _label_events(
            labels, dataset_id=run["dataset_id"], annotator_id=annotator, run_id=run_id))
        queue_id = catalog.create_queue(con, run["dataset_id"], queue_name, "model-review", queue,
                                        created_by=created_by) if len(queue) else None
        catalog.add_application(con, run_id, threshold=threshold, strategy=strategy,
                                labelled=len(labels), queued=len(queue), queue_id=queue_id,
                                created_by=created_by)
        return queue_id

    queue_id = _transaction(con, work)
    return ApplyResult(run_id, len(labels), len(queue), queue_id, threshold, strategy)


def rollback_run(con, run_id: int, *, by: str | None = None) -> int:
    """Remove every label the run wrote that is still current, as 'delete' events replacing
    each, and its review queues. Returns the labels removed."""
    users.require(con, by, "train")
    run = catalog.model_run(con, run_id)
    current = catalog.run_current_labels(con, run_id).assign(replaces=lambda f: f["event_id"])
    applications = catalog.run_applications(con, run_id)
    open_queues = applications.loc[applications["rolled_back_at"].isna(), "queue_id"].dropna()

    def work():
        if len(current):
            catalog.append_label_events(con, _label_events(
                current, dataset_id=run["dataset_id"], annotator_id=None, run_id=run_id,
                op="delete", flag=f"rollback of model run {run_id}"))
        for queue_id in open_queues:
            catalog.delete_queue(con, int(queue_id))
        catalog.mark_rolled_back(con, run_id, by=by)

    _transaction(con, work)
    return len(current)
