"""Export: snapshots of the labels, what changed between them, exports in the common formats
(run as a job), and a preview of the augmentations an oversampled export applies."""
import pandas as pd
import streamlit as st
from PIL import Image

import ui
from core import augment, catalog, export, jobs, snapshots

con = ui.get_cursor()
dataset = ui.current_dataset(con)
st.title("Export")
if dataset is None:
    st.info("No dataset yet: ingest one on the Overview page.")
    st.stop()
user = st.session_state.get("user") or None


classes = ui.cached(catalog.class_table, con, dataset.dataset_id)["name"].tolist()

st.subheader("Snapshots")
with st.form("snapshot_form"):
    c1, c2 = st.columns([1, 2])
    name = c1.text_input("Name", key="snapshot_name", placeholder="v1")
    note = c2.text_input("Note (optional)", key="snapshot_note")
    if st.form_submit_button("Take snapshot") and name:
        try:
            point = snapshots.create_snapshot(con, dataset, name, author=user, note=note or None)
            st.success(f"Snapshot {name!r}: label events up to {point.max_event_id:,}.")
        except catalog.CatalogError as err:
            st.error(str(err))
table = ui.cached(catalog.snapshot_table, con, dataset.dataset_id)
st.dataframe(table[["name", "created_at", "author", "note", "labels"]], hide_index=True,
             key="snapshot_table",
             column_config={"created_at": "taken at",
                            "labels": st.column_config.NumberColumn("labels then", format="%d")})
points = [snapshots.NOW] + table["name"].tolist()

st.subheader("The dataset as of a snapshot")
seen = st.selectbox("As of", points, key="view_as_of")
at = snapshots.resolve_point(con, dataset, seen)
counts = ui.cached(catalog.resolved_counts_as_of, con, dataset.dataset_id, at, with_models=False)
if len(counts):
    st.dataframe(counts.pivot_table(index=["kind", "class"], columns="split", values="count",
                                    aggfunc="sum", fill_value=0), key="view_counts")
else:
    st.caption("No resolved labels at that point.")

st.subheader("What changed")
d1, d2 = st.columns(2)
before = d1.selectbox("From", points[1:] or [snapshots.NOW], key="diff_from")
after = d2.selectbox("To", points, key="diff_to")
diff = ui.cached(snapshots.diff_snapshots, con, dataset, before, after)
totals = snapshots.diff_json(diff, max_images=0)["totals"]
m1, m2, m3 = st.columns(3)
m1.metric("Labels added", f"{totals['added']:,}")
m2.metric("Labels removed", f"{totals['removed']:,}")
m3.metric("Labels changed", f"{totals['changed']:,}")
if len(diff.changes):
    t1, t2, t3 = st.tabs(["Per class", "Per annotator", "Images"])
    t1.dataframe(diff.by_class, hide_index=True, key="diff_class")
    t2.dataframe(diff.by_annotator, hide_index=True, key="diff_annotator")
    t3.dataframe(diff.images, hide_index=True, key="diff_images")
    shown = diff.images.head(24)
    with t3:
        st.caption("The first 24 changed images: labels added / removed / changed")
        counts = zip(shown["added"], shown["removed"], shown["changed"])
        ui.image_grid_ui(dataset.root, shown.assign(**{"class": [
            f"+{a} −{r} ~{c}" for a, r, c in counts]}))


def _target(shares: pd.DataFrame) -> dict | None:
    """Class → target share as edited, None while every class has the same share (uniform)."""
    values = shares.set_index("class")["target_share"].fillna(0.0).astype(float)
    return None if values.nunique() <= 1 else values.to_dict()


def export_form_ui() -> dict | None:
    """The export form; returns the chosen options (as keyword arguments) when submitted."""
    splits = ui.cached(catalog.split_names, con, dataset.dataset_id)
    with st.form("export_form"):
        c1, c2, c3 = st.columns(3)
        fmt = c1.selectbox("Format", export.FORMATS, key="export_format")
        snapshot = c2.selectbox("Labels as of", points, key="export_snapshot")
        chosen = c3.multiselect("Splits (none chosen: all images)", splits, key="export_splits")
        out = st.text_input("Output folder on the server", key="export_out",
                            placeholder=f"/data/exports/{dataset.name}")
        c4, c5, c6 = st.columns(3)
        images = c4.selectbox("Images", ["default", "copy", "link", "none"], key="export_images",
                              help="default: copy (none for csv and parquet, which point at "
                                   "the images where they are)")
        strip = c4.checkbox("Strip EXIF (GPS included) from copies", key="export_strip")
        excluded = c5.checkbox("Include images excluded as duplicates", key="export_excluded")
        models = c5.checkbox("Include model labels", key="export_models")
        weights = c6.checkbox("Write per-class sampling weights", True, key="export_weights")
        oversample = c6.checkbox("Oversample minority classes (train) by augmentation",
                                 key="export_oversample")
        with st.expander("Target class shares (weights and oversampling; default uniform)"):
            shares = st.data_editor(pd.DataFrame({"class": classes, "target_share": 1.0}),
                                    hide_index=True, disabled=["class"], key="export_target")
        overwrite = st.checkbox("Overwrite the files in the folder if it is not empty",
                                key="export_overwrite")
        if not st.form_submit_button("Export", type="primary") or not out:
            return None
    if not (overwrite or export.folder_is_empty(out)):
        st.warning(f"{out} is not empty: tick 'Overwrite' to confirm, or choose another folder.")
        return None
    options = export.ExportOptions(
        format=fmt, splits=tuple(chosen) or None, include_excluded=excluded, model_labels=models,
        images=None if images == "default" else images, strip_exif=strip, weights=weights,
        target=_target(shares), oversample=oversample, force=overwrite)
    try:
        export.check_options(options)
    except export.ExportError as err:
        st.error(str(err))
        return None
    return {"out": out, "snapshot": None if snapshot == snapshots.NOW else snapshot,
            "options": options}


st.subheader("Export")
request = export_form_ui()
if request:
    def work(cursor, progress, job_id, request=request):
        return export.export_dataset(cursor, dataset, request["out"], request["options"],
                                     snapshot=request["snapshot"], progress=progress)

    params = {"dataset": dataset.name, "out": request["out"], "snapshot": request["snapshot"],
              "format": request["options"].format}
    st.session_state.setdefault("export_jobs", []).append(
        jobs.start_job(ui.get_connection(), "export", params, work))
ui.job_panel("export_jobs")

st.subheader("Augmentation preview")
a1, a2, a3, a4, a5 = st.columns(5)
config = augment.AugmentConfig(flip=a1.checkbox("Flip", True, key="aug_flip"),
                               crop=a2.checkbox("Crop", True, key="aug_crop"),
                               rotation=a3.slider("Rotation (±°)", 0, 45, 10, key="aug_rotation"),
                               colour=a4.checkbox("Colour", True, key="aug_colour"))
seed = a5.number_input("Seed", 0, 10_000, 0, key="aug_seed")
for path, image, objects in ui.cached(export.preview_samples, con, dataset, count=2, seed=seed):
    views = [("original", image, objects)]
    for k in range(3):
        result = augment.augment_sample(image, objects, config, seed=seed + k)
        views.append((f"seed {seed + k}", result.image, result.objects))
    scale = max(1, 256 // max(image.size))  # small images (CIFAR) enlarged without blur
    for col, (caption, picture, shown) in zip(st.columns(4), views):
        drawn = augment.draw_objects(picture, shown, classes=classes)
        col.image(drawn.resize((drawn.width * scale, drawn.height * scale), Image.NEAREST),
                  caption=f"{path.rpartition('/')[2]}: {caption}")
