"""Auto-label: train a micro-model on a few people's labels (a background job with a live loss
chart), check it on held-out labels, pick a threshold on the precision-coverage curve, label
what it is sure of and queue the rest, roll back; detect boxes on datasets with boxes (held-out
mAP@0.5, proposals drawn on a few images); find suspect labels by confident learning."""
import json

import pandas as pd
import plotly.express as px
import streamlit as st

import ui
from core import autodetect, autolabel, catalog, jobs, modeleval, suspects

con = ui.get_cursor()
dataset = ui.current_dataset(con)
st.title("Auto-label")
if dataset is None:
    st.info("No dataset yet: ingest one on the Overview page.")
    st.stop()
user = st.session_state.get("user") or None


DETECT = "detect boxes"


def task_ui() -> str:
    """The task to train for; 'detect boxes' only where people drew boxes."""
    tasks = ["classify", "find-more"]
    if len(ui.cached(catalog.human_boxes, con, dataset.dataset_id)):
        tasks.append(DETECT)
    return st.radio("Task", tasks, key="al_task", horizontal=True,
                    help="find-more: one class against every other labelled class; "
                         "detect boxes: a box detector trained on people's boxes")


def train_form_ui(task: str) -> autolabel.TrainRequest | None:
    """The classifier training form; returns the request when submitted."""
    classes = ui.cached(catalog.class_table, con, dataset.dataset_id)["name"].tolist()
    splits = ["all"] + ui.cached(catalog.split_names, con, dataset.dataset_id)
    with st.form("train_form"):
        c1, c2, c3 = st.columns(3)
        chosen = c2.multiselect("Classes (none: every class people used)", classes,
                                key="al_classes")
        positive = c3.selectbox("Class to find more of", classes, key="al_positive")
        split = c1.selectbox("Training labels from split", splits, key="al_split")
        per_class = c2.number_input("People's labels per class (0: all but 20% held out)", 0,
                                    100_000, 100, key="al_per_class")
        seconds = c3.slider("Training time limit (s)", 10, 300, 60, key="al_seconds")
        arch = c1.selectbox("Model", ["patches", "cnn", "resnet18"], key="al_arch",
                            help="patches: features learned from all images without labels, "
                                 "a linear head; cnn: a small network trained end to end; "
                                 "resnet18: a pretrained backbone file")
        weights = c2.text_input("Pretrained backbone file (optional)", key="al_weights")
        seed = c3.number_input("Seed", 0, 2**31 - 1, 0, key="al_seed")
        if not st.form_submit_button("Train", type="primary"):
            return None
    return autolabel.TrainRequest(
        classes=tuple(chosen) or None, split=None if split == "all" else split,
        per_class=int(per_class) or None, task=task, positive=positive if task == "find-more" else None,
        seed=int(seed), weights=weights or None, config=(("seconds", seconds), ("arch", arch)))


def detect_form_ui() -> autodetect.DetectRequest | None:
    """The detector training form; returns the request when submitted."""
    classes = ui.cached(catalog.class_table, con, dataset.dataset_id)["name"].tolist()
    splits = ui.cached(catalog.split_names, con, dataset.dataset_id)
    with st.form("detect_form"):
        c1, c2, c3 = st.columns(3)
        chosen = c1.multiselect("Classes (none: every class people boxed)", classes,
                                key="ad_classes")
        split = c2.selectbox("Training images from split", ["all"] + splits, key="ad_split")
        images = c3.number_input("Boxed images to train on (0: all but 20% held out)", 0,
                                 100_000, 25, key="ad_images")
        held = c1.selectbox("Evaluate on", ["the other boxed images"] + splits,
                            key="ad_holdout_split", help="held-out images people boxed")
        seconds = c2.slider("Training time limit (s)", 10, 600, 90, key="ad_seconds")
        size = c3.select_slider("Long side of the resized images (px)", [128, 192, 256, 320, 384],
                                256, key="ad_size")
        vflip = c1.checkbox("Also flip up-down (microscopy, aerial images)", key="ad_vflip")
        weights = c2.text_input("Start from a detector checkpoint (optional)", key="ad_weights")
        seed = c3.number_input("Seed", 0, 2**31 - 1, 0, key="ad_seed")
        if not st.form_submit_button("Train detector", type="primary"):
            return None
    return autodetect.DetectRequest(
        classes=tuple(chosen) or None, split=None if split == "all" else split,
        images=int(images) or None, holdout_split=None if held not in splits else held,
        seed=int(seed), weights=weights or None,
        config=(("seconds", seconds), ("image_size", size), ("vflip", vflip)))


def start_training(train) -> None:
    """Start `train(cursor, progress, job_id)` -> run id as a background job of this session."""
    def work(cursor, progress, job_id):
        return {"run_id": train(cursor, progress, job_id)}

    job = jobs.start_job(ui.get_connection(), "train", {"dataset": dataset.name}, work)
    st.session_state.setdefault("al_jobs", []).append(job)


