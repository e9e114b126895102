"""Class balance: labels per class x split x annotator or source, imbalance, box statistics,
image sizes, and sampling weights that rebalance the classes."""
import numpy as np
import pandas as pd
import plotly.express as px
import streamlit as st

import ui
from core import catalog
from core.balance import imbalance, sampling_weights
from ui.canvas import class_colours

con = ui.get_cursor()
dataset = ui.current_dataset(con)
st.title("Class balance")
if dataset is None:
    st.info("No dataset yet: ingest one on the Overview page.")
    st.stop()

resolved = ui.cached(catalog.resolved_counts, con, dataset.dataset_id)
detail = ui.cached(catalog.label_counts, con, dataset.dataset_id)
classes = ui.cached(catalog.class_table, con, dataset.dataset_id)["name"].tolist()
colours = class_colours(classes)  # as on the Fix labels canvas and in the legends there
kinds = resolved["kind"].unique().tolist()
kind = st.radio("Count", kinds, horizontal=True, key="balance_kind",
                format_func={"class": "image labels", "box": "boxes", "polygon": "polygons"}.get) \
    if len(kinds) > 1 else (kinds[0] if kinds else "class")
counts = resolved[resolved["kind"] == kind]
per_class = counts.groupby("class")["count"].sum().reindex(classes, fill_value=0)
shape = imbalance(per_class)

m1, m2, m3 = st.columns(3)
m1.metric("Classes", shape.classes)
m2.metric("Imbalance (largest / smallest)", f"{shape.ratio:.2f}")
m3.metric("Effective number of classes", f"{shape.effective_classes:.2f}",
          help="exp(entropy of the class shares): equals the class count when balanced")

st.subheader("Resolved labels per class and split")
ui.plotly_chart_ui(px.bar, counts, x="class", y="count", color="split", barmode="group",
                   category_orders={"class": classes}, key="chart_split")

st.subheader("Per annotator or source")
group = st.selectbox("Group by", ["annotator_kind", "source", "annotator"], key="balance_group")
subset = detail[detail["kind"] == kind]
top = subset.groupby(group)["labels"].sum().nlargest(12).index
grouped = (subset[subset[group].isin(top)].groupby(["class", group], as_index=False)["labels"].sum())
ui.plotly_chart_ui(px.bar, grouped, x="class", y="labels", color=group, barmode="group",
                   category_orders={"class": classes}, key="chart_group")
if subset[group].nunique() > 12:
    st.caption(f"The 12 largest of {subset[group].nunique():,} groups; the table has them all.")
st.dataframe(subset.pivot_table(index=[group, "split"], columns="class", values="labels",
                                aggfunc="sum", fill_value=0), key="table_group")

if set(kinds) & {"box", "polygon"}:
    geometry = ui.cached(catalog.object_geometry, con, dataset.dataset_id)
    geometry = geometry.assign(aspect=geometry["w"] / geometry["h"].replace(0, np.nan),
                               cx=(geometry["x"] + geometry["w"] / 2) / geometry["image_width"],
                               cy=(geometry["y"] + geometry["h"] / 2) / geometry["image_height"])
    st.subheader("Boxes")
    b1, b2 = st.columns(2)
    with b1:
        ui.plotly_chart_ui(px.histogram, geometry, x="w", color="class", nbins=50,
                           title="Width (px)", key="box_w",
                           color_discrete_map=colours, category_orders={"class": classes})
    with b2:
        ui.plotly_chart_ui(px.histogram, geometry, x="h", color="class", nbins=50,
                           title="Height (px)", key="box_h",
                           color_discrete_map=colours, category_orders={"class": classes})
    b3, b4 = st.columns(2)
    with b3:
        ui.plotly_chart_ui(px.histogram, geometry, x="aspect", color="class", nbins=50,
                           title="Aspect (width / height)", key="box_aspect",
                           color_discrete_map=colours, category_orders={"class": classes})
    with b4:
        ui.plotly_chart_ui(px.bar, ui.cached(catalog.objects_per_image, con, dataset.dataset_id),
                           x="objects", y="images", title="Objects per image",
                           key="box_per_image")
    heat = np.histogram2d(geometry["cy"].clip(0, 1), geometry["cx"].clip(0, 1), bins=20,
                          range=[[0, 1], [0, 1]])[0]
    centres = (np.arange(20) + 0.5) / 20  # each cell at its middle: 0.025 ... 0.975
    ui.plotly_chart_ui(px.imshow, heat, x=centres, y=centres,
                       labels={"x": "centre x / width", "y": "centre y / height",
                               "color": "boxes"},
                       title="Where box centres fall in the image", key="box_heat")

st.subheader("Image sizes")
sizes = ui.cached(catalog.image_size_counts, con, dataset.dataset_id)
sizes = sizes.assign(size=sizes["width"].astype(str) + "x" + sizes["height"].astype(str))
ui.plotly_chart_ui(px.bar, sizes.head(30), x="size", y="images", key="sizes")

st.subheader("Rebalance")
if kind != "class":
    plural = {"box": "boxes", "polygon": "polygons"}[kind]
    st.caption(f"Counted per {kind} ({per_class.sum():,} in all): one image holds {plural} of "
               "several classes, so weights given to images can only approach these shares.")
target_kind = st.radio("Target", ["uniform", "custom shares"], horizontal=True, key="target_kind")
target = None
if target_kind == "custom shares":
    edited = st.data_editor(pd.DataFrame({"class": per_class.index, "target_share":
                                          (per_class / max(per_class.sum(), 1)).values}),
                            hide_index=True, key="target_editor", disabled=["class"],
                            column_config={"target_share": st.column_config.NumberColumn(
                                format="%.4f", min_value=0.0)})
    target = edited.set_index("class")["target_share"]
try:
    weights = sampling_weights(per_class, target=target)
except ValueError as err:
    st.error(str(err))
else:
    st.dataframe(weights, hide_index=True)
    st.download_button("Download weights (CSV)", weights.to_csv(index=False),
                       file_name=f"{dataset.name}-class-weights-"
                                 f"{'uniform' if target is None else 'custom'}.csv",
                       mime="text/csv")
