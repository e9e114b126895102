"""How far a model's predictions can be trusted, measured against people's held-out labels.

Entry point: `evaluate_predictions(labels, probs, classes=...)` gives accuracy, per-class
precision and recall, Cohen's kappa between model and people with a bootstrap interval, a
reliability curve and the precision-versus-coverage curve used to pick a confidence threshold.
`uncertainty(probs, strategy=...)` orders what the model is unsure of for review.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from core.agreement import Estimate

STRATEGIES = ("least-confidence", "margin", "entropy")


@dataclass(frozen=True)
class Evaluation:
    """A model's predictions against people's labels on held-out images.

    ``per_class`` columns: class, precision, recall, support (labels), predicted.
    ``reliability`` columns: bin_low, bin_high, confidence (mean), accuracy, images.
    ``coverage`` columns: threshold, coverage (share of images at or above it), precision
    (accuracy among them), images — one row per distinct confidence, highest first.
    """

    n_images: int
    accuracy: float
    kappa: Estimate
    expected_calibration_error: float
    per_class: pd.DataFrame
    reliability: pd.DataFrame
    coverage: pd.DataFrame
    confusion: np.ndarray  # (K, K) rows: people's label, columns: prediction

    def to_json(self) -> dict:
        return {"n_images": self.n_images, "accuracy": self.accuracy, "kappa": asdict(self.kappa),
                "expected_calibration_error": self.expected_calibration_error,
                "per_class": self.per_class.to_dict("list"),
                "reliability": self.reliability.to_dict("list"),
                "coverage": _thin(self.coverage).to_dict("list"),
                "confusion": self.confusion.tolist()}

    @classmethod
    def from_json(cls, data: dict) -> Evaluation:
        return cls(n_images=data["n_images"], accuracy=data["accuracy"],
                   kappa=Estimate(**data["kappa"]),
                   expected_calibration_error=data["expected_calibration_error"],
                   per_class=pd.DataFrame(data["per_class"]),
                   reliability=pd.DataFrame(data["reliability"]),
                   coverage=pd.DataFrame(data["coverage"]),
                   confusion=np.asarray(data["confusion"]))


def _thin(coverage: pd.DataFrame, *, points: int = 400) -> pd.DataFrame:
    """At most `points` rows of the curve (evenly by coverage), keeping both ends: enough to
    draw it and pick a threshold, small enough to store as JSON."""
    if len(coverage) <= points:
        return coverage
    keep = np.unique(np.linspace(0, len(coverage) - 1, points).round().astype(int))
    return coverage.iloc[keep].reset_index(drop=True)


def _check(labels, probs) -> tuple[np.ndarray, np.ndarray]:
    labels, probs = np.asarray(labels), np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or len(labels) != len(probs):
        raise ValueError(f"probs must be (N, K) with one row per label: got {probs.shape} for "
                         f"{len(labels)} labels")
    if len(labels) == 0:
        raise ValueError("no held-out labels to evaluate on: keep some people's labels out of "
                         "training")
    if labels.min() < 0 or labels.max() >= probs.shape[1]:
        raise ValueError(f"labels must lie in 0..{probs.shape[1] - 1}")
    return labels.astype(np.int64), probs


def precision_coverage(labels, probs) -> pd.DataFrame:
    """Precision and coverage when only predictions with confidence >= threshold are kept."""
    labels, probs = _check(labels, probs)
    confidence, correct = probs.max(axis=1), probs.argmax(axis=1) == labels
    order = np.argsort(-confidence, kind="stable")
    conf, hits = confidence[order], np.cumsum(correct[order])
    last = np.r_[conf[1:] != conf[:-1], True]  # the last image of each distinct confidence
    kept = np.flatnonzero(last) + 1
    return pd.DataFrame({"threshold": conf[last], "coverage": kept / len(labels),
                         "precision": hits[last] / kept, "images": kept})


def threshold_for_precision(coverage: pd.DataFrame, precision: float) -> float | None:
    """The lowest threshold whose kept predictions reach `precision` (None if none does)."""
    ok = coverage[coverage["precision"] >= precision]
    return float(ok["threshold"].min()) if len(ok) else None


def coverage_at_precision(labels, probs, precision: float) -> float:
    """The largest share of images that can be kept with at least `precision` among them."""
    curve = precision_coverage(labels, probs)
    ok = curve[curve["precision"] >= precision]
    return float(ok["coverage"].max()) if len(ok) else 0.0


def reliability_curve(labels, probs, *, bins: int = 10) -> pd.DataFrame:
    """Mean confidence against accuracy in equal-width confidence bins (empty bins left out)."""
    labels, probs = _check(labels, probs)
    confidence, correct = probs.max(axis=1), probs.argmax(axis=1) == labels
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    count = np.bincount(which, minlength=bins)
    used = count > 0
    mean_conf = np.bincount(which, confidence, bins)[used] / count[used]
    accuracy = np.bincount(which, correct.astype(float), bins)[used] / count[used]
    return pd.DataFrame({"bin_low": edges[:-1][used], "bin_high": edges[1:][used],
                         "confidence": mean_conf, "accuracy": accuracy, "images": count[used]})


def kappa_estimate(labels, predicted, *, n_classes: int, n_resamples: int = 1000,
                   seed: int = 0, confidence: float = 0.95) -> Estimate:
    """Cohen's kappa between people's labels and the model's, with a percentile bootstrap
    interval over images (resampled `n_resamples` times with `seed`)."""
    labels, predicted = np.asarray(labels, np.int64), np.asarray(predicted, np.int64)
    cell = labels * n_classes + predicted  # (N,) contingency cell of each image
    point = _kappa(np.bincount(cell, minlength=n_classes ** 2)[None].astype(float), n_classes)[0]
    note = "" if np.isfinite(point) else "both raters used one and the same class"
    if n_resamples == 0:
        return Estimate(float(point), np.nan, np.nan, len(cell), note)
    rng = np.random.default_rng(seed)
    share = np.bincount(cell, minlength=n_classes ** 2) / len(cell)
    tables = rng.multinomial(len(cell), share, size=n_resamples).astype(float)  # (B, K*K)
    boot = _kappa(tables, n_classes)
    boot = boot[np.isfinite(boot)]
    tail = 50 * (1 - confidence)
    low, high = np.percentile(boot, [tail, 100 - tail]) if len(boot) else (np.nan, np.nan)
    return Estimate(float(point), float(low), float(high), len(cell), note)


def _kappa(tables: np.ndarray, k: int) -> np.ndarray:
    """(B,) Cohen's kappa of (B, K*K) flattened contingency tables."""
    tables = tables.reshape(len(tables), k, k)
    total = tables.sum(axis=(1, 2))
    observed = np.trace(tables, axis1=1, axis2=2) / total
    chance = (tables.sum(axis=2) * tables.sum(axis=1)).sum(axis=1) / total ** 2
    with np.errstate(all="ignore"):
        return np.where(chance < 1, (observed - chance) / (1 - chance), np.nan)


