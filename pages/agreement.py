"""Agreement: can these labels be trusted? Agreement with intervals, annotator quality,
consensus, and the images people disagree on."""
import pandas as pd
import plotly.express as px
import streamlit as st

import ui
from core import catalog, quality, queues
from core.box_agreement import dataset_object_agreement

con = ui.get_cursor()
dataset = ui.current_dataset(con)
st.title("Agreement")
if dataset is None:
    st.info("No dataset yet: ingest one on the Overview page.")
    st.stop()



def objects_section() -> None:
    """Boxes and polygons of two layers on the same image, matched by IoU (Hungarian)."""
    threshold = st.session_state.get("iou_threshold", 0.5)
    found = ui.cached(dataset_object_agreement, con, dataset.dataset_id, iou_threshold=threshold)
    if found is None:
        return
    st.subheader("Boxes and polygons")
    st.slider("IoU threshold for a match", 0.1, 0.95, 0.5, 0.05, key="iou_threshold")
    names = dict(enumerate(catalog.class_table(con, dataset.dataset_id)["name"]))
    table = found.pairs.assign(**{"class": found.pairs["class"].map(
        lambda c: names.get(int(c), c) if c != "all" else "all")})
    st.metric("Krippendorff's alpha over matched and unmatched objects", f"{found.alpha:.3f}")
    st.dataframe(table, hide_index=True, key="object_pairs")
    st.plotly_chart(px.histogram(found.matches.dropna(subset=["iou"]), x="iou", nbins=40,
                                 title="IoU of matched objects"), key="object_iou")


include_given = st.toggle("Count the dataset's given labels as one more annotator",
                          key="agreement_given")
kinds = ("human", "import") if include_given else ("human",)
try:
    with st.spinner("Computing agreement, bootstrap intervals and Dawid-Skene consensus..."):
        result = ui.cached(quality.dataset_quality, con, dataset, kinds=kinds)
except ValueError as err:
    st.info(f"{err}. Import labels from several annotators (csv with an `annotator` column).")
    objects_section()
    st.stop()
report = result.report

st.caption(f"{report.n_votes:,} labels by {report.n_annotators:,} annotators on "
           f"{report.n_items:,} images. 95% intervals: 1,000 bootstrap resamples of images.")
cols = st.columns(3)
for col, (label, e) in zip(cols, [("Percent agreement", report.percent_agreement),
                                  ("Fleiss' kappa", report.fleiss_kappa),
                                  ("Krippendorff's alpha", report.krippendorff_alpha)]):
    col.metric(label, f"{e.value:.3f}", help=e.note or None)
    col.caption(f"95% CI [{e.ci_low:.3f}, {e.ci_high:.3f}]")

left, right = st.columns(2)
with left:
    st.subheader("Which classes people confuse")
    matrix = report.coincidence.div(report.coincidence.sum(axis=1), axis=0)
    st.plotly_chart(px.imshow(matrix.to_numpy(), x=result.classes, y=result.classes,
                              labels={"x": "other vote", "y": "vote", "color": "share"},
                              color_continuous_scale="Blues", text_auto=".2f"), key="confusion")
with right:
    st.subheader("Cohen's kappa between annotators")
    pairs = report.pairs
    top = result.annotators["annotator"].head(st.slider("Busiest annotators", 5, 60, 25,
                                                          key="kappa_top")).tolist()
    shown = pairs[pairs["annotator_a"].isin(top) & pairs["annotator_b"].isin(top)]
    both = pd.concat([shown, shown.rename(columns={"annotator_a": "annotator_b",
                                                   "annotator_b": "annotator_a"})])
    grid = both.pivot_table(index="annotator_a", columns="annotator_b", values="kappa")
    st.plotly_chart(px.imshow(grid, color_continuous_scale="RdYlGn", zmin=0, zmax=1,
                              labels={"color": "kappa"}), key="kappa_matrix")
    st.caption(f"{len(pairs):,} pairs share at least 20 images; blank: too few shared images.")

st.subheader("Annotators")
st.dataframe(result.annotators, hide_index=True, key="annotators", column_config={
    "accuracy": st.column_config.ProgressColumn("estimated accuracy", min_value=0, max_value=1,
                                                format="%.3f"),
    "bias": st.column_config.NumberColumn("class bias", format="%.3f",
                                          help="distance between their label mix and the consensus"),
    "agreement_with_consensus": st.column_config.NumberColumn(format="%.3f")})

st.subheader(f"Disagreements ({result.disputed:,} images)")
st.dataframe(result.disagreements.head(500), hide_index=True, key="disagreements")
user = st.session_state.get("user") or "unknown"
send, use = st.columns(2)
if send.button("Send the disagreement list to the fix queue", key="send_queue"):
    items = result.disagreements.assign(reason="votes: " + result.disagreements["votes"])
    queue_id = queues.create_queue(con, dataset.dataset_id, "disagreements", "disagreement",
                                   items, created_by=user)
    st.success(f"Queue {queue_id} holds {len(items):,} images, most disputed first.")
if use.button("Use the Dawid-Skene consensus for resolved labels", key="save_consensus"):
    count = quality.save_consensus(con, dataset, result, user=user)
    st.success(f"Consensus stored for {count:,} images: where an image has no review and no "
               "given label, its resolved class is now the consensus.")

objects_section()
