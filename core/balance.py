"""Class balance: how uneven the classes are, and sampling weights that even them out.

Entry points: `imbalance(counts)` → `Imbalance`, and `sampling_weights(counts, target=...)`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Imbalance:
    """ratio: largest / smallest class count (inf if a class is empty); effective_classes: the
    exponential of the Shannon entropy of the class shares (equals the class count when uniform,
    1 when a single class holds everything)."""
    classes: int
    ratio: float
    effective_classes: float


def imbalance(counts: pd.Series) -> Imbalance:
    """`counts`: labels per class (index: class name)."""
    values = counts.to_numpy(dtype=float)
    if values.size == 0 or values.sum() == 0:
        return Imbalance(int(values.size), float("nan"), float("nan"))
    shares = values[values > 0] / values.sum()
    ratio = float(values.max() / values.min()) if values.min() > 0 else float("inf")
    return Imbalance(int(values.size), ratio, float(np.exp(-(shares * np.log(shares)).sum())))


def sampling_weights(counts: pd.Series, *, target: pd.Series | None = None) -> pd.DataFrame:
    """Per-class weight for each sample so that weighted sampling reaches `target` shares
    (default uniform). Columns: class, count, share, target_share, weight; weights are scaled so
    that the expected number of samples drawn per epoch stays the dataset size."""
    counts = counts[counts > 0].astype(float)
    if target is None:
        target = pd.Series(1.0, index=counts.index)
    target = target.reindex(counts.index).fillna(0.0).astype(float)
    if target.sum() <= 0:
        raise ValueError("the target distribution gives every present class a zero share")
    target_share = target / target.sum()
    share = counts / counts.sum()
    weight = target_share / share  # (draws of a class per sample) ∝ target / current
    return pd.DataFrame({"class": counts.index, "count": counts.astype(int).values,
                         "share": share.values, "target_share": target_share.values,
                         "weight": weight.values})
