"""Sieve dashboard: the frame and the router. Run with `make run` (or `streamlit run app.py`)."""
import streamlit as st

import ui
from core.users import PermissionDenied

st.set_page_config(page_title="Sieve", page_icon=ui.favicon(), layout="wide")
con = ui.get_cursor()  # with accounts: nothing below until someone signs in
LEAD_PAGES = [
    st.Page("pages/audit.py", title="Audit", icon=":material/history:"),
    st.Page("pages/sql.py", title="SQL console", icon=":material/terminal:"),
] if ui.allowed(con, "audit") else []
ADMIN_PAGES = [st.Page("pages/accounts.py", title="Accounts", icon=":material/manage_accounts:")
               ] if ui.allowed(con, "admin") else []

pages = st.navigation([
    st.Page("pages/overview.py", title="Overview", icon=":material/dashboard:", default=True),
    st.Page("pages/balance.py", title="Class balance", icon=":material/balance:"),
    st.Page("pages/duplicates.py", title="Duplicates", icon=":material/content_copy:"),
    st.Page("pages/agreement.py", title="Agreement", icon=":material/groups:"),
    st.Page("pages/fix.py", title="Fix labels", icon=":material/edit:"),
    st.Page("pages/autolabel.py", title="Auto-label", icon=":material/model_training:"),
    st.Page("pages/export.py", title="Export", icon=":material/download:"),
    *LEAD_PAGES,
    *ADMIN_PAGES,
])
ui.sidebar_ui(con)
try:
    pages.run()
except PermissionDenied as err:  # the role check in core refused a write the page offered
    st.error(str(err), icon=":material/lock:")
