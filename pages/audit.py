"""Audit (leads): who changed what and when — label events, image events, duplicate marks,
snapshots, model runs, review queues, account changes and ingests — filtered by person,
dataset, kind and time, a page at a time; and each person's activity per day and per kind."""
from datetime import datetime, time, timedelta

import plotly.express as px
import streamlit as st

import ui
from core import audit, catalog
from core.users import PermissionDenied

ALL = "all"
CHART_PEOPLE = 12


def filter_ui(con) -> audit.AuditFilter:
    """Draw the filters; return them (times in UTC, the end day included)."""
    who_col, dataset_col, kind_col, day_col = st.columns([2, 2, 3, 2])
    who = who_col.selectbox("Person", [ALL, *audit.people(con)], key="audit_who")
    names = catalog.list_dataset_names(con)
    dataset = dataset_col.selectbox("Dataset", [ALL, *names], key="audit_dataset",
                                    help="'all' also shows account changes")
    kinds = kind_col.multiselect("Kinds", audit.KINDS, default=list(audit.KINDS), key="audit_kinds")
    today = catalog.now().date()
    days = day_col.date_input("Days (UTC)", (today - timedelta(days=30), today), key="audit_days")
    since, until = (days + (days[0],))[:2] if days else (None, None)
    return audit.AuditFilter(
        dataset_id=None if dataset == ALL else catalog.find_dataset(con, dataset).dataset_id,
        who=None if who == ALL else who, kinds=tuple(kinds),
        since=datetime.combine(since, time()) if since else None,
        until=datetime.combine(until + timedelta(days=1), time()) if until else None)


def log_ui(con, filters: audit.AuditFilter, user: str | None) -> None:
    page_col, size_col, total_col = st.columns([1, 1, 3], vertical_alignment="bottom")
    size = size_col.selectbox("Rows per page", [25, 50, 100, 500], index=1, key="audit_size")
    number = page_col.number_input("Page", min_value=1, value=1, step=1, key="audit_page")
    found = audit.audit_page(con, filters, user=user, page=int(number), page_size=size)
    total_col.markdown(f"**{found.total:,}** acts · page {found.page} of {found.pages:,}")
    st.dataframe(found.frame, hide_index=True, key="audit_table", column_config={
        "created_at": st.column_config.DatetimeColumn("When (UTC)", format="YYYY-MM-DD HH:mm:ss"),
        "who_kind": None})


def activity_ui(con, filters: audit.AuditFilter, user: str | None) -> None:
    result = audit.activity(con, filters, user=user)
    if result.rows.empty:
        st.info("No acts by people in this range.")
        return
    busiest = result.per_kind["who"].head(CHART_PEOPLE)  # a bar per person: a few stay legible
    ui.plotly_chart_ui(px.bar, result.per_day[result.per_day["who"].isin(busiest)], x="day",
                       y="acts", color="who", labels={"acts": "acts per day"}, key="audit_per_day")
    if len(result.per_kind) > CHART_PEOPLE:
        st.caption(f"The {CHART_PEOPLE} busiest of {len(result.per_kind):,} people; the table has "
                   "them all.")
    st.dataframe(result.per_kind, hide_index=True, key="audit_per_kind")


con = ui.get_cursor()
st.title("Audit")
ui.permission_gate_ui(con, "audit", "The audit log")
user = st.session_state.get("user") or None
try:
    filters = filter_ui(con)
except ValueError as err:
    st.error(str(err))
    st.stop()
log_tab, activity_tab = st.tabs(["Log", "Activity per person"])
try:
    with log_tab:
        log_ui(con, filters, user)
    with activity_tab:
        activity_ui(con, filters, user)
except PermissionDenied as err:
    st.error(str(err), icon=":material/lock:")
