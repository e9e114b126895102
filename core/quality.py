"""Can a dataset's labels be trusted? Agreement, consensus and annotator quality on the catalog.

Entry point: `dataset_quality(con, dataset)` → `DatasetQuality`, which joins the statistics of
`core.agreement` and `core.consensus` to the catalog's images, classes and annotator names.
`save_consensus` stores the consensus so that resolved labels use it where no review exists.
"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from core import catalog, users
from core.agreement import AgreementReport, agreement_report, vote_entropy
from core.consensus import DawidSkeneResult, dawid_skene, majority_vote


@dataclass(frozen=True)
class DatasetQuality:
    """`votes`: image_id, annotator, label (class id). `disagreements`: image_id, path, split,
    n_votes, top_share, entropy, votes (e.g. 'cat 3, dog 2'), consensus, confidence — most
    disputed first. `annotators`: annotator, labels, accuracy (Dawid-Skene estimate), bias,
    overused_class, agreement_with_consensus. `disputed`: images whose votes disagree (the
    disagreement list holds the first `disagreement_limit` of them)."""
    classes: list[str]
    votes: pd.DataFrame
    report: AgreementReport
    consensus: DawidSkeneResult
    majority: pd.DataFrame
    annotators: pd.DataFrame
    disagreements: pd.DataFrame
    disputed: int


def _annotator_table(result: DawidSkeneResult, votes: pd.DataFrame, classes: list[str]):
    table = result.annotators.rename(columns={"n_labels": "labels"})
    consensus = dict(zip(result.items["item"], result.items["label"]))
    agrees = votes.assign(agree=votes["label"].to_numpy() == votes["item"].map(consensus).to_numpy())
    rate = agrees.groupby("annotator")["agree"].mean()
    table["agreement_with_consensus"] = table["annotator"].map(rate)
    table["overused_class"] = [classes[k] if k == k and k is not None else None
                               for k in table.pop("overused_label")]
    return table.sort_values("labels", ascending=False, ignore_index=True)


def _disagreement_table(con, dataset_id: int, votes: pd.DataFrame, result: DawidSkeneResult,
                        classes: list[str], *, limit: int) -> tuple[pd.DataFrame, int]:
    ranked = vote_entropy(votes, n_classes=len(classes))
    ranked = ranked[ranked["entropy"] > 0]
    disputed = len(ranked)
    ranked = ranked.head(limit)
    picked = votes[votes["item"].isin(ranked["item"])]
    summary = (picked.assign(name=[classes[k] for k in picked["label"]])
               .groupby(["item", "name"]).size().rename("n").reset_index()
               .sort_values(["item", "n"], ascending=[True, False]))
    text = summary.groupby("item").apply(
        lambda g: ", ".join(f"{a} {b}" for a, b in zip(g["name"], g["n"])), include_groups=False)
    items = result.items.set_index("item")
    paths = catalog.image_facts(con, dataset_id, ranked["item"].tolist()).set_index("image_id")
    return pd.DataFrame({
        "image_id": ranked["item"].to_numpy(), "path": paths.loc[ranked["item"], "path"].to_numpy(),
        "split": paths.loc[ranked["item"], "split"].to_numpy(),
        "n_votes": ranked["n_votes"].to_numpy(), "top_share": ranked["top_share"].to_numpy(),
        "entropy": ranked["entropy"].to_numpy(), "votes": text.loc[ranked["item"]].to_numpy(),
        "consensus": [classes[k] for k in items.loc[ranked["item"], "label"]],
        "confidence": items.loc[ranked["item"], "confidence"].to_numpy()}), disputed


def dataset_quality(con, dataset: catalog.Dataset, *, kinds: tuple[str, ...] = ("human",),
                    n_resamples: int = 1000, seed: int = 0, min_shared: int = 20,
                    disagreement_limit: int = 5000) -> DatasetQuality:
    """Agreement with bootstrap intervals, Dawid-Skene consensus and annotator quality over the
    current whole-image labels of annotators of these `kinds` ('human', 'import', 'model')."""
    classes = catalog.class_table(con, dataset.dataset_id)["name"].tolist()
    votes = catalog.class_votes(con, dataset.dataset_id, kinds=list(kinds))
    if votes.empty:
        raise ValueError(f"dataset {dataset.name!r} has no whole-image labels from annotators "
                         f"of kind {', '.join(kinds)}: nothing to compare")
    votes = votes.rename(columns={"image_id": "item", "class_id": "label"})
    report = agreement_report(votes, n_classes=len(classes), min_shared=min_shared,
                              n_resamples=n_resamples, seed=seed)
    result = dawid_skene(votes, n_classes=len(classes))
    disagreements, disputed = _disagreement_table(con, dataset.dataset_id, votes, result, classes,
                                                  limit=disagreement_limit)
    return DatasetQuality(classes, votes, report, result,
                          majority_vote(votes, n_classes=len(classes)),
                          _annotator_table(result, votes, classes), disagreements, disputed)


def save_consensus(con, dataset: catalog.Dataset, quality: DatasetQuality, *,
                   method: str = "dawid-skene", user: str | None = None) -> int:
    """Store the consensus label and confidence of every voted image (replacing the previous
    consensus of this dataset); returns the number of images. A lead's act (`user`)."""
    users.require(con, user, "review")
    items = quality.consensus.items
    frame = pd.DataFrame({"image_id": items["item"].astype("int64"), "class_id": items["label"],
                          "confidence": items["confidence"], "n_votes": items["n_votes"]})
    return catalog.replace_consensus(con, dataset.dataset_id, frame, method=method)


