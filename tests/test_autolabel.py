"""core.autolabel on a tiny catalog of coloured squares: people's labels only, a run with its
epochs, weights and evaluation, apply above a threshold with a review queue, exact rollback,
find-more, and suspect labels from cross-training."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from core import autolabel, catalog, suspects
from core.ingest import ingest
from core.micromodel import MicroModelError, load_micromodel
from tests.test_micromodel import COLOURS, colour_images

FAST = (("atoms", 16), ("iterations", 20))
PER_SPLIT = {"train": 6, "test": 3}
UNLABELLED = 6


def _write(folder, name: str, pixels: np.ndarray) -> str:
    Image.fromarray(pixels).save(folder / name)
    return name


def write_colour_dataset(folder) -> dict:
    """Files named for their role: `train_red_0.png` (labelled red, split train),
    `test_blue_2.png`, `unlabelled_4.png` (no label), `wrong_green_as_red.png` (a green image
    people labelled red); labels.csv holds the people's labels. Returns name -> colour."""
    names, rows = {}, []
    for split, count in PER_SPLIT.items():
        pixels, labels = colour_images(count, seed=len(split))
        for k, (image, label) in enumerate(zip(pixels, labels)):
            colour = list(COLOURS)[label]
            name = _write(folder, f"{split}_{colour}_{k % count}.png", image)
            rows.append((name, colour, split))
            names[name] = colour
    pixels, labels = colour_images(UNLABELLED // 3, seed=7)
    for k, (image, label) in enumerate(zip(pixels, labels)):
        names[_write(folder, f"unlabelled_{k}.png", image)] = list(COLOURS)[label]
    # a clearly green image (half the usual noise), so confident learning's thresholds, the mean
    # confidence of each class, cannot hide it behind a coin toss
    green = np.clip(np.array(COLOURS["green"], float)
                    + np.random.default_rng(8).normal(0, 15, (32, 32, 3)), 0, 255).astype(np.uint8)
    rows.append((_write(folder, "wrong_green_as_red.png", green), "red", "train"))
    names["wrong_green_as_red.png"] = "green"
    pd.DataFrame(rows, columns=["image", "label", "split"]).to_csv(folder / "labels.csv", index=False)
    return names


@pytest.fixture
def world(tmp_path):
    """(connection, dataset, truth) of a fresh catalog holding the colour dataset."""
    source = tmp_path / "colours"
    source.mkdir()
    truth = write_colour_dataset(source)
    con = catalog.open_catalog(tmp_path / "catalog.duckdb", program="pytest")
    ingest(con, source, fmt="csv", labels=source / "labels.csv", dataset="colours", workers=1)
    dataset = catalog.find_dataset(con, "colours")
    yield con, dataset, truth
    con.close()


def _add_model_label(con, dataset, path: str, class_name: str) -> None:
    """A label from some earlier model on one image (must never be trained on)."""
    image_id = int(con.execute("SELECT image_id FROM images WHERE path = ?", [path]).fetchone()[0])
    class_id = int(catalog.class_table(con, dataset.dataset_id).set_index("name").loc[class_name, "class_id"])
    annotator = catalog.get_or_create_annotators(con, ["model/old"], kind="model")["model/old"]
    rows = pd.DataFrame({"image_id": [image_id], "class_id": [class_id], "score": [0.9]})
    catalog.append_label_events(con, autolabel._label_events(
        rows, dataset_id=dataset.dataset_id, annotator_id=annotator, run_id=99))


def _labels_now(con) -> tuple[pd.DataFrame, pd.DataFrame]:
    current = con.execute("SELECT * FROM annotator_labels ORDER BY event_id").df()
    resolved = con.execute("SELECT * FROM resolved_class ORDER BY image_id").df()
    return current, resolved


def request(**overrides) -> autolabel.TrainRequest:
    return autolabel.TrainRequest(**{"config": FAST, **overrides})


def test_choose_images_takes_people_labels_only(world):
    con, dataset, _ = world
    _add_model_label(con, dataset, "unlabelled_0.png", "red")
    chosen = autolabel.choose_images(con, dataset, request(split="train", per_class=4))
    assert [name for name, _ in chosen.classes] == ["blue", "green", "red"]
    assert chosen.train["label"].value_counts().sort_index().tolist() == [4, 4, 4]
    assert len(chosen.holdout) == 3 * 6 + 1 - 12  # the rest of the split's people's labels
    used = set(chosen.train["path"]) | set(chosen.holdout["path"])
    assert not any(p.startswith(("unlabelled", "test")) for p in used)


def test_choose_images_is_seeded(world):
    con, dataset, _ = world
    first = autolabel.choose_images(con, dataset, request(per_class=3, seed=1))
    again = autolabel.choose_images(con, dataset, request(per_class=3, seed=1))
    other = autolabel.choose_images(con, dataset, request(per_class=3, seed=2))
    pd.testing.assert_frame_equal(first.train, again.train)
    assert not first.train.equals(other.train)


def test_choose_images_holds_out_a_share_and_caps_training(world):
    con, dataset, _ = world
    chosen = autolabel.choose_images(con, dataset, request(split="test", holdout=0.34))
    assert chosen.train["label"].value_counts().tolist() == [2, 2, 2]  # 3 each, 1 held out
    assert len(chosen.holdout) == 3
    capped = autolabel.choose_images(con, dataset, request(split="train", max_train=6))
    assert capped.train["label"].value_counts().tolist() == [2, 2, 2]


def test_choose_images_too_few_labels_names_the_class(world):
    con, dataset, _ = world
    with pytest.raises(catalog.CatalogError, match=r"class 'blue' has only 3 people's labels in "
                                                   r"split 'test', fewer than the 5"):
        autolabel.choose_images(con, dataset, request(split="test", per_class=5))


def test_choose_images_single_class_is_refused(world):
    con, dataset, _ = world
    with pytest.raises(catalog.CatalogError, match="single class .*red.*find-more"):
        autolabel.choose_images(con, dataset, request(classes=("red",)))
    with pytest.raises(catalog.CatalogError, match="unknown class 'cyan'"):
        autolabel.choose_images(con, dataset, request(classes=("red", "cyan")))


def test_train_run_records_everything(world, tmp_path):
    con, dataset, _ = world
    run_id = autolabel.train_run(con, dataset, request(split="train", per_class=4),
                                 created_by="tester")
    run = catalog.model_run(con, run_id)
    assert run["status"] == "trained" and run["task"] == "classify"
    assert run["weights"] == str(tmp_path / "models" / f"run-{run_id}.pt")
    assert load_micromodel(run["weights"]).config.classes == ("blue", "green", "red")
    assert len(catalog.run_epochs(con, run_id)) == 2  # 20 L-BFGS iterations, 10 an epoch
    roles = catalog.run_images(con, run_id)["role"].value_counts().to_dict()
    assert roles == {"train": 12, "holdout": 7}
    predicted = catalog.run_predictions(con, run_id)
    assert len(predicted) == 7 + UNLABELLED  # held out and unlabelled, never training images
    evaluation = autolabel.run_evaluation(con, run_id)
    assert evaluation.n_images == 7 and evaluation.accuracy >= 6 / 7  # all but the mislabelled one


def test_apply_writes_model_labels_and_queues_the_rest(world):
    con, dataset, truth = world
    run_id = autolabel.train_run(con, dataset, request(per_class=4))
    probs = np.stack(catalog.run_predictions(con, run_id)["probs"])
    unlabelled = catalog.run_predictions(con, run_id)["human_class"].isna().to_numpy()
    threshold = float(np.sort(probs[unlabelled].max(1))[2])  # 4 of 6 at or above
    result = autolabel.apply_run(con, run_id, threshold=threshold, strategy="margin",
                                 created_by="tester")
    assert (result.labelled, result.queued) == (4, 2)
    written = con.execute("""SELECT l.*, i.path, c.name FROM annotator_labels l
        JOIN images i ON i.image_id = l.image_id
        JOIN classes c ON c.dataset_id = l.dataset_id AND c.class_id = l.class_id
        WHERE l.model_run_id = ?""", [run_id]).df()
    assert set(written["annotator"]) == {f"model/run-{run_id}"}
    assert set(written["annotator_kind"]) == {"model"} and set(written["source"]) == {"model"}
    assert (written["score"] >= threshold).all()
    assert all(truth[p] == c for p, c in zip(written["path"], written["name"]))
    queue = catalog.queue_table(con, dataset.dataset_id)
    assert queue["kind"].tolist() == ["model-review"] and queue["images"].tolist() == [2]
    items = catalog.queue_items(con, result.queue_id)
    assert items["reason"].str.startswith("model: ").all()


def test_apply_orders_the_queue_by_uncertainty(world):
    con, dataset, _ = world
    run_id = autolabel.train_run(con, dataset, request(per_class=4))
    result = autolabel.apply_run(con, run_id, threshold=1.0, strategy="least-confidence")
    queued = catalog.queue_items(con, result.queue_id).merge(
        catalog.run_predictions(con, run_id), on="image_id")
    confidence = [max(p) for p in queued["probs"]]
    assert confidence == sorted(confidence) and result.labelled == 0


def test_rollback_leaves_labels_exactly_as_before(world):
    con, dataset, _ = world
    before = _labels_now(con)
    run_id = autolabel.train_run(con, dataset, request(per_class=4))
    applied = autolabel.apply_run(con, run_id, threshold=0.0, include_labelled=True)
    assert applied.labelled == 28 - 12 + UNLABELLED  # people's labels not trained on, unlabelled
    assert len(_labels_now(con)[0]) == len(before[0]) + applied.labelled
    assert autolabel.rollback_run(con, run_id, by="tester") == applied.labelled
    after = _labels_now(con)
    pd.testing.assert_frame_equal(after[0], before[0])
    pd.testing.assert_frame_equal(after[1], before[1])
    deletes = con.execute("""SELECT count(*) FROM label_events WHERE op = 'delete'
        AND model_run_id = ? AND replaces IS NOT NULL""", [run_id]).fetchone()[0]
    assert deletes == applied.labelled  # history keeps both the labels and their removal
    assert catalog.queue_table(con, dataset.dataset_id).empty
    again = autolabel.apply_run(con, run_id, threshold=0.5)  # a rolled-back run can be re-applied
    assert again.labelled + again.queued == UNLABELLED


def test_apply_twice_and_bad_options_are_refused(world):
    con, dataset, _ = world
    run_id = autolabel.train_run(con, dataset, request(per_class=4))
    autolabel.apply_run(con, run_id, threshold=0.0)
    with pytest.raises(catalog.CatalogError, match="already applied: roll it back"):
        autolabel.apply_run(con, run_id, threshold=0.5)
    with pytest.raises(catalog.CatalogError, match="between 0 and 1"):
        autolabel.apply_run(con, run_id, threshold=1.5)
    with pytest.raises(catalog.CatalogError, match="unknown strategy 'random'"):
        autolabel.apply_run(con, run_id, threshold=0.5, strategy="random")
    with pytest.raises(catalog.CatalogError, match="no model run with id 42"):
        autolabel.apply_run(con, 42, threshold=0.5)


def test_failed_training_is_recorded(world, tmp_path):
    con, dataset, _ = world
    with pytest.raises(catalog.CatalogError, match="does not exist"):
        autolabel.train_run(con, dataset, request(per_class=4, weights=str(tmp_path / "gone.pt")))
    runs = catalog.model_run_table(con, dataset.dataset_id)
    assert runs["status"].tolist() == ["failed"]


def test_unreadable_image_fails_the_run_with_its_name(world):
    con, dataset, _ = world
    with open(f"{dataset.root}/unlabelled_1.png", "wb") as handle:
        handle.write(b"\x89PNG broken")
    with pytest.raises(catalog.CatalogError, match="unlabelled_1.png"):
        autolabel.train_run(con, dataset, request(per_class=4))


def test_find_more_labels_only_the_class(world):
    con, dataset, truth = world
    run_id = autolabel.train_run(con, dataset, request(task="find-more", positive="blue"))
    assert [n for n, _ in catalog.model_run(con, run_id)["classes"]] == ["blue", "not blue"]
    result = autolabel.apply_run(con, run_id, threshold=0.5)
    written = con.execute("""SELECT i.path FROM current_labels l JOIN images i USING (image_id)
        WHERE l.model_run_id = ?""", [run_id]).df()["path"]
    assert result.labelled == len(written) == 2
    assert {truth[p] for p in written} == {"blue"}


def test_find_label_issues_flags_the_mislabelled_image(world):
    con, dataset, _ = world
    issues = suspects.find_label_issues(con, dataset, split="train", folds=3, config=FAST)
    assert issues["image"].iloc[0] == "wrong_green_as_red.png"
    assert (issues["given"].iloc[0], issues["suggested"].iloc[0]) == ("red", "green")
    queue_id = suspects.send_to_queue(con, dataset, issues, created_by="tester")
    assert catalog.queue_table(con, dataset.dataset_id)["kind"].tolist() == ["suspect"]
    assert catalog.queue_items(con, queue_id)["reason"].iloc[0].startswith("given red, likely green")
    csv = suspects.issues_csv(issues)
    assert csv.splitlines()[0] == "image,split,given,suggested,score,p_given,p_suggested"


def test_find_label_issues_scores_one_split_with_a_model_of_another(world):
    con, dataset, _ = world
    issues = suspects.find_label_issues(con, dataset, split="train", train_split="test",
                                        config=FAST)
    assert issues["image"].iloc[0] == "wrong_green_as_red.png"


# ---------------------------------------------------------------- command line


@pytest.fixture
def catalog_file(tmp_path) -> str:
    """A closed catalog file holding the colour dataset, for the command line."""
    source = tmp_path / "colours"
    source.mkdir()
    write_colour_dataset(source)
    path = tmp_path / "catalog.duckdb"
    con = catalog.open_catalog(path, program="pytest")
    ingest(con, source, fmt="csv", labels=source / "labels.csv", dataset="colours", workers=1)
    con.close()
    return str(path)


def _cli(argv: list[str], capsys) -> tuple[int, str, str]:
    from core.__main__ import main

    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_train_autolabel_rollback(catalog_file, capsys):
    import json

    code, out, _ = _cli(["train", "--db", catalog_file, "--split", "train", "--per-class", "4",
                         "--json"], capsys)
    assert code == 0
    run = json.loads(out)
    assert run["status"] == "trained" and run["evaluation"]["images"] == 7
    code, out, _ = _cli(["autolabel", "--db", catalog_file, "--run", str(run["run_id"]),
                         "--threshold", "0", "--strategy", "entropy", "--json"], capsys)
    assert code == 0 and json.loads(out)["labelled"] == UNLABELLED
    code, out, _ = _cli(["autolabel", "--db", catalog_file, "--rollback", str(run["run_id"])],
                        capsys)
    assert code == 0 and f"{UNLABELLED} model labels removed" in out


def test_cli_label_issues_json_ranks_the_wrong_label_first(catalog_file, capsys, tmp_path):
    import json

    code, out, _ = _cli(["label-issues", "--db", catalog_file, "--dataset", "colours",
                         "--split", "train", "--folds", "3", "--csv", str(tmp_path / "i.csv"),
                         "--json"], capsys)
    assert code == 0
    issues = json.loads(out)
    assert {"image", "given", "suggested", "score"} <= set(issues[0])
    assert (issues[0]["image"], issues[0]["given"], issues[0]["suggested"]) == \
        ("wrong_green_as_red.png", "red", "green")
    assert [i["score"] for i in issues] == sorted((i["score"] for i in issues), reverse=True)
    assert (tmp_path / "i.csv").read_text().startswith("image,split,given,suggested,score")


@pytest.mark.parametrize("argv, message", [
    (["train", "--classes", "red"], "single class"),
    (["train", "--per-class", "50"], "fewer than the 50 per class"),
    (["train", "--weights", "missing.pt"], "missing.pt does not exist"),
    (["autolabel", "--run", "7", "--threshold", "0.9"], "no model run with id 7"),
    (["autolabel"], "give --run ID with --threshold"),
    (["label-issues", "--split", "nowhere"], "0 class(es) in nowhere"),
])
def test_cli_bad_input_exits_2_with_a_message(catalog_file, capsys, argv, message):
    code, _, err = _cli([argv[0], "--db", catalog_file, *argv[1:]], capsys)
    assert code == 2
    assert message in err
