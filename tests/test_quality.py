"""core.quality on a small catalog: agreement figures, consensus, queue, and the CLI JSON."""
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from core import catalog
from core.labels import import_labels
from core.quality import dataset_quality, quality_json, save_consensus
from tests.fixtures import write_png

ROOT = Path(__file__).resolve().parent.parent

# image → votes of annotators a, b, c. Images 0-3 unanimous; 4 and 5 split 2:1.
VOTES = {0: "cat cat cat", 1: "dog dog dog", 2: "cat cat cat", 3: "dog dog dog",
         4: "cat cat dog", 5: "dog cat dog"}


@pytest.fixture
def voted(tmp_path):
    folder = tmp_path / "pets"
    for k in VOTES:
        write_png(folder / f"{k}.png", 16, 16, seed=k)
    db = tmp_path / "q.duckdb"
    con = catalog.open_catalog(db)
    ds = catalog.get_or_create_dataset(con, "pets", folder)
    from core.ingest import ingest
    ingest(con, folder, fmt="imagefolder", dataset="pets", workers=1)
    rows = [{"path": f"{k}.png", "annotator": who, "kind": "class", "class_name": label,
             "label_file": "votes", "location": None}
            for k, labels in VOTES.items() for who, label in zip("abc", labels.split())]
    import_labels(con, ds.dataset_id, pd.DataFrame(rows).assign(
        x=None, y=None, w=None, h=None, points=None, normalized=False),
        annotator="pets/given", vocabulary=["cat", "dog"], fixed=True)
    yield con, ds, db
    con.close()


def test_dataset_quality_percent_agreement_by_hand(voted):
    con, ds, _ = voted
    result = dataset_quality(con, ds, n_resamples=200, seed=1)
    # per image, share of agreeing vote pairs: 1 for the unanimous four, 1/3 for the split two
    assert result.report.percent_agreement.value == pytest.approx((4 + 2 / 3) / 6)
    assert result.report.n_votes == 18 and result.report.n_annotators == 3
    assert result.disputed == 2
    assert set(result.disagreements["path"]) == {"4.png", "5.png"}
    assert result.disagreements["votes"].tolist() == ["cat 2, dog 1", "dog 2, cat 1"]


def test_save_consensus_feeds_resolved_labels_without_given(voted):
    con, ds, _ = voted
    result = dataset_quality(con, ds, n_resamples=0)
    assert save_consensus(con, ds, result) == 6
    stored = con.execute("SELECT count(*) FROM consensus WHERE dataset_id = ?",
                         [ds.dataset_id]).fetchall()[0][0]
    assert stored == 6


def test_create_queue_keeps_order_and_reasons(voted):
    con, ds, _ = voted
    result = dataset_quality(con, ds, n_resamples=0)
    items = result.disagreements.assign(reason="votes: " + result.disagreements["votes"])
    queue_id = catalog.create_queue(con, ds.dataset_id, "disagreements", "disagreement", items,
                                    created_by="lead")
    listed = catalog.queue_items(con, queue_id)
    assert listed["image_id"].tolist() == result.disagreements["image_id"].tolist()
    assert listed["reason"].iloc[0] == "votes: cat 2, dog 1"
    assert catalog.queue_table(con, ds.dataset_id)["images"].tolist() == [2]


def test_agreement_cli_json_keys(voted):
    con, _, db = voted
    con.close()
    out = subprocess.run([sys.executable, "-m", "core", "agreement", "--db", str(db),
                          "--dataset", "pets", "--json", "--resamples", "100"],
                         cwd=ROOT, capture_output=True, text=True, check=True)
    report = json.loads(out.stdout)
    for key in ("fleiss_kappa", "krippendorff_alpha"):
        assert set(report[key]) >= {"value", "ci_low", "ci_high"}
    assert {a["id"] for a in report["annotators"]} == {"a", "b", "c"}
    assert all({"id", "labels", "accuracy"} <= set(a) for a in report["annotators"])
    assert isinstance(report["cohen_kappa"], list)


def test_saved_consensus_decides_the_resolved_class(voted):
    con, ds, _ = voted
    result = dataset_quality(con, ds, n_resamples=0)
    save_consensus(con, ds, result)
    resolved = dict(con.execute("SELECT image_id, resolved_by FROM resolved_class").fetchall())
    assert set(resolved.values()) == {"consensus"} and len(resolved) == 6
    stored = dict(con.execute("SELECT image_id, class_id FROM consensus").fetchall())
    chosen = dict(con.execute("SELECT image_id, class_id FROM resolved_class").fetchall())
    assert chosen == stored
