"""SQL console (leads): a read-only query on the catalog, its result as a table and as CSV.
Anything but a single SELECT of the catalog's tables and views is refused with the reason."""
import streamlit as st

import ui
from core import catalog, sqlconsole

EXAMPLE = """SELECT a.name AS annotator, count(*) AS labels
FROM label_events e JOIN annotators a USING (annotator_id)
GROUP BY ALL ORDER BY labels DESC LIMIT 20"""

con = ui.get_cursor()
st.title("SQL console")
ui.permission_gate_ui(con, "sql", "The SQL console")
user = st.session_state.get("user") or None
st.caption(f"One SELECT at a time, read-only: at most {sqlconsole.MAX_ROWS:,} rows, stopped after "
           f"{sqlconsole.TIMEOUT_S:g} s. Tables and views: `SHOW TABLES`; columns: "
           "`DESCRIBE label_events`.")
with st.form("sql_form"):
    sql = st.text_area("Query", EXAMPLE, height=160, key="sql_text")
    run = st.form_submit_button("Run", type="primary", icon=":material/play_arrow:")
if run:
    try:
        st.session_state["sql_result"] = sqlconsole.run_query(con, sql, user=user)
    except sqlconsole.QueryRefused as err:
        st.session_state.pop("sql_result", None)
        st.error(f"Refused: {err}", icon=":material/block:")
    except catalog.CatalogError as err:  # failed, timed out, or not a lead
        st.session_state.pop("sql_result", None)
        st.error(str(err), icon=":material/error:")
result = st.session_state.get("sql_result")
if result is not None:
    more = f" (the first {len(result.frame):,}: there are more)" if result.truncated else ""
    st.markdown(f"**{len(result.frame):,} rows**{more} in {result.seconds:.2f} s")
    st.dataframe(result.frame, hide_index=True, key="sql_table")
    st.download_button("Download CSV", result.frame.to_csv(index=False), file_name="query.csv",
                       mime="text/csv", key="sql_csv", icon=":material/download:")