def per_class_table(labels, predicted, classes: list[str]) -> pd.DataFrame:
    """Columns: class, precision (nan when never predicted), recall, support, predicted."""
    k = len(classes)
    confusion = np.bincount(np.asarray(labels) * k + np.asarray(predicted),
                            minlength=k * k).reshape(k, k)
    hits, support, predicted_n = np.diag(confusion), confusion.sum(1), confusion.sum(0)
    with np.errstate(all="ignore"):
        return pd.DataFrame({"class": list(classes), "precision": hits / predicted_n,
                             "recall": hits / support, "support": support,
                             "predicted": predicted_n})


def evaluate_predictions(labels, probs, *, classes: list[str], n_resamples: int = 1000,
                         seed: int = 0) -> Evaluation:
    """Everything the Auto-label page shows about a model, from people's `labels` (N,) class
    indices and the model's `probs` (N, K) on the same held-out images."""
    labels, probs = _check(labels, probs)
    k = probs.shape[1]
    predicted = probs.argmax(axis=1)
    reliability = reliability_curve(labels, probs)
    ece = float((reliability["images"] * (reliability["confidence"] - reliability["accuracy"])
                 .abs()).sum() / len(labels))
    return Evaluation(
        n_images=len(labels), accuracy=float((predicted == labels).mean()),
        kappa=kappa_estimate(labels, predicted, n_classes=k, n_resamples=n_resamples, seed=seed),
        expected_calibration_error=ece, per_class=per_class_table(labels, predicted, classes),
        reliability=reliability, coverage=precision_coverage(labels, probs),
        confusion=np.bincount(labels * k + predicted, minlength=k * k).reshape(k, k))


def uncertainty(probs, *, strategy: str = "least-confidence") -> np.ndarray:
    """(N,) how unsure the model is of each image, higher first to review: 1 - max p
    (least-confidence), 1 - (p1 - p2) (margin) or the entropy of p in nats."""
    probs = np.asarray(probs, dtype=np.float64)
    if strategy == "least-confidence":
        return 1 - probs.max(axis=1)
    if strategy == "margin":
        top2 = np.sort(probs, axis=1)[:, -2:] if probs.shape[1] > 1 else np.c_[probs * 0, probs]
        return 1 - (top2[:, 1] - top2[:, 0])
    if strategy == "entropy":
        with np.errstate(all="ignore"):
            return -np.nansum(np.where(probs > 0, probs * np.log(probs), 0.0), axis=1)
    raise ValueError(f"unknown uncertainty strategy {strategy!r}: choose one of "
                     f"{', '.join(STRATEGIES)}")