task = task_ui()
if task == DETECT:
    detect_request = detect_form_ui()
    if detect_request:
        start_training(lambda cursor, progress, job_id, r=detect_request: autodetect.train_detect_run(
            cursor, dataset, r, job_id=job_id, created_by=user, progress=progress))
else:
    request = train_form_ui(task)
    if request:
        start_training(lambda cursor, progress, job_id, r=request: autolabel.train_run(
            cursor, dataset, r, job_id=job_id, created_by=user, progress=progress))


def training_curve_ui(job_ids: list[int]) -> None:
    cursor = ui.get_cursor()
    runs = catalog.model_run_table(cursor, dataset.dataset_id)
    run = runs[runs["job_id"] == job_ids[-1]]
    if len(run):
        epochs = catalog.run_epochs(cursor, int(run["run_id"].iloc[0]))
        if len(epochs):
            st.line_chart(epochs.set_index("epoch")[["loss", "accuracy"]], height=220)


ui.job_panel("al_jobs", last=1, more=training_curve_ui, refresh_page=True)  # the new run below


def timing_ui(metrics: dict, left, right) -> None:
    """How long a run trained, on how many images, and how fast it predicts."""
    left.metric("Trained in", f"{metrics['training']['seconds']:.1f} s",
                f"{metrics['training']['train_images']:,} images", delta_color="off")
    right.metric("Predicts", f"{metrics['prediction']['images_per_second']:,.1f} img/s")


def apply_rollback_ui(run_id: int, column, apply, *, prefix: str, noun: str) -> None:
    """Apply (`apply()` writes the model's labels or boxes, `noun`) and Roll back buttons in
    `column`, then the run's applications."""
    if column.button("Apply", type="primary", key=f"{prefix}_apply"):
        try:
            done = apply()
            st.success(f"{done.labelled:,} model {noun} written; {done.queued:,} images queued "
                       f"for review (queue {done.queue_id}).")
        except catalog.CatalogError as err:
            st.error(str(err))
    if column.button("Roll back", key=f"{prefix}_rollback"):
        removed = autolabel.rollback_run(con, run_id, by=user)
        st.success(f"Run {run_id} rolled back: {removed:,} model {noun} removed.")
    st.dataframe(catalog.run_applications(con, run_id), hide_index=True,
                 key=f"{prefix}_applications")


def classification_ui(run_id: int) -> None:
    """A classification run: its held-out evaluation, a threshold, apply and roll back."""
    evaluation = autolabel.run_evaluation(con, run_id)
    metrics = catalog.model_run(con, run_id)["metrics"]
    m1, m2, m3, m4 = st.columns(4)
    timing_ui(metrics, m1, m2)
    if evaluation is None:
        st.warning("Nothing was held out, so the threshold cannot be chosen from data.")
        threshold = st.slider("Threshold", 0.0, 1.0, 0.9, 0.01, key="al_threshold")
    else:
        m3.metric("Held-out accuracy", f"{evaluation.accuracy:.3f}",
                  f"{evaluation.n_images:,} images", delta_color="off")
        k = evaluation.kappa
        m4.metric("Cohen's kappa vs people", f"{k.value:.3f}", f"95% CI {k.ci_low:.3f}–{k.ci_high:.3f}",
                  delta_color="off")
        threshold = st.slider("Confidence threshold", 0.0, 1.0, 0.9, 0.01, key="al_threshold")
        curve = evaluation.coverage
        kept = curve[curve["threshold"] >= threshold]
        precision = kept["precision"].iloc[-1] if len(kept) else float("nan")
        coverage = kept["coverage"].iloc[-1] if len(kept) else 0.0
        st.caption(f"At {threshold:.2f} on held-out images: precision {precision:.3f}, "
                   f"coverage {coverage:.1%}.")
        left, right = st.columns(2)
        figure = px.line(curve, x="coverage", y="precision", hover_data=["threshold"],
                         title="Precision versus coverage (held out)")
        figure.add_scatter(x=[coverage], y=[precision], mode="markers", name="threshold")
        left.plotly_chart(figure, key="al_curve")
        reliability = px.bar(evaluation.reliability, x="confidence", y="accuracy",
                             hover_data=["images"], title="Reliability: accuracy per confidence bin")
        reliability.add_scatter(x=[0, 1], y=[0, 1], mode="lines", name="calibrated")
        right.plotly_chart(reliability, key="al_reliability")
        st.dataframe(evaluation.per_class, hide_index=True, key="al_per_class_table")
    a1, a2, a3 = st.columns(3)
    strategy = a1.selectbox("Review order", modeleval.STRATEGIES, key="al_strategy")
    include = a2.checkbox("Also label images people labelled", key="al_include",
                          help="adds the model's layer only: a model label never overrides a person's")
    apply_rollback_ui(run_id, a3, lambda: autolabel.apply_run(
        con, run_id, threshold=threshold, strategy=strategy, include_labelled=include,
        created_by=user), prefix="al", noun="labels")


