"""The detection micro-model loop on a catalog: train a box detector on people's boxes of a few
images, score it (mAP@0.5) on held-out boxed images, write its confident proposals as model
boxes and queue the images it is unsure of for review.

Entry points: `train_detect_run(con, dataset, request)` (a job: progress, loss per 20 steps,
weights under the catalog's folder), `apply_detect_run(con, run_id, threshold=...)`; a run is
rolled back like any other with `core.autolabel.rollback_run`. Training reads people's boxes
only (the resolved box layer of an image when it is a review's, the given one or a person's),
never a model's. A run's images are recorded with role 'train', 'holdout' (boxed by people, not
trained on) or 'target' (no people's boxes).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageOps

from core import autolabel, catalog, users
from core.autolabel import ApplyResult, _full_paths, _phase
from core.catalog import CatalogError

PREDICT_CHUNK = 200  # images read and detected at a time (memory stays flat on big datasets)
STRATEGY = "uncertain boxes"  # how an applied detection run orders its review queue


@dataclass(frozen=True)
class DetectRequest:
    """What to train a detector on and how; `config` holds DetectorConfig fields to override."""

    classes: tuple[str, ...] | None = None  # None: every class people boxed
    split: str | None = None  # training images come from this split (None: every split)
    images: int | None = None  # boxed images to train on; None: all but the held-out share
    holdout: float = 0.2  # share of the boxed images held out when `images` is None
    holdout_split: str | None = None  # evaluate on this split's boxed images instead
    max_holdout: int = 500  # held-out images evaluated at most (a seeded sample)
    seed: int = 0
    weights: str | None = None  # an earlier detector checkpoint to start from
    config: tuple = ()  # (field, value) pairs for DetectorConfig, e.g. (("seconds", 60),)


@dataclass(frozen=True)
class BoxSelection:
    """People's boxes chosen for a run. `train` and `holdout`: image_id, path; `boxes`:
    image_id, output (index into classes), x, y, w, h of those images."""

    classes: list  # [[name, class_id], ...] in output order
    train: pd.DataFrame
    holdout: pd.DataFrame
    boxes: pd.DataFrame


# ---------------------------------------------------------------- choosing images


def _outputs(boxes: pd.DataFrame, table: pd.DataFrame, request: DetectRequest) -> list:
    used = table if request.classes else table[table["class_id"].isin(boxes["class_id"])]
    return [[n, int(c)] for c, n in zip(used["class_id"], used["name"])]


def _split_pool(pool: pd.DataFrame, request: DetectRequest, where: str,
                rng) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(training images, held-out images) of the boxed images in the training split."""
    order = pool.iloc[rng.permutation(len(pool))]
    if request.images is not None:
        if not 1 <= request.images <= len(order):
            raise CatalogError(f"{request.images} training images asked for, but people boxed "
                               f"{len(order)} image(s) {where}")
        return order.iloc[:request.images], order.iloc[request.images:]
    held = int(round(len(order) * request.holdout)) if len(order) > 2 else 0
    return order.iloc[held:], order.iloc[:held]


def choose_boxed_images(con, dataset: catalog.Dataset, request: DetectRequest) -> BoxSelection:
    """Images people boxed, for training and for held-out evaluation, seeded."""
    where = f"in split {request.split!r}" if request.split else "in the dataset"
    boxes = catalog.human_boxes(con, dataset.dataset_id)
    table = autolabel._named_classes(con, dataset.dataset_id, request.classes)
    outputs = _outputs(boxes, table, request)
    images = boxes.drop_duplicates("image_id")
    pool = images if request.split is None else images[images["split"] == request.split]
    if pool.empty or not outputs:
        raise CatalogError(f"people boxed no images {where}: a detector learns from people's "
                           "boxes (model boxes do not count); box some images first")
    rng = np.random.default_rng(request.seed)
    train, held = _split_pool(pool, request, where, rng)
    if request.holdout_split is not None:
        held = images[(images["split"] == request.holdout_split)
                      & ~images["image_id"].isin(train["image_id"])]
    if len(held) > request.max_holdout:
        held = held.iloc[rng.choice(len(held), request.max_holdout, replace=False)]
    index = {class_id: k for k, (_, class_id) in enumerate(outputs)}
    chosen = boxes[boxes["class_id"].isin(index)
                   & boxes["image_id"].isin(pd.concat([train, held])["image_id"])]
    columns = ["image_id", "path"]
    return BoxSelection(outputs, train.sort_values("image_id")[columns].reset_index(drop=True),
                        held.sort_values("image_id")[columns].reset_index(drop=True),
                        chosen.assign(output=chosen["class_id"].map(index))
                        [["image_id", "output", "x", "y", "w", "h"]].reset_index(drop=True))


def _targets(con, dataset: catalog.Dataset, selection: BoxSelection) -> pd.DataFrame:
    """Images to propose boxes for: the held-out ones and every image without people's boxes.
    Columns: image_id, path, role ('holdout' or 'target')."""
    boxed = set(catalog.human_boxes(con, dataset.dataset_id)["image_id"])
    candidates = catalog.candidate_images(con, dataset.dataset_id)
    unboxed = candidates[~candidates["image_id"].isin(boxed)][["image_id", "path"]]
    return (pd.concat([selection.holdout.assign(role="holdout"), unboxed.assign(role="target")])
            .drop_duplicates("image_id").sort_values("image_id").reset_index(drop=True))


