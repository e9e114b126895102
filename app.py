"""Sieve dashboard: the frame and the router. Run with `make run` (or `streamlit run app.py`)."""
import streamlit as st

import ui

st.set_page_config(page_title="Sieve", page_icon=":material/filter_alt:", layout="wide")

pages = st.navigation([
    st.Page("pages/overview.py", title="Overview", icon=":material/dashboard:", default=True),
    st.Page("pages/balance.py", title="Class balance", icon=":material/balance:"),
    st.Page("pages/duplicates.py", title="Duplicates", icon=":material/content_copy:"),
    st.Page("pages/agreement.py", title="Agreement", icon=":material/groups:"),
    st.Page("pages/fix.py", title="Fix labels", icon=":material/edit:"),
    st.Page("pages/autolabel.py", title="Auto-label", icon=":material/model_training:"),
    st.Page("pages/export.py", title="Export", icon=":material/download:"),
])
ui.sidebar_ui(ui.get_cursor())
pages.run()
