"""Micro-model benchmarks, printed as Markdown tables.

1. Label efficiency on CIFAR-10 test: k = 10, 50, 100 people's labels per class, accuracy on the
   other images and coverage at 90% and 95% precision, for logistic regression on raw pixels
   (scikit-learn), a plain small CNN (arch 'cnn') and Sieve's default micro-model ('patches'),
   all measured in this run with the same labels.
2. Suspect labels on CIFAR-10N train with random_label1 as the given labels: precision and
   recall of the flagged set against clean_label, Sieve's confident learning beside cleanlab's
   find_label_issues on the same out-of-sample probabilities, and the time end to end.
3. Cross-split scoring: one micro-model trained on the 50,000 CIFAR-10 train labels scores the
   test split's labels (what `label-issues --train-split` does), end to end from the image
   files; its test accuracy, and how many flagged labels CIFAR-10H's human majority also rejects.
4. Training time per micro-model and inference images per second (in tables 1 and 3).

Run: .venv/bin/python bench/micromodel.py [--ks 10,50,100] [--seconds 60] [--suspects 10000]
     [--skip efficiency|suspects|cross-split]
Timings are wall seconds on this machine and CPU seconds of this process; the machine's load
average is printed with them, since other work on a shared machine slows every number down.
"""
from __future__ import annotations

import argparse
import ast
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core import micromodel as mm  # noqa: E402
from core import modeleval, suspects  # noqa: E402
from core.config import shared_data_dir  # noqa: E402

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
           "truck")


def _load(data: Path, folder: str, ext: str, indices=None) -> tuple[np.ndarray, np.ndarray]:
    table = pd.read_csv(data / folder / "labels.csv")
    if indices is not None:
        table = table.set_index("index").loc[indices].reset_index()
    paths = [data / folder / "images" / f"{i:05d}.{ext}" for i in table["index"]]
    return mm.load_images(paths, size=32), table["label_id"].to_numpy()


