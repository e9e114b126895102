"""Duplicates: exact copies, near duplicates by perceptual hash or image embeddings, leakage
between splits, and reversible resolutions. Past duplicates.PAIR_CAP pairs (one huge cluster) the
page works from groups and counts, and lists only the pairs of the group opened."""
import pandas as pd
import plotly.express as px
import streamlit as st
from PIL import Image

import ui
from core import catalog, duplicates, embeddings, jobs, queues

SEARCH_MAX = 16  # the Hamming slider's range
GRID_MAX = 60  # thumbnails drawn of one group
QUEUE_MAX = 20_000  # images a duplicates review queue holds at most


def threshold_ui(column, method: str) -> float:
    """The method's distance slider (Hamming bits, or 1 - cosine similarity)."""
    if method == "embedding":
        return column.slider("Largest distance (1 - cosine similarity)", 0.0, 0.5,
                             duplicates.DEFAULT_DISTANCE[method], 0.01, key="dup_distance_embedding",
                             help="The default comes from bench/embeddings.py (bench/RESULTS.md)")
    return column.slider("Largest Hamming distance", 0, SEARCH_MAX, duplicates.DEFAULT_DISTANCE[method],
                         key=f"dup_distance_{method}", help="The default comes from the calibration "
                         "on CIFAR-10 JPEG / lossless pairs (bench/RESULTS.md)")


def embeddings_missing_ui() -> None:
    """Offer the embedding job (reads every image once), then stop the page."""
    st.info("This dataset has no embeddings yet: computing them reads every image once "
            "(about a minute for 60,000 small images); they are kept for later visits.")

    def work(cursor, progress, job_id) -> dict:
        return {"images": len(embeddings.dataset_embeddings(cursor, dataset, progress=progress).image_ids)}

    if st.button("Compute embeddings", key="dup_embed", disabled=ui.jobs_running("dup_jobs")):
        job = jobs.start_job(ui.get_connection(), "embeddings", {"dataset": dataset.name}, work)
        st.session_state["dup_jobs"] = st.session_state.get("dup_jobs", []) + [job]
        st.rerun()
    ui.job_panel("dup_jobs", last=1)
    st.stop()


con = ui.get_cursor()
dataset = ui.current_dataset(con)
st.title("Duplicates")
if dataset is None:
    st.info("No dataset yet: ingest one on the Overview page.")
    st.stop()
user = st.session_state.get("user") or "unknown"

c1, c2, c3 = st.columns([1, 2, 2])
embedded = ui.cached(embeddings.cached_embeddings, con, dataset) is not None
# the default method once its embeddings exist; until then the page opens on phash, which needs
# no job, and the embedding method offers to compute them
method = c1.selectbox("Method", duplicates.METHODS, key="dup_method", index=duplicates.METHODS.index(
    duplicates.DEFAULT_METHOD if embedded else "phash"))
if not embedded and method != "embedding":
    c1.caption("Embeddings (the default once computed) also find re-crops and small shifts: "
               "choose *embedding* to compute them.")
distance = threshold_ui(c2, method)
if method == "embedding" and not embedded:
    embeddings_missing_ui()
with st.spinner("Searching near duplicates..."):
    wide = ui.cached(duplicates.find_duplicates, con, dataset, method=method, max_distance=distance)
sizes = ui.cached(catalog.hash_table, con, dataset.dataset_id).groupby("split", dropna=False).size()
split_pairs = ["all"] + sorted({" <-> ".join(sorted((str(a), str(b)))) for a, b in zip(
    *((wide.pairs["split_a"], wide.pairs["split_b"]) if wide.pairs_listed
      else (wide.leakage["split_a"], wide.leakage["split_b"])))})
chosen = c3.selectbox("Split pair", split_pairs, key="dup_splits")
report = duplicates.narrow(wide, distance, split_sizes=sizes,
                           splits=None if chosen == "all" else tuple(chosen.split(" <-> ")))

