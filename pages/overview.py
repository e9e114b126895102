"""Overview: a dataset's health at a glance, what could not be read, ingest, and the images."""
import streamlit as st

import ui
from core import catalog, ingest, jobs, rayengine
from core.formats import READERS, FormatError

con = ui.get_cursor()
dataset = ui.current_dataset(con)
st.title("Overview")


def ingest_form_ui() -> dict | None:
    """The ingest form; returns its fields when submitted."""
    with st.expander("Ingest a folder", expanded=dataset is None), st.form("ingest"):
        left, right = st.columns(2)
        source = left.text_input("Folder on the server", placeholder="/data/my-images",
                                 key="ingest_source")
        fmt = right.selectbox("Format", ["auto", *READERS],
                              help="auto: from the annotation file's type and the folder's layout")
        labels = left.text_input("Annotation file or folder (csv, coco, voc, labelstudio, cvat)",
                                 "")
        name = right.text_input(
            "Dataset", "", placeholder="the folder's name",
            help="A new dataset's name, or an existing dataset's to add the images to it"
                 + (f" (this page shows {dataset.name})" if dataset else ""))
        split = left.text_input("Split (optional)", "", help=(
            "Split of the folder's images. Images already in the catalog are moved to it (undo "
            "on the Duplicates page), unless split folders or a split column say otherwise."))
        annotator = right.text_input("Annotator (optional)", "")
        cluster = rayengine.configured_address()
        engine = left.selectbox(
            "Engine", ["local", "ray"], key="ingest_engine",
            help=f"ray: tasks on the cluster at {cluster}, whose nodes must see the folder at "
                 "the same path") if cluster else "local"
        if st.form_submit_button("Start ingest", type="primary") and source:
            return {"source": source, "fmt": fmt, "labels": labels or None,
                    "dataset": name or None, "split": split or None, "annotator": annotator or None,
                    "engine": engine, "ray_address": cluster if engine == "ray" else None}
    return None


request = ingest_form_ui()
if request:
    def work(cursor, progress, job_id, request=request, user=st.session_state.get("user")):
        return ingest.ingest(cursor, request["source"], fmt=request["fmt"], labels=request["labels"],
                             dataset=request["dataset"], split=request["split"],
                             annotator=request["annotator"], job_id=job_id, progress=progress,
                             user=user, engine=request["engine"],
                             ray_address=request["ray_address"])

    try:  # one ingest at a time: two would write the same rows, and the second fail on them
        ingest.check_source(request["source"], request["labels"], request["fmt"])  # at once
        job_id = jobs.start_job(ui.get_connection(), "ingest",  # who, for the audit log
                                {**request, "user": st.session_state.get("user")}, work,
                                alone=True)
        st.session_state.setdefault("my_jobs", []).append(job_id)
    except jobs.JobBusy as err:
        st.warning(f"{err}.")
    except FormatError as err:
        st.error(f"{str(err)[:1].upper()}{str(err)[1:]}.")
ui.job_panel("my_jobs", refresh_page=True)  # the counts below change

if dataset is None:
    st.info("The catalog has no dataset yet: ingest a folder above.")
    st.stop()

st.caption(dataset.description or dataset.root)
facts = ui.cached(catalog.dataset_overview, con, dataset.dataset_id)
cols = st.columns(6)
for col, (label, key) in zip(cols, [("Images", "images"), ("Unreadable", "unreadable"),
                                    ("Labelled", "labelled"), ("Unlabelled", "unlabelled"),
                                    ("Classes", "classes"), ("Annotators", "annotators")]):
    col.metric(label, f"{facts[key]:,}")

left, right = st.columns(2)
with left:
    st.subheader("Label sources")
    st.dataframe(ui.cached(catalog.label_source_counts, con, dataset.dataset_id), hide_index=True)
with right:
    st.subheader("How each image's class is resolved")
    st.dataframe(ui.cached(catalog.resolved_source_counts, con, dataset.dataset_id),
                 hide_index=True)


def all_rows_csv(func, dataset_id: int):
    """A download's data, made when it is clicked: every row of `func`, not the page's first
    1,000 (the catalog read with a cursor of its own: the click comes outside a page run)."""
    def make() -> str:
        with ui.get_connection().cursor() as cursor:
            return func(cursor, dataset_id, limit=None).to_csv(index=False)
    return make


def listed_ui(title: str, frame, total: int, func, file_name: str, **options) -> None:
    """A table of the first rows of `total`, with a CSV download of all of them."""
    st.markdown(f"**{title}** ({total:,})"
                + (f": the first {len(frame):,} shown, all in the CSV" if total > len(frame)
                   else ""))
    st.dataframe(frame, hide_index=True, **options)
    if total:
        st.download_button(f"Download all {total:,} (CSV)", all_rows_csv(func, dataset.dataset_id),
                           file_name=f"{dataset.name}-{file_name}.csv", mime="text/csv",
                           key=f"download_{file_name}", on_click="ignore")


unreadable = ui.cached(catalog.unreadable_images, con, dataset.dataset_id)
problems = ui.cached(catalog.problem_table, con, dataset.dataset_id)
problem_total = ui.cached(catalog.problem_count, con, dataset.dataset_id)
with st.expander(f"Unreadable files ({facts['unreadable']:,}) and annotation problems "
                 f"({problem_total:,})", expanded=bool(facts["unreadable"] or problem_total)):
    listed_ui("Unreadable files", unreadable, facts["unreadable"], catalog.unreadable_images,
              "unreadable", column_config={"error": "reason"})
    listed_ui("Annotation problems", problems, problem_total, catalog.problem_table, "problems")

st.subheader("Images")
splits = ["all"] + ui.cached(catalog.split_names, con, dataset.dataset_id)
classes = ui.cached(catalog.class_table, con, dataset.dataset_id)
f1, f2, f3 = st.columns([1, 1, 1])
split = f1.selectbox("Split", splits, key="grid_split")
class_name = f2.selectbox("Class", ["all"] + classes["name"].tolist(), key="grid_class",
                          help="Images whose resolved class is this one, or that hold a resolved "
                               "box or polygon of it")
class_id = None if class_name == "all" else int(classes.set_index("name").loc[class_name, "class_id"])
filters = {"split": None if split == "all" else split, "class_id": class_id}
total = ui.cached(catalog.count_images, con, dataset.dataset_id, **filters)
per_page = 48
pages = max(1, -(-total // per_page))
page = f3.number_input(f"Page (of {pages:,})", 1, pages, 1, key="grid_page")
grid = ui.cached(catalog.image_page, con, dataset.dataset_id, offset=(page - 1) * per_page,
                 limit=per_page, **filters)
st.caption(f"{total:,} image{'' if total == 1 else 's'}; showing {len(grid)} from "
           f"#{(page - 1) * per_page + 1:,}")
ui.image_grid_ui(dataset.root, grid)