def quality_json(quality: DatasetQuality) -> dict:
    """The report as JSON-ready data (the `agreement --json` output)."""
    def estimate(e):
        return {"value": e.value, "ci_low": e.ci_low, "ci_high": e.ci_high, "items": e.n_items,
                "note": e.note}

    report = quality.report
    return {
        "votes": report.n_votes, "images": report.n_items, "annotators": report.n_annotators,
        "percent_agreement": estimate(report.percent_agreement),
        "fleiss_kappa": estimate(report.fleiss_kappa),
        "krippendorff_alpha": estimate(report.krippendorff_alpha),
        "cohen_kappa": report.pairs.to_dict("records"),
        "annotators": [{"id": row["annotator"], "labels": int(row["labels"]),
                        "accuracy": float(row["accuracy"]), "bias": float(row["bias"]),
                        "agreement_with_consensus": float(row["agreement_with_consensus"])}
                       for _, row in quality.annotators.iterrows()],
        "disputed_images": quality.disputed,
        "consensus": {"method": "dawid-skene", "iterations": quality.consensus.n_iter,
                      "converged": quality.consensus.converged},
    }


def format_quality(name: str, quality: DatasetQuality) -> str:
    """The report for people: headline figures, then the most and least reliable annotators."""
    report = quality.report
    lines = [f"{name}: {report.n_votes:,} labels by {report.n_annotators:,} annotators on "
             f"{report.n_items:,} images ({len(quality.classes)} classes)"]
    for label, e in (("percent agreement", report.percent_agreement),
                     ("Fleiss' kappa", report.fleiss_kappa),
                     ("Krippendorff's alpha", report.krippendorff_alpha)):
        note = f"  ({e.note})" if e.note else ""
        lines.append(f"  {label:<22}{e.value:8.4f}   95% CI [{e.ci_low:.4f}, {e.ci_high:.4f}]{note}")
    pairs = report.pairs
    if len(pairs):
        lines.append(f"  Cohen's kappa over {len(pairs):,} annotator pairs with enough shared "
                     f"images: median {pairs['kappa'].median():.3f}")
    table = quality.annotators
    lines.append(f"  annotators by estimated accuracy (Dawid-Skene), of {len(table):,}:")
    ranked = table.sort_values("accuracy")
    for _, row in pd.concat([ranked.head(5), ranked.tail(5)]).drop_duplicates("annotator").iterrows():
        lines.append(f"    {str(row['annotator']):<24}{int(row['labels']):>7} labels   accuracy "
                     f"{row['accuracy']:.3f}   bias {row['bias']:.3f}")
    lines.append(f"  {quality.disputed:,} images with disagreeing labels "
                 "(most disputed first on the Agreement page)")
    return "\n".join(lines)