m1, m2, m3, m4 = st.columns(4)
m1.metric("Near-duplicate pairs", f"{report.pair_count:,}")
m2.metric("Groups", f"{len(report.groups):,}")
m3.metric("Exact copies (groups)", f"{report.exact['group'].nunique():,}")
leak = report.leakage
m4.metric("Images leaking across splits", f"{int(leak['images_a'].sum()) if len(leak) else 0:,}")
if wide.pairs_listed and len(wide.pairs):
    counts = wide.pairs["distance"].value_counts().sort_index()
    whole = pd.api.types.is_integer_dtype(counts.index)  # hash bits; embeddings: cosine
    if whole:  # every distance up to the threshold has its bar, gaps included
        counts = counts.reindex(range(int(distance) + 1), fill_value=0)
    within = counts.cumsum()
    curve = px.bar(x=within.index, y=within.values, height=220,
                   labels={"x": "distance", "y": "pairs within"})
    curve.update_xaxes(range=[-0.5, distance + 0.5] if whole else [0, distance])
    st.plotly_chart(curve, key="dup_curve")
elif not wide.pairs_listed:
    st.info(f"{wide.pair_count:,} pairs are too many to list: groups and counts below; the pairs "
            f"of the group you open are listed (among its first {duplicates.GROUP_PAIR_MEMBERS}).")

st.subheader("Leakage between splits")
st.dataframe(leak, hide_index=True, column_config={"share_a": st.column_config.NumberColumn(
    "share of split_a", format="percent")}, key="dup_leak")

st.subheader("Groups, largest first")
groups = report.groups
group = None
if groups.empty:
    st.success("No near duplicates at this distance.")
else:
    page = st.number_input(f"Group (of {len(groups):,})", 1, len(groups), 1, key="dup_group")
    group = groups.iloc[page - 1]
    shown_ids, shown_paths = group["image_ids"][:GRID_MAX], group["paths"][:GRID_MAX]
    if group["size"] > GRID_MAX:
        st.caption(f"The first {GRID_MAX} of {group['size']:,} images")
    states = catalog.image_states(con, dataset.dataset_id, shown_ids).set_index("image_id")
    ui.image_grid_ui(dataset.root, pd.DataFrame({  # the caption's second line is the split
        "path": shown_paths, "class": states.loc[shown_ids, "split"].astype(str).values}))
    keep_path = st.selectbox("Keep", shown_paths, key="dup_keep")
    keep = shown_ids[shown_paths.index(keep_path)]
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
    if st.button(f"Send the {len(groups):,} group{'' if len(groups) == 1 else 's'} to the fix "
                 "queue", key="dup_queue",
                 help=f"Members of each group one after another, largest groups first (at most "
                      f"{QUEUE_MAX:,} images)"):
        items = queues.duplicate_group_items(groups, limit=QUEUE_MAX)
        queue_id = queues.create_queue(con, dataset.dataset_id, f"duplicates ({method})",
                                       "duplicates", items, created_by=user)
        st.success(f"Queue {queue_id} holds {len(items):,} images: open it on the Fix labels page.")

st.subheader("Compare a pair")
if report.pairs_listed:
    pairs = report.pairs.sort_values(["distance", "a"], kind="stable").reset_index(drop=True)
elif group is not None:
    pairs = ui.cached(duplicates.pairs_of_group, con, dataset, tuple(group["image_ids"]),
                      method=method, max_distance=distance)
    st.caption(f"Pairs of group {page} (among its first {duplicates.GROUP_PAIR_MEMBERS} images)")
else:
    pairs = report.pairs
if len(pairs):
    k = st.number_input(f"Pair (of {len(pairs):,}, closest first)", 1, len(pairs), 1, key="dup_pair")
    pair = pairs.iloc[k - 1]
    first, second = (Image.open(catalog.dataset_file(dataset.root, p)) for p in (pair["a"], pair["b"]))
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
            duplicates.mark_pairs(con, dataset, pairs.iloc[[k - 1]], verdict, method=method, author=user)
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
st.dataframe(doubles[["path", "class", "iou", "x", "y", "w", "h"]], hide_index=True,
             key="dup_annotations", column_config={
                 "iou": st.column_config.NumberColumn("IoU", format="%.3f"),
                 **{c: st.column_config.NumberColumn(f"{c} (second box)", format="%.1f")
                    for c in "xywh"}})
if len(doubles) and st.button(f"Delete the second box of all {len(doubles)} pairs", key="dup_fix"):
    st.success(f"Deleted {duplicates.delete_duplicate_boxes(con, dataset, doubles, author=user)} boxes.")