# ---------------------------------------------------------------- training a run


def _detector_config(selection: BoxSelection, request: DetectRequest):
    from core.detector import DetectorConfig

    return DetectorConfig(classes=tuple(name for name, _ in selection.classes), seed=request.seed,
                          **dict(request.config))


def _train(con, run_id: int, dataset, selection: BoxSelection, request: DetectRequest, config,
           progress):
    from core.detector import load_pictures, train_detector

    pictures = load_pictures(_full_paths(dataset.root, selection.train["path"]),
                             size=config.image_size, progress=_phase(progress, "training images"))
    at = {image_id: k for k, image_id in enumerate(selection.train["image_id"])}
    boxes = selection.boxes[selection.boxes["image_id"].isin(at)]
    boxes = boxes.assign(image=boxes["image_id"].map(at), **{"class": boxes["output"]})

    def on_epoch(record):
        catalog.add_run_epoch(con, run_id, epoch=record.epoch, loss=record.loss, accuracy=None,
                              seconds=record.seconds)

    return train_detector(pictures, boxes, config=config, weights=request.weights,
                          progress=_phase(progress, "training"), on_epoch=on_epoch)


def _propose(model, root: str, targets: pd.DataFrame, progress) -> tuple[pd.DataFrame, float]:
    """Proposals (image_id, output, score, x, y, w, h) for the target images, read and detected
    a chunk at a time, and images per second (reading included)."""
    from core.detector import detect_boxes, load_pictures

    started, parts = time.monotonic(), []
    for start in range(0, len(targets), PREDICT_CHUNK):
        chunk = targets.iloc[start:start + PREDICT_CHUNK]
        pictures = load_pictures(_full_paths(root, chunk["path"]), size=model.config.image_size)
        found = detect_boxes(model, pictures)
        parts.append(found.assign(image_id=chunk["image_id"].to_numpy()[found["image"]])
                     .rename(columns={"class": "output"}))
        if progress:
            progress(start + len(chunk), len(targets), "detecting")
    columns = ["image_id", "output", "score", "x", "y", "w", "h"]
    frame = pd.concat(parts, ignore_index=True)[columns] if parts else pd.DataFrame(columns=columns)
    return frame, len(targets) / max(time.monotonic() - started, 1e-9)


def _evaluate(selection: BoxSelection, proposals: pd.DataFrame):
    from core.detector import mean_average_precision

    if selection.holdout.empty:
        return None
    held = selection.holdout["image_id"]
    truth = selection.boxes[selection.boxes["image_id"].isin(held)]
    return mean_average_precision(
        truth.rename(columns={"image_id": "image", "output": "class"}),
        proposals.rename(columns={"image_id": "image", "output": "class"}),
        classes=[name for name, _ in selection.classes], images=held.tolist())


def _metrics(trained, selection: BoxSelection, evaluation, speed: float, n_targets: int) -> dict:
    return {"training": {"seconds": trained.seconds, "epochs": len(trained.history),
                         "stopped_by_time": trained.stopped_by_time,
                         "train_images": len(selection.train),
                         "holdout_images": len(selection.holdout),
                         "train_boxes": int(selection.boxes["image_id"]
                                            .isin(selection.train["image_id"]).sum())},
            "prediction": {"images": n_targets, "images_per_second": speed},
            "evaluation": None,
            "detection": evaluation.to_json() if evaluation is not None else None}


def _record_images(con, run_id: int, selection: BoxSelection, targets: pd.DataFrame) -> None:
    frames = [selection.train.assign(role="train"),
              targets[["image_id", "path", "role"]]]
    catalog.add_run_images(con, run_id, pd.concat(frames).assign(class_id=None))


def train_detect_run(con, dataset: catalog.Dataset, request: DetectRequest, *,
                     created_by: str | None = None, job_id: int | None = None,
                     progress=None) -> int:
    """Choose boxed images, train a detector, save it, propose boxes for the held-out and the
    unboxed images, score the held-out ones. Returns the run id; a failure is recorded on the
    run (status 'failed') and raised."""
    from core.detector import save_detector

    users.require(con, created_by, "train")
    selection = choose_boxed_images(con, dataset, request)
    config = _detector_config(selection, request)
    run_id = catalog.create_model_run(
        con, dataset.dataset_id, task="detect", classes=selection.classes,
        config={"model": asdict(config), "request": asdict(request)}, created_by=created_by,
        job_id=job_id)
    try:
        targets = _targets(con, dataset, selection)
        _record_images(con, run_id, selection, targets)
        trained = _train(con, run_id, dataset, selection, request, config, progress)
        weights = save_detector(trained.model, autolabel.model_path(con, run_id))
        proposals, speed = _propose(trained.model, dataset.root, targets,
                                    _phase(progress, "proposing"))
        catalog.add_box_predictions(con, run_id, proposals)
        catalog.finish_model_run(con, run_id, status="trained", weights=str(weights),
                                 metrics=_metrics(trained, selection, _evaluate(selection, proposals),
                                                  speed, len(targets)))
    except BaseException as err:
        autolabel.fail_run(con, run_id, err)
    return run_id


