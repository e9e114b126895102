"""Accounts (admins): add people with a one-time password, change roles, disable accounts and
reset forgotten passwords, while the dashboard holds the catalog (the command line cannot write
to it then). Every change is recorded and shows on the Audit page."""
import streamlit as st

import ui
from core import users


def act(change):
    """`change(by)` as the signed-in admin: its result (True for none), or None after showing
    why it was refused."""
    try:
        return change(st.session_state.get("user") or None) or True
    except (ValueError, users.PermissionDenied) as err:
        st.error(str(err))
        return None


con = ui.get_cursor()
st.title("Accounts")
ui.permission_gate_ui(con, "admin", "Account management")
if not users.has_accounts(con):
    st.info("Single-user mode: this catalog has no accounts, so everyone may do everything. "
            "The first account you add must be an admin; from then on everyone signs in.")
st.dataframe(users.list_users(con), hide_index=True, key="accounts_table")

st.subheader("Add someone")
with st.form("account_add", clear_on_submit=True):
    name_col, role_col = st.columns(2)
    name = name_col.text_input("Name (also the name their edits carry)", key="account_name")
    role = role_col.selectbox("Role", users.ROLES, index=1, key="account_role")
    if st.form_submit_button("Add", type="primary"):
        password = act(lambda by: users.add_user(con, name, role, by=by))
        if password:
            st.success(f"Added {name} ({role}). One-time password, shown once: `{password}` — "
                       "they choose their own at the first sign-in.")

st.subheader("Change an account")
names = users.list_users(con)["name"].tolist()
if names:
    who_col, role_col = st.columns(2)
    who = who_col.selectbox("Account", names, key="account_who")
    new_role = role_col.selectbox("Role", users.ROLES, key="account_new_role")
    role_btn, disable_btn, reset_btn = st.columns(3)
    if role_btn.button("Set role", key="account_set_role") and act(
            lambda by: users.set_role(con, who, new_role, by=by)):
        st.rerun()
    if disable_btn.button("Disable", key="account_disable") and act(
            lambda by: users.disable_user(con, who, by=by)):
        st.rerun()
    if reset_btn.button("Reset password", key="account_reset"):
        password = act(lambda by: users.reset_password(con, who, by=by))
        if password:
            st.success(f"New one-time password for {who}, shown once: `{password}`")
