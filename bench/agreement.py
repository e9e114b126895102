"""Benchmark: Sieve's agreement and consensus functions against their usual peers on CIFAR-10N.

Run: ``.venv/bin/python bench/agreement.py`` (needs crowd-kit==1.4.2, statsmodels==0.15.0).
Every figure comes from this one run; each time is the best of ``--repeats`` runs. Prints a
Markdown table for bench/RESULTS.md.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import krippendorff  # noqa: E402
from crowdkit.aggregation import DawidSkene, MajorityVote  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402
from sklearn.metrics import cohen_kappa_score  # noqa: E402
from statsmodels.stats.inter_rater import fleiss_kappa as statsmodels_fleiss_kappa  # noqa: E402

from core.agreement import (  # noqa: E402
    agreement_report,
    cohen_kappa_pairs,
    count_votes,
    fleiss_kappa,
    krippendorff_alpha,
)
from core.config import shared_data_dir  # noqa: E402
from core.consensus import dawid_skene, majority_vote  # noqa: E402

MIN_LABELS_FOR_RANKING = 50  # workers with fewer labels are too noisy to rank


def load_cifar10n(root: Path) -> tuple[pd.DataFrame, pd.Series]:
    """Long votes (item, annotator, label) and the clean label per train index."""
    labels = pd.read_csv(root / "cifar10n" / "cifar10n_labels.csv")
    side = pd.read_csv(root / "cifar10n" / "side_info_cifar10N.csv")
    first = side["Image-batch"].str.split("--", expand=True).astype(int)  # "0--9" -> 0, 9
    workers = side.set_index(first[0] // 10)
    batch = labels["train_index"] // 10
    votes = pd.concat([
        pd.DataFrame({
            "item": labels["train_index"],
            "annotator": workers.loc[batch, f"Worker{k}-id"].to_numpy(),
            "label": labels[f"random_label{k}"],
        })
        for k in (1, 2, 3)
    ], ignore_index=True)
    return votes, labels.set_index("train_index")["clean_label"]


def best_time(function, *, repeats: int):
    """(result of the last run, best wall time in seconds over ``repeats`` runs)."""
    best, result = np.inf, None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - start)
    return result, best


def accuracy(labels: pd.Series, truth: pd.Series) -> float:
    """Share of items whose label (a Series indexed by item) equals the clean label."""
    return float((labels.to_numpy() == truth.loc[labels.index].to_numpy()).mean())


def rank_correlation(estimated: pd.Series, votes: pd.DataFrame, truth: pd.Series) -> float:
    """Spearman rho of estimated vs measured worker accuracy, workers with enough labels."""
    right = votes["label"].to_numpy() == truth.loc[votes["item"]].to_numpy()
    measured = votes.assign(right=right).groupby("annotator")["right"].agg(["mean", "size"])
    table = measured.join(estimated.rename("estimated"), how="inner")
    table = table[table["size"] >= MIN_LABELS_FOR_RANKING]
    return float(spearmanr(table["estimated"], table["mean"]).statistic)


def crowdkit_posterior_accuracy(model: DawidSkene, votes: pd.DataFrame) -> pd.Series:
    """Mean posterior probability that each worker's label is true (Sieve's definition)."""
    probas = model.probas_.loc[votes["item"]]
    columns = probas.columns.get_indexer(votes["label"])
    right = probas.to_numpy()[np.arange(len(votes)), columns]
    return pd.Series(right, index=votes["annotator"].to_numpy()).groupby(level=0).mean()


def crowdkit_diagonal_accuracy(model: DawidSkene) -> pd.Series:
    """sum_k prior_k * P(label k | true k) from crowd-kit's confusion matrices."""
    errors = model.errors_  # index (worker, given label), columns true label
    diagonal = errors[errors.index.get_level_values("label") == errors.index.get_level_values("label")]
    rows = []
    for (worker, label), row in diagonal.iterrows():
        rows.append((worker, model.priors_[label] * row[label]))
    return pd.DataFrame(rows, columns=["worker", "part"]).groupby("worker")["part"].sum()


def sklearn_all_pairs(votes: pd.DataFrame, pairs: pd.DataFrame) -> list[float]:
    """sklearn's cohen_kappa_score over the same annotator pairs, one call per pair."""
    by_worker = {w: g.set_index("item")["label"] for w, g in votes.groupby("annotator")}
    kappas = []
    for a, b in zip(pairs["annotator_a"], pairs["annotator_b"]):
        shared = pd.concat([by_worker[a], by_worker[b]], axis=1, join="inner")
        kappas.append(cohen_kappa_score(shared.iloc[:, 0], shared.iloc[:, 1]))
    return kappas


