"""Duplicates: exact copies, near duplicates by perceptual hash, leakage between splits, and
reversible resolutions."""
import pandas as pd
import plotly.express as px
import streamlit as st
from PIL import Image

import ui
from core import catalog, duplicates

SEARCH_MAX = 16  # the slider's range

con = ui.get_cursor()
dataset = ui.current_dataset(con)
st.title("Duplicates")
if dataset is None:
    st.info("No dataset yet: ingest one on the Overview page.")
    st.stop()
user = st.session_state.get("user") or "unknown"

c1, c2, c3 = st.columns([1, 2, 2])
method = c1.selectbox("Hash", duplicates.METHODS, key="dup_method")
distance = c2.slider("Largest Hamming distance", 0, SEARCH_MAX, duplicates.DEFAULT_DISTANCE[method],
                     key="dup_distance", help="The default comes from the calibration on CIFAR-10 "
                     "JPEG / lossless pairs (bench/RESULTS.md)")
with st.spinner("Searching near duplicates..."):
    wide = ui.cached(duplicates.find_duplicates, con, dataset, method=method, max_distance=distance)
sizes = ui.cached(catalog.hash_table, con, dataset.dataset_id).groupby("split", dropna=False).size()
split_pairs = ["all"] + sorted({" <-> ".join(sorted((str(a), str(b)))) for a, b in
                                zip(wide.pairs["split_a"], wide.pairs["split_b"])})
chosen = c3.selectbox("Split pair", split_pairs, key="dup_splits")
report = duplicates.narrow(wide, distance, split_sizes=sizes,
                           splits=None if chosen == "all" else tuple(chosen.split(" <-> ")))

m1, m2, m3, m4 = st.columns(4)
m1.metric("Near-duplicate pairs", f"{len(report.pairs):,}")
m2.metric("Groups", f"{len(report.groups):,}")
m3.metric("Exact copies (groups)", f"{report.exact['group'].nunique():,}")
leak = report.leakage
m4.metric("Images leaking across splits", f"{int(leak['images_a'].sum()) if len(leak) else 0:,}")
by_distance = wide.pairs.groupby("distance").size().reindex(range(distance + 1), fill_value=0)
st.plotly_chart(px.bar(x=by_distance.index, y=by_distance.cumsum().values,
                       labels={"x": "distance", "y": "pairs within"}, height=220), key="dup_curve")

st.subheader("Leakage between splits")
st.dataframe(leak, hide_index=True, column_config={"share_a": st.column_config.NumberColumn(
    "share of split_a", format="percent")}, key="dup_leak")

st.subheader("Groups, largest first")
groups = report.groups
if groups.empty:
    st.success("No near duplicates at this distance.")
else:
    page = st.number_input(f"Group (of {len(groups):,})", 1, len(groups), 1, key="dup_group")
    group = groups.iloc[page - 1]
    states = catalog.image_states(con, dataset.dataset_id, group["image_ids"]).set_index("image_id")
    ui.image_grid_ui(dataset.root, pd.DataFrame({  # the caption's second line is the split
        "path": group["paths"], "class": states.loc[group["image_ids"], "split"].astype(str).values}))
    keep_path = st.selectbox("Keep", group["paths"], key="dup_keep")
    keep = group["image_ids"][group["paths"].index(keep_path)]
    others = [i for i in group["image_ids"] if i != keep]
    a1, a2, a3 = st.columns(3)
    if a1.button("Keep this one, exclude the others", key="dup_keep_one"):
        batch = duplicates.resolve_keep_one(con, dataset, keep, others, author=user)
        st.success(f"Excluded {len(others)} images ({batch}); undo below.")
    target = a2.selectbox("Move the group to", catalog.split_names(con, dataset.dataset_id),
                          key="dup_move_to")
    if a2.button("Move group", key="dup_move"):
        batch = duplicates.move_group(con, dataset, group["image_ids"], target, author=user)
        st.success(f"Moved {len(group['image_ids'])} images to {target} ({batch}).")
    drop_split = a3.selectbox("Exclude the group's images in", group["splits"], key="dup_drop_split")
    if a3.button("Exclude from that split", key="dup_exclude"):
        states = catalog.image_states(con, dataset.dataset_id, group["image_ids"])
        ids = states.loc[states["split"].astype(str) == drop_split, "image_id"].tolist()
        batch = duplicates.exclude_images(con, dataset, ids, author=user,
                                          reason=f"near duplicate across splits ({drop_split})")
        st.success(f"Excluded {len(ids)} images of {drop_split} ({batch}).")

st.subheader("Compare a pair")
if len(report.pairs):
    pairs = report.pairs.reset_index(drop=True)
    k = st.number_input(f"Pair (of {len(pairs):,}, closest first)", 1, len(pairs), 1, key="dup_pair")
    pair = pairs.sort_values(["distance", "a"]).iloc[k - 1]
    first, second = (Image.open(f"{dataset.root}/{p}") for p in (pair["a"], pair["b"]))
    diff, mean = duplicates.pixel_difference(first, second)
    scale = max(1, 256 // max(first.size))
    cols = st.columns(3)
    for col, image, caption in zip(cols, (first, second, diff), (
            f"{pair['a']} ({pair['split_a']})", f"{pair['b']} ({pair['split_b']})",
            f"|difference|, mean {mean:.1f} / 255")):
        col.image(image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST),
                  caption=caption)
    st.caption(f"{method} distance {pair['distance']}")
    v1, v2 = st.columns(2)
    for col, verdict in ((v1, "duplicate"), (v2, "not duplicate")):
        if col.button(f"Mark: {verdict}", key=f"mark_{verdict}"):
            duplicates.mark_pairs(con, dataset, pairs.iloc[[pairs.index[k - 1]]], verdict,
                                  method=method, author=user)
            st.success(f"Marked as {verdict}.")
    quality = duplicates.threshold_quality(wide.pairs, catalog.pair_marks(con, dataset.dataset_id))
    if quality["marked"].max() if len(quality) else 0:
        st.caption("Precision and recall per threshold, from your marks")
        st.dataframe(quality, hide_index=True, key="dup_quality")

st.subheader("Resolutions")
batches = catalog.image_event_batches(con, dataset.dataset_id)
st.dataframe(batches, hide_index=True, key="dup_batches")
if len(batches):
    undo = st.selectbox("Resolution to undo", batches["batch"], key="dup_undo_batch")
    if st.button("Undo it", key="dup_undo"):
        st.success(f"Reversed by {duplicates.undo_resolution(con, dataset, undo, author=user)}.")

st.subheader("Duplicate annotations (same class, IoU >= 0.9)")
doubles = ui.cached(duplicates.duplicate_annotations, con, dataset)
st.dataframe(doubles, hide_index=True, key="dup_annotations")
if len(doubles) and st.button(f"Delete the second box of all {len(doubles)} pairs", key="dup_fix"):
    st.success(f"Deleted {duplicates.delete_duplicate_boxes(con, dataset, doubles, author=user)} boxes.")