def _run_label(r) -> str:
    if r.task == "detect":
        stored = (catalog.model_run(con, int(r.run_id))["metrics"] or {}).get("detection")
        return (f"run {r.run_id}: detect, {r.classes}, held-out mAP@0.5 {stored['map']:.3f}"
                if stored else f"run {r.run_id}: detect, {r.classes}")
    return (f"run {r.run_id}: {r.task}, {r.classes}, held-out accuracy {r.accuracy:.3f}"
            if pd.notna(r.accuracy) else f"run {r.run_id}: {r.task}")


def proposals_preview_ui(run_id: int, classes: list[str], threshold: float) -> None:
    """Proposals at or above the threshold drawn on the first few held-out and target images."""
    images = catalog.run_images(con, run_id)
    shown = images[images["role"] != "train"].head(4)
    proposals = ui.cached(catalog.run_box_predictions, con, run_id)
    columns = st.columns(max(1, len(shown)))
    for column, row in zip(columns, shown.itertuples()):
        mine = proposals[proposals["image_id"] == row.image_id]
        picture = autodetect.draw_proposals(dataset.root, row.path, mine, classes=classes,
                                            threshold=threshold)
        column.image(picture, caption=f"{row.path} ({row.role}): "
                     f"{int((mine['score'] >= threshold).sum())} boxes")


def detection_ui(run_id: int) -> None:
    """A detection run: held-out mAP@0.5 per class, proposals drawn, apply and roll back."""
    run = catalog.model_run(con, run_id)
    metrics, evaluation = run["metrics"], autodetect.run_detection_evaluation(con, run_id)
    m1, m2, m3 = st.columns(3)
    timing_ui(metrics, m1, m2)
    if evaluation is None:
        st.warning("No boxed image was held out, so the detector could not be scored.")
    else:
        m3.metric("Held-out mAP@0.5", f"{evaluation.map:.3f}", f"{evaluation.images:,} images",
                  delta_color="off")
        st.dataframe(evaluation.per_class.rename(columns={"ap": "AP@0.5"}), hide_index=True,
                     key="ad_per_class_table")
    threshold = st.slider("Box score threshold", 0.0, 1.0, 0.3, 0.01, key="ad_threshold",
                          help="boxes scoring at least this are written; images with boxes "
                               "between half of it and it go to review")
    proposals_preview_ui(run_id, [name for name, _ in run["classes"]], threshold)
    a1, a2 = st.columns(2)
    include = a1.checkbox("Also box the held-out images people boxed", key="ad_include",
                          help="adds the model's layer only: a model box never replaces a person's")
    apply_rollback_ui(run_id, a2, lambda: autodetect.apply_detect_run(
        con, run_id, threshold=threshold, include_labelled=include, created_by=user),
        prefix="ad", noun="boxes")


runs = ui.cached(catalog.model_run_table, con, dataset.dataset_id)
trained = runs[runs["status"] == "trained"]
if trained.empty:
    st.info("No trained run yet: train one above.")
else:
    st.subheader("Evaluate and apply")
    labels = {int(r.run_id): _run_label(r) for r in trained.itertuples()}
    run_id = st.selectbox("Run", list(labels), format_func=labels.get, key="al_run")
    if trained.set_index("run_id").loc[run_id, "task"] == "detect":
        detection_ui(run_id)
    else:
        classification_ui(run_id)


st.subheader("Suspect labels")
st.caption("Confident learning on out-of-sample predictions: people's labels a model trained "
           "without them disagrees with, most suspect first.")
splits = ui.cached(catalog.split_names, con, dataset.dataset_id)
s1, s2, s3 = st.columns(3)
check = s1.selectbox("Check labels of split", ["all"] + splits, key="sus_split")
source = s2.selectbox("Predictions from", ["cross-training"] + splits, key="sus_source")
folds = s3.number_input("Folds", 2, 20, 5, key="sus_folds")
if st.button("Find suspect labels", key="sus_start"):
    def find(cursor, progress, job_id):
        issues = suspects.find_label_issues(
            cursor, dataset, split=None if check == "all" else check, folds=int(folds),
            train_split=None if source == "cross-training" else source, progress=progress)
        queue_id = suspects.send_to_queue(cursor, dataset, issues, created_by=user)
        return {"queue_id": queue_id, "issues": issues.drop(columns="image_id").to_dict("records")}

    st.session_state.setdefault("sus_jobs", []).append(
        jobs.start_job(ui.get_connection(), "label-issues", {"dataset": dataset.name}, find))


def suspects_result_ui(job_ids: list[int]) -> None:
    job = catalog.job_row(ui.get_cursor(), job_ids[-1])
    if job["status"] == "done":
        result = json.loads(job["result"])
        issues = pd.DataFrame(result["issues"])
        st.write(f"{len(issues):,} suspect labels, sent to review queue {result['queue_id']}.")
        st.dataframe(issues, hide_index=True, key="sus_table")
        st.download_button("Download CSV", issues.to_csv(index=False), "suspect-labels.csv",
                           key="sus_csv")


ui.job_panel("sus_jobs", last=1, more=suspects_result_ui)