def run_detection_evaluation(con, run_id: int):
    """The held-out `DetectionEvaluation` stored with a detection run (None when nothing was
    held out)."""
    from core.detector import DetectionEvaluation

    stored = (catalog.model_run(con, run_id)["metrics"] or {}).get("detection")
    return DetectionEvaluation.from_json(stored) if stored else None


# ---------------------------------------------------------------- applying


def _review_items(proposals: pd.DataFrame, images, *, threshold: float,
                  names: list[str]) -> pd.DataFrame:
    """Images the run is unsure of (image_id, reason), most uncertain first: those with
    proposals between half the threshold and the threshold, and those with no box at or above
    it. Ordered by the number of such proposals, then by the best of them."""
    unsure = proposals[(proposals["score"] >= threshold / 2) & (proposals["score"] < threshold)]
    sure = set(proposals.loc[proposals["score"] >= threshold, "image_id"])
    rows = []
    for image_id in images:
        mine = unsure[unsure["image_id"] == image_id]
        if len(mine) or image_id not in sure:
            best = mine.iloc[0] if len(mine) else None
            reason = (f"model: {len(mine)} box(es) scored {threshold / 2:.2f}–{threshold:.2f}, "
                      f"best {names[int(best['output'])]} {best['score']:.2f}" if best is not None
                      else f"model: no box scored {threshold:.2f} or more")
            rows.append((image_id, len(mine), best["score"] if best is not None else 0.0, reason))
    frame = pd.DataFrame(rows, columns=["image_id", "unsure", "best", "reason"])
    return frame.sort_values(["unsure", "best", "image_id"], ascending=[False, False, True],
                             kind="stable")[["image_id", "reason"]]


def _run_targets(con, run: dict, include_labelled: bool) -> list[int]:
    """Images an application may label: the run's held-out and target images, less those
    people have boxed since (unless `include_labelled`)."""
    images = catalog.run_images(con, int(run["run_id"]))
    images = images[images["role"].isin(["holdout", "target"])]
    if not include_labelled:
        boxed = set(catalog.human_boxes(con, int(run["dataset_id"]))["image_id"])
        images = images[~images["image_id"].isin(boxed)]
    return images["image_id"].astype("int64").tolist()


def apply_detect_run(con, run_id: int, *, threshold: float, include_labelled: bool = False,
                     created_by: str | None = None) -> ApplyResult:
    """Write the run's proposals scoring at or above `threshold` as model boxes (annotator
    'model/run-<id>', source 'model', with their score) on the images without people's boxes
    (with `include_labelled` also on the held-out boxed images: a model layer beside people's,
    never replacing it), and queue the images it is unsure of (`_review_items`) for review."""
    users.require(con, created_by, "train")
    if not 0 <= threshold <= 1:
        raise CatalogError(f"threshold must lie between 0 and 1, got {threshold}")
    run = catalog.model_run(con, run_id)
    if run["task"] != "detect" or run["status"] != "trained":
        raise CatalogError(f"run {run_id} is a {run['status']} {run['task']} run: only a trained "
                           "detection run can be applied here")
    if len(catalog.run_current_labels(con, run_id)):
        raise CatalogError(f"run {run_id} is already applied: roll it back first to apply it "
                           "with another threshold")
    images = _run_targets(con, run, include_labelled)
    proposals = catalog.run_box_predictions(con, run_id)
    proposals = proposals[proposals["image_id"].isin(images)]
    class_ids = np.array([class_id for _, class_id in run["classes"]], dtype=np.int64)
    boxes = proposals[proposals["score"] >= threshold]
    boxes = boxes.assign(class_id=class_ids[boxes["output"].to_numpy(np.int64)], kind="box")
    queue = _review_items(proposals, images, threshold=threshold,
                          names=[name for name, _ in run["classes"]])
    return autolabel.write_application(
        con, run, boxes, queue, threshold=threshold, strategy=STRATEGY,
        queue_name=f"model run {run_id}: boxes below {threshold:.2f}", created_by=created_by)


# ---------------------------------------------------------------- previews


def draw_proposals(root: str | Path, path: str, proposals: pd.DataFrame, *, classes: list[str],
                   threshold: float) -> Image.Image:
    """The image at `root/path` with the proposals (output, score, x, y, w, h) at or above
    `threshold` outlined, one colour per class."""
    from core.augment import draw_objects

    kept = proposals[proposals["score"] >= threshold]
    objects = pd.DataFrame({"class": [classes[int(k)] for k in kept["output"]], "kind": "box",
                            "points": None, "x": kept["x"].to_numpy(), "y": kept["y"].to_numpy(),
                            "w": kept["w"].to_numpy(), "h": kept["h"].to_numpy()})
    with Image.open(Path(root) / path) as image:
        return draw_objects(ImageOps.exif_transpose(image), objects, classes=classes)