def naive_bootstrap_alpha(counts: np.ndarray, *, n_resamples: int, seed: int) -> list[float]:
    """The usual way: resample items, call the krippendorff package on each resample."""
    rng = np.random.default_rng(seed)
    return [
        krippendorff.alpha(value_counts=counts[rng.integers(0, len(counts), len(counts))],
                           level_of_measurement="nominal")
        for _ in range(n_resamples)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs per timing (best is kept)")
    parser.add_argument("--naive-resamples", type=int, default=50,
                        help="resamples actually run for the naive bootstrap (scaled to 1000)")
    args = parser.parse_args()
    votes, truth = load_cifar10n(shared_data_dir())
    cifar10h = np.load(shared_data_dir() / "cifar10h" / "cifar10h-counts.npy")  # (10000, 10)
    rows = measure(votes, truth, repeats=args.repeats, naive_resamples=args.naive_resamples)
    rows += measure_variable_raters(cifar10h, repeats=args.repeats)
    print_environment()
    print_table(rows)


def measure(
    votes: pd.DataFrame, truth: pd.Series, *, repeats: int, naive_resamples: int
) -> list[tuple]:
    """One row per task: (task, peer, peer s, Sieve, Sieve s, peer result, Sieve result)."""
    counts = count_votes(votes).to_numpy()  # (50000, 10)
    return (
        measure_alpha(votes, counts, repeats=repeats)
        + measure_kappas(votes, counts, repeats=repeats)
        + measure_report(votes, counts, repeats=repeats, naive_resamples=naive_resamples)
        + measure_consensus(votes, truth, repeats=repeats)
    )


def measure_alpha(votes: pd.DataFrame, counts: np.ndarray, *, repeats: int) -> list[tuple]:
    matrix = votes.pivot(index="annotator", columns="item", values="label").to_numpy(dtype=float)
    nominal = {"level_of_measurement": "nominal"}
    k_rel, t_rel = best_time(
        lambda: krippendorff.alpha(reliability_data=matrix, **nominal), repeats=repeats
    )
    k_vc, t_vc = best_time(lambda: krippendorff.alpha(value_counts=counts, **nominal), repeats=repeats)
    s_votes, t_votes = best_time(
        lambda: krippendorff_alpha(count_votes(votes), n_resamples=0).value, repeats=repeats
    )
    s_counts, t_counts = best_time(
        lambda: krippendorff_alpha(counts, n_resamples=0).value, repeats=repeats
    )
    task = "Krippendorff α, nominal"
    return [
        (task, "krippendorff (747×50000 reliability matrix)", t_rel,
         "krippendorff_alpha(count_votes(votes))", t_votes, f"{k_rel:.9f}", f"{s_votes:.9f}"),
        (task, "krippendorff (value counts)", t_vc,
         "krippendorff_alpha(counts)", t_counts, f"{k_vc:.9f}", f"{s_counts:.9f}"),
    ]


def measure_kappas(votes: pd.DataFrame, counts: np.ndarray, *, repeats: int) -> list[tuple]:
    f_sm, t_sm = best_time(lambda: statsmodels_fleiss_kappa(counts), repeats=repeats)
    f_s, t_f = best_time(lambda: fleiss_kappa(counts, n_resamples=0).value, repeats=repeats)
    pairs, t_pairs = best_time(lambda: cohen_kappa_pairs(votes, min_shared=20), repeats=repeats)
    sk, t_sk = best_time(lambda: sklearn_all_pairs(votes, pairs), repeats=1)
    gap = float(np.nanmax(np.abs(np.asarray(sk) - pairs["kappa"].to_numpy())))
    return [
        ("Fleiss κ", "statsmodels fleiss_kappa", t_sm, "fleiss_kappa(counts)", t_f,
         f"{f_sm:.9f}", f"{f_s:.9f}"),
        (f"Cohen κ, all {len(pairs)} pairs with ≥20 shared items",
         "sklearn cohen_kappa_score, one call per pair", t_sk, "cohen_kappa_pairs(votes)", t_pairs,
         f"max abs diff {gap:.1e}", "(same pairs)"),
    ]


def measure_report(
    votes: pd.DataFrame, counts: np.ndarray, *, repeats: int, naive_resamples: int
) -> list[tuple]:
    naive, t_naive = best_time(
        lambda: naive_bootstrap_alpha(counts, n_resamples=naive_resamples, seed=0), repeats=1
    )
    t_naive *= 1000 / naive_resamples
    report, t_report = best_time(
        lambda: agreement_report(votes, n_resamples=1000, seed=0), repeats=repeats
    )
    a = report.krippendorff_alpha
    naive_low, naive_high = np.percentile(naive, [2.5, 97.5])
    return [(
        "α with 1000-resample 95% CI",
        f"krippendorff per resample ({naive_resamples} run, ×{1000 / naive_resamples:g})", t_naive,
        "agreement_report(votes): PA, κ, α with CIs + κ pairs + coincidence", t_report,
        f"[{naive_low:.4f}, {naive_high:.4f}] ({naive_resamples} resamples)",
        f"{a.value:.4f} [{a.ci_low:.4f}, {a.ci_high:.4f}]",
    )]


def measure_variable_raters(counts: np.ndarray, *, repeats: int) -> list[tuple]:
    """CIFAR-10H (47-63 votes per image): statsmodels assumes a fixed number of raters."""
    try:
        statsmodels_fleiss_kappa(counts)
        peer = "runs (unexpected)"
    except AssertionError:  # it asserts that every row has the same number of votes
        peer = "refuses: asserts equal raters per item"
    f_s, t_f = best_time(lambda: fleiss_kappa(counts, n_resamples=0).value, repeats=repeats)
    return [("Fleiss κ, CIFAR-10H (47-63 votes per image)", "statsmodels fleiss_kappa", np.nan,
             "fleiss_kappa(counts)", t_f, peer, f"{f_s:.6f}")]


def measure_consensus(votes: pd.DataFrame, truth: pd.Series, *, repeats: int) -> list[tuple]:
    crowd = votes.rename(columns={"item": "task", "annotator": "worker"})
    ck_mv, t_ck_mv = best_time(lambda: MajorityVote().fit_predict(crowd), repeats=repeats)
    s_mv, t_s_mv = best_time(lambda: majority_vote(votes), repeats=repeats)
    rows = [(
        "Majority vote: accuracy vs clean_label", "crowd-kit MajorityVote", t_ck_mv,
        "majority_vote(votes) (ties → lowest class)", t_s_mv,
        f"{accuracy(ck_mv, truth):.4f}", f"{accuracy(s_mv.set_index('item')['label'], truth):.4f}",
    )]
    ck_model, t_ck_ds = best_time(lambda: DawidSkene(n_iter=100).fit(crowd), repeats=repeats)
    ck_accuracy = accuracy(ck_model.probas_.idxmax(axis=1), truth)
    ck_rho = (
        rank_correlation(crowdkit_posterior_accuracy(ck_model, votes), votes, truth),
        rank_correlation(crowdkit_diagonal_accuracy(ck_model), votes, truth),
    )
    for strength in (0.0, 100.0):
        result, seconds = best_time(lambda: dawid_skene(votes, prior_strength=strength), repeats=repeats)
        name = f"dawid_skene(votes, prior_strength={strength:g})"
        rows += dawid_skene_rows(name, result, seconds, votes, truth, ck=(t_ck_ds, ck_accuracy, ck_rho))
    return rows


def dawid_skene_rows(
    name: str, result, seconds: float, votes: pd.DataFrame, truth: pd.Series, *, ck: tuple
) -> list[tuple]:
    """Accuracy and worker-ranking rows for one Sieve Dawid-Skene run against crowd-kit's."""
    t_ck, ck_accuracy, (rho_posterior, rho_diagonal) = ck
    estimated = result.annotators.set_index("annotator")["accuracy"]
    rho = rank_correlation(estimated, votes, truth)
    converged = "converged" if result.converged else "not converged"
    return [
        ("Dawid-Skene: accuracy vs clean_label", "crowd-kit DawidSkene(n_iter=100)", t_ck, name,
         seconds, f"{ck_accuracy:.4f}", f"{accuracy(result.items.set_index('item')['label'], truth):.4f}"
         f" ({result.n_iter} iterations, {converged})"),
        (f"Spearman ρ, estimated vs measured accuracy, workers ≥{MIN_LABELS_FOR_RANKING} labels",
         "crowd-kit DS: posterior-based / prior-weighted diagonal", np.nan, name, np.nan,
         f"{rho_posterior:.3f} / {rho_diagonal:.3f}", f"{rho:.3f}"),
    ]


def print_environment() -> None:
    from importlib.metadata import version

    packages = ["numpy", "pandas", "scipy", "krippendorff", "crowd-kit", "statsmodels", "scikit-learn"]
    print(
        f"CIFAR-10N: 150,000 labels, 747 workers, 50,000 items. {platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}; "
        + ", ".join(f"{p} {version(p)}" for p in packages)
    )
    print()


def print_table(rows: list[tuple]) -> None:
    print("| task | peer | peer s | Sieve | Sieve s | peer / Sieve time | peer result | Sieve result |")
    print("|---|---|---:|---|---:|---:|---|---|")
    for task, peer, t_peer, sieve, t_sieve, r_peer, r_sieve in rows:
        ratio = "" if np.isnan(t_peer) else f"{t_peer / t_sieve:.1f}×"
        times = ["" if np.isnan(t) else f"{t:.3f}" for t in (t_peer, t_sieve)]
        cells = [task, peer, times[0], sieve, times[1], ratio, r_peer, r_sieve]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