def _labelled_split(labels: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    chosen = np.concatenate([rng.choice(np.flatnonzero(labels == c), k, replace=False)
                             for c in range(10)])
    return np.sort(chosen), np.setdiff1d(np.arange(len(labels)), chosen)


class Clock:
    """Wall and CPU seconds of a block."""

    def __enter__(self):
        self.wall, self.cpu = time.monotonic(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.monotonic() - self.wall, time.process_time() - self.cpu


def _row(name: str, k: int, truth: np.ndarray, probs: np.ndarray, train: Clock, infer: Clock,
         n_infer: int) -> dict:
    return {"k": k, "method": name,
            "accuracy": float((probs.argmax(1) == truth).mean()),
            "coverage@90%": modeleval.coverage_at_precision(truth, probs, 0.90),
            "coverage@95%": modeleval.coverage_at_precision(truth, probs, 0.95),
            "train wall s": train.wall, "train CPU s": train.cpu,
            "infer img/s": n_infer / max(infer.wall, 1e-9)}


def _logistic_regression(x: np.ndarray, y: np.ndarray, rest: np.ndarray):
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    with Clock() as train:
        scaler = StandardScaler().fit(x.reshape(len(x), -1).astype(np.float32))
        model = LogisticRegression(C=0.001, max_iter=300).fit(
            scaler.transform(x.reshape(len(x), -1).astype(np.float32)), y)
    with Clock() as infer:
        probs = model.predict_proba(scaler.transform(rest.reshape(len(rest), -1).astype(np.float32)))
    return probs, train, infer


def _micromodel(x, y, rest, *, arch: str, seconds: float, seed: int):
    config = mm.MicroConfig(classes=CLASSES, arch=arch, seconds=seconds, seed=seed)
    with Clock() as train:
        trained = mm.train_micromodel(x, y, config=config, unlabelled=rest)
    with Clock() as infer:
        probs = mm.predict_proba(trained.model, rest)
    return probs, train, infer


def label_efficiency(data: Path, *, ks: list[int], seconds: float, seed: int) -> pd.DataFrame:
    pixels, labels = _load(data, "cifar10-test", "png")
    rows = []
    for k in ks:
        chosen, rest = _labelled_split(labels, k, seed)
        x, y, truth = pixels[chosen], labels[chosen], labels[rest]
        for name, run in [
            ("logistic regression, raw pixels", lambda: _logistic_regression(x, y, pixels[rest])),
            ("small CNN (arch cnn)", lambda: _micromodel(x, y, pixels[rest], arch="cnn",
                                                         seconds=seconds, seed=seed)),
            ("Sieve micro-model (arch patches)", lambda: _micromodel(
                x, y, pixels[rest], arch="patches", seconds=seconds, seed=seed)),
        ]:
            probs, train, infer = run()
            rows.append(_row(name, k, truth, probs, train, infer, len(rest)))
            print(f"  k={k} {name}: accuracy {rows[-1]['accuracy']:.3f}, train "
                  f"{train.wall:.0f} s wall, load {os.getloadavg()[0]:.1f}", file=sys.stderr)
    return pd.DataFrame(rows)


def suspect_labels(data: Path, *, subset: int | None, folds: int, seed: int) -> pd.DataFrame:
    """Flag random_label1 errors on CIFAR-10N train (the first `subset` images)."""
    from cleanlab.filter import find_label_issues

    noisy = pd.read_csv(data / "cifar10n" / "cifar10n_labels.csv").sort_values("train_index")
    if subset:
        noisy = noisy.iloc[:subset]
    config = mm.MicroConfig(classes=CLASSES, seed=seed)
    with Clock() as total:
        pixels, _ = _load(data, "cifar10-train", "jpg", noisy["train_index"].to_numpy())
        given = noisy["random_label1"].to_numpy()
        with Clock() as crossfit:
            probs = mm.cross_val_proba(pixels, given, config=config, folds=folds)
        with Clock() as ours_clock:
            ours = suspects.flag_label_issues(given, probs)
    with Clock() as theirs_clock:
        theirs = find_label_issues(given, probs, filter_by="prune_by_noise_rate")
    wrong = given != noisy["clean_label"].to_numpy()
    rows = []
    for name, flagged, clock in [("Sieve (core.suspects)", ours, ours_clock),
                                 ("cleanlab find_label_issues", theirs, theirs_clock)]:
        rows.append({"method": name, "images": len(given), "wrong labels": int(wrong.sum()),
                     "flagged": int(flagged.sum()),
                     "precision": float((flagged & wrong).sum() / max(flagged.sum(), 1)),
                     "recall": float((flagged & wrong).sum() / max(wrong.sum(), 1)),
                     "flagging s": clock.wall})
    table = pd.DataFrame(rows)
    table.attrs.update(total=total.wall, total_cpu=total.cpu, crossfit=crossfit.wall,
                       accuracy=float((probs.argmax(1) == noisy["clean_label"].to_numpy()).mean()))
    return table


def cross_split(data: Path, *, seed: int, overrides: dict) -> pd.DataFrame:
    """Train on every CIFAR-10 train label, score the test split's labels, time it end to end."""
    config = mm.MicroConfig(classes=CLASSES, seed=seed, **overrides)
    with Clock() as total:
        with Clock() as reading:
            train_x, train_y = _load(data, "cifar10-train", "jpg")
            test_x, test_y = _load(data, "cifar10-test", "png")
        with Clock() as training:
            trained = mm.train_micromodel(train_x, train_y, config=config, unlabelled=test_x)
        del train_x
        with Clock() as infer:
            probs = mm.predict_proba(trained.model, test_x)
        found = suspects.find_suspect_labels(test_y, probs)
    votes = np.load(data / "cifar10h" / "cifar10h-counts.npy")
    rejected = votes.argmax(axis=1) != test_y  # the human majority picks another class
    flagged = found["row"].to_numpy()
    row = {"train images": len(train_y), "test accuracy": float((probs.argmax(1) == test_y).mean()),
           "coverage@95%": modeleval.coverage_at_precision(test_y, probs, 0.95),
           "flagged": len(flagged), "flagged, CIFAR-10H majority disagrees":
           int(rejected[flagged].sum()), "labels CIFAR-10H rejects": int(rejected.sum()),
           "read s": reading.wall, "train wall s": training.wall, "train CPU s": training.cpu,
           "infer img/s": len(test_y) / max(infer.wall, 1e-9), "total wall s": total.wall,
           "total CPU s": total.cpu}
    return pd.DataFrame([row]).T.rename(columns={0: "value"}).reset_index(names="measure")


def _markdown(frame: pd.DataFrame) -> str:
    return frame.to_markdown(index=False, floatfmt=".3f")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ks", default="10,50,100", help="labels per class, comma-separated")
    parser.add_argument("--seconds", type=float, default=60, help="training limit per model")
    parser.add_argument("--suspects", type=int, default=10_000,
                        help="CIFAR-10N train images to check (0: all 50,000)")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip", choices=["efficiency", "suspects", "cross-split"],
                        action="append", default=[])
    parser.add_argument("--cross-config", default="",
                        help="MicroConfig overrides for the cross-split model, e.g. pool=2,seconds=900")
    args = parser.parse_args()
    data = shared_data_dir()
    if not (data / "cifar10-test").is_dir():
        print(f"the shared datasets are not at {data} (set SIEVE_SHARED_DATA)", file=sys.stderr)
        return 1
    import cleanlab
    import sklearn
    import torch

    print(f"torch {torch.__version__}, scikit-learn {sklearn.__version__}, cleanlab "
          f"{cleanlab.__version__}; {os.cpu_count()} cores, torch threads 2; load average at "
          f"start {os.getloadavg()[0]:.1f}\n")
    if "efficiency" not in args.skip:
        table = label_efficiency(data, ks=[int(k) for k in args.ks.split(",")],
                                 seconds=args.seconds, seed=args.seed)
        print(f"## Label efficiency: CIFAR-10 test, k labels per class, scored on the rest "
              f"({args.seconds:.0f} s training limit)\n")
        print(_markdown(table) + "\n")
    if "suspects" not in args.skip:
        table = suspect_labels(data, subset=args.suspects or None, folds=args.folds,
                               seed=args.seed)
        print(f"## Suspect labels: CIFAR-10N train, random_label1 as given, first "
              f"{table['images'].iloc[0]:,} images, {args.folds}-fold cross-training\n")
        print(_markdown(table) + "\n")
        a = table.attrs
        print(f"End to end (read images, cross-train, flag): {a['total']:.0f} s wall, "
              f"{a['total_cpu']:.0f} s CPU; cross-training {a['crossfit']:.0f} s; out-of-sample "
              f"accuracy against clean_label {a['accuracy']:.3f}. Load average at the end "
              f"{os.getloadavg()[0]:.1f}.\n")
    if "cross-split" not in args.skip:
        overrides = {key: ast.literal_eval(value) for key, value in
                     (item.split("=") for item in args.cross_config.split(",") if item)}
        table = cross_split(data, seed=args.seed, overrides=overrides)
        print(f"## Cross-split: trained on CIFAR-10 train (50,000 labels), scoring the test "
              f"split's labels ({args.cross_config or 'default config'})\n")
        print(_markdown(table) + "\n")
        print(f"Load average at the end {os.getloadavg()[0]:.1f}.\n")
    print(f"Command: {' '.join(sys.argv)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
