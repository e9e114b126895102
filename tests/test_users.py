"""Accounts and roles (core.users): single-user mode, passwords, the role check at every core
write entry point (allowed writes succeed; forbidden ones raise naming the role needed and write
nothing), and the `python -m core user` commands. Built on a tiny 'pets' dataset made in code."""
from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from core import autolabel, catalog, duplicates, edits, queues, snapshots, users
from core.__main__ import main
from core.ingest import ingest
from tests.fixtures import write_png

ROLE_OF = {"vera": "viewer", "anna": "annotator", "leo": "lead", "ada": "admin"}
PASSWORD = "correct horse battery"
TABLES = ["images", "label_events", "image_events", "pair_marks", "queues", "snapshots", "users",
          "user_events"]


def build_pets(folder):
    """Dataset 'pets': cat/0.png, cat/1.png, dog/0.png (8x8, given classes), and a model run
    applied once (so a rollback has something to mark)."""
    for k, path in enumerate(("cat/0.png", "cat/1.png", "dog/0.png")):
        write_png(folder / "pets" / path, 8, 8, seed=k)
    con = catalog.open_catalog(folder / "template.duckdb", program="pytest")
    ingest(con, folder / "pets", fmt="imagefolder", dataset="pets", workers=1)
    dataset = catalog.find_dataset(con, "pets")
    run_id = catalog.create_model_run(con, dataset.dataset_id, task="classify", classes=[],
                                      config={})
    catalog.add_application(con, run_id, threshold=0.9, strategy="margin", labelled=0, queued=0,
                            queue_id=None, created_by="leo")
    con.close()
    return folder / "template.duckdb"


@pytest.fixture(autouse=True)
def quick_hashes(monkeypatch):
    """bcrypt at its lowest cost: the same code path, 1/256 of the work."""
    monkeypatch.setattr(users, "BCRYPT_ROUNDS", 4)


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    return build_pets(tmp_path_factory.mktemp("users"))


@pytest.fixture
def single(template, tmp_path):
    """The pets catalog with no accounts (single-user mode)."""
    shutil.copy(template, tmp_path / "catalog.duckdb")
    con = catalog.open_catalog(tmp_path / "catalog.duckdb", program="pytest")
    yield con
    con.close()


@pytest.fixture
def team(single):
    """The pets catalog with accounts: root (admin) and one account per role."""
    users.add_user(single, "root", "admin", by=None, password=PASSWORD)
    for name, role in ROLE_OF.items():
        users.add_user(single, name, role, by="root", password=PASSWORD)
    return single


def counts(con) -> dict[str, int]:
    found = {t: con.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0] for t in TABLES}
    found["rolled_back"] = con.execute("""SELECT count(*) FROM model_applications
        WHERE rolled_back_at IS NOT NULL""").fetchall()[0][0]
    return found


def image_id(con, path: str) -> int:
    return con.execute("SELECT image_id FROM images WHERE path = ?", [path]).fetchall()[0][0]


def _annotate(con, who, folder):
    view = edits.load_view(con, image_id(con, "cat/0.png"), user=who)
    plan = edits.plan_class_edit(view, "dog", class_ids={"cat": 0, "dog": 1})
    edits.save_changes(con, view, plan, based_on=view.based_on)


def _review(con, who, folder):
    view = edits.load_view(con, image_id(con, "cat/1.png"), user=who)
    plan = edits.plan_class_edit(view, "dog", class_ids={"cat": 0, "dog": 1}, source="review")
    edits.save_changes(con, view, plan, based_on=view.based_on, source="review")


def _exclude(con, who, folder):
    duplicates.exclude_images(con, catalog.find_dataset(con, "pets"), [image_id(con, "cat/1.png")],
                              author=who, reason="blurred")


def _mark(con, who, folder):
    pairs = pd.DataFrame({"image_a": [image_id(con, "cat/0.png")],
                          "image_b": [image_id(con, "cat/1.png")], "distance": [3]})
    duplicates.mark_pairs(con, catalog.find_dataset(con, "pets"), pairs, "duplicate",
                          method="phash", author=who)


def _queue(con, who, folder):
    items = pd.DataFrame({"image_id": [image_id(con, "dog/0.png")], "reason": ["look again"]})
    queues.create_queue(con, catalog.find_dataset(con, "pets").dataset_id, "check", "suspect",
                        items, created_by=who)


def _snapshot(con, who, folder):
    snapshots.create_snapshot(con, catalog.find_dataset(con, "pets"), "v1", author=who)


def _rollback(con, who, folder):
    run_id = con.execute("SELECT max(run_id) FROM model_runs").fetchall()[0][0]
    autolabel.rollback_run(con, run_id, by=who)


def _ingest(con, who, folder):
    write_png(folder / "birds" / "owl" / "0.png", 8, 8, seed=9)
    ingest(con, folder / "birds", fmt="imagefolder", dataset="birds", workers=1, user=who)


def _add_user(con, who, folder):
    users.add_user(con, "newcomer", "admin", by=who)


# (write, permission it needs, the table count it raises when allowed)
WRITES = [(_annotate, "annotate", "label_events"), (_review, "review", "label_events"),
          (_exclude, "review", "image_events"), (_mark, "review", "pair_marks"),
          (_queue, "review", "queues"), (_snapshot, "snapshot", "snapshots"),
          (_rollback, "train", "rolled_back"), (_ingest, "ingest", "images"),
          (_add_user, "admin", "users")]


@pytest.mark.parametrize("name", list(ROLE_OF))
@pytest.mark.parametrize("write,permission,table", WRITES, ids=[w[0].__name__[1:] for w in WRITES])
def test_require_each_role_at_each_write(team, tmp_path, name, write, permission, table):
    before = counts(team)
    needed = users.PERMISSIONS[permission]
    if users.ROLES.index(ROLE_OF[name]) >= users.ROLES.index(needed):
        write(team, name, tmp_path)
        assert counts(team)[table] > before[table]
    else:
        with pytest.raises(users.PermissionDenied, match=f"needs the {needed} role"):
            write(team, name, tmp_path)
        assert counts(team) == before  # nothing written


@pytest.mark.parametrize("write,permission,table", WRITES, ids=[w[0].__name__[1:] for w in WRITES])
def test_require_single_user_mode_allows_every_write(single, tmp_path, write, permission, table):
    before = counts(single)[table]
    write(single, "someone", tmp_path)
    assert counts(single)[table] > before


def test_require_unknown_disabled_or_missing_user_refused(team):
    with pytest.raises(users.PermissionDenied, match="no account named 'mallory'"):
        users.require(team, "mallory", "annotate")
    with pytest.raises(users.PermissionDenied, match="needs a signed-in annotator"):
        users.require(team, None, "annotate")
    users.disable_user(team, "anna", by="root")
    with pytest.raises(users.PermissionDenied, match="'anna' is disabled"):
        users.require(team, "anna", "annotate")
    with pytest.raises(ValueError, match="unknown permission 'fly'"):
        users.require(team, "ada", "fly")


def test_add_user_first_account_must_be_admin(single):
    with pytest.raises(ValueError, match="first account must be an admin"):
        users.add_user(single, "anna", "annotator", by=None)
    assert not users.has_accounts(single)


def test_add_user_stores_salted_hash_and_one_time_flag(team):
    password = users.add_user(team, "otto", "viewer", by="root")
    row = catalog.user_row(team, "otto")
    assert len(password) == 16 and password not in row["password_hash"]
    assert row["password_hash"].startswith("$2b$04$") and row["must_change_password"]
    other = catalog.user_row(team, "vera")["password_hash"]  # same password, another salt
    assert other != catalog.user_row(team, "leo")["password_hash"]
    assert not catalog.user_row(team, "vera")["must_change_password"]
    with pytest.raises(ValueError, match="already exists"):
        users.add_user(team, "otto", "viewer", by="root")
    with pytest.raises(ValueError, match="unknown role 'owner'"):
        users.add_user(team, "olga", "owner", by="root")


def test_verify_right_wrong_unknown_and_disabled(team):
    assert users.verify(team, "leo", PASSWORD).role == "lead"
    assert users.verify(team, "leo", "wrong password") is None
    assert users.verify(team, "nobody", PASSWORD) is None
    users.disable_user(team, "leo", by="root")
    assert users.verify(team, "leo", PASSWORD) is None


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_sign_in_waits_after_repeated_failures_and_doubles_the_wait(team):
    clock = Clock()
    throttle = users.SignInThrottle(clock)
    for _ in range(users.FREE_SIGN_IN_FAILURES):
        assert users.sign_in(team, "leo", "wrong password", throttle=throttle) is None
    with pytest.raises(users.TooManySignIns) as refused:
        users.sign_in(team, "leo", PASSWORD, throttle=throttle)  # right, but not even checked
    assert refused.value.wait == pytest.approx(users.FIRST_SIGN_IN_WAIT_S)
    assert users.sign_in(team, "vera", PASSWORD, throttle=throttle).name == "vera"  # others go on
    clock.now += users.FIRST_SIGN_IN_WAIT_S
    assert users.sign_in(team, "leo", "wrong again", throttle=throttle) is None
    assert throttle.wait("leo") == pytest.approx(2 * users.FIRST_SIGN_IN_WAIT_S)
    clock.now += 2 * users.FIRST_SIGN_IN_WAIT_S
    assert users.sign_in(team, " leo ", PASSWORD, throttle=throttle).name == "leo"
    assert throttle.wait("leo") == 0  # a right password clears the count


def test_sign_in_throttles_unknown_names_alike_and_caps_the_wait(team):
    clock = Clock()
    throttle = users.SignInThrottle(clock)
    for _ in range(users.FREE_SIGN_IN_FAILURES + 20):
        assert users.sign_in(team, "nobody", PASSWORD, throttle=throttle) is None
        clock.now += users.MAX_SIGN_IN_WAIT_S
    assert throttle.wait("nobody") == pytest.approx(0)
    users.sign_in(team, "nobody", PASSWORD, throttle=throttle)
    assert throttle.wait("nobody") == pytest.approx(users.MAX_SIGN_IN_WAIT_S)


def test_change_password_clears_one_time_flag(team):
    one_time = users.add_user(team, "otto", "viewer", by="root")
    with pytest.raises(users.PermissionDenied, match="current password is wrong"):
        users.change_password(team, "otto", "guess", "a new password")
    with pytest.raises(ValueError, match="too short"):
        users.change_password(team, "otto", one_time, "short")
    users.change_password(team, "otto", one_time, "a new password")
    assert users.verify(team, "otto", one_time) is None
    assert not users.verify(team, "otto", "a new password").must_change_password


def test_last_admin_cannot_be_demoted_or_disabled(single):
    users.add_user(single, "root", "admin", by=None, password=PASSWORD)
    with pytest.raises(ValueError, match="last active admin"):
        users.set_role(single, "root", "lead", by="root")
    with pytest.raises(ValueError, match="last active admin"):
        users.disable_user(single, "root", by="root")
    users.add_user(single, "ada", "admin", by="root", password=PASSWORD)
    users.set_role(single, "root", "lead", by="ada")
    assert catalog.user_row(single, "root")["role"] == "lead"


def test_create_first_admin_only_once(single):
    password = users.create_first_admin(single)
    assert users.verify(single, "admin", password).must_change_password
    assert users.create_first_admin(single) is None
    assert list(users.list_users(single)["name"]) == ["admin"]


def test_user_changes_recorded_with_author(team):
    users.set_role(team, "vera", "annotator", by="ada")
    rows = team.execute("""SELECT name, action, detail, author FROM user_events
        WHERE name = 'vera' ORDER BY user_event_id""").fetchall()
    assert rows == [("vera", "add", "viewer", "root"), ("vera", "set-role", "annotator", "ada")]


# ---------------------------------------------------------------- command line


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_user_add_list_set_role_disable(template, tmp_path, capsys, monkeypatch):
    db = str(tmp_path / "cli.duckdb")
    shutil.copy(template, db)
    code, out, _ = run_cli(capsys, "user", "add", "root", "--role", "admin", "--db", db, "--json")
    assert code == 0 and len(json.loads(out)["password"]) == 16
    code, _, err = run_cli(capsys, "user", "add", "anna", "--role", "annotator", "--db", db)
    assert code == 2 and "--user" in err  # accounts exist now: the acting admin is named
    monkeypatch.setattr("sys.stdin", __import__("io").StringIO(PASSWORD + "\n"))
    code, out, _ = run_cli(capsys, "user", "add", "anna", "--role", "annotator",
                           "--password-stdin", "--user", "root", "--db", db)
    assert code == 0 and PASSWORD not in out
    code, _, _ = run_cli(capsys, "user", "set-role", "anna", "lead", "--user", "root", "--db", db)
    assert code == 0
    code, _, _ = run_cli(capsys, "user", "disable", "anna", "--user", "root", "--db", db)
    assert code == 0
    code, out, _ = run_cli(capsys, "user", "list", "--db", db, "--json")
    listed = {row["name"]: row for row in json.loads(out)}
    assert listed["anna"]["role"] == "lead" and not listed["anna"]["active"]
    assert listed["root"]["must_change_password"] and "password_hash" not in listed["root"]
    code, _, err = run_cli(capsys, "user", "disable", "root", "--user", "anna", "--db", db)
    assert code == 2 and "disabled" in err


# ---------------------------------------------------------------- the dashboard (AppTest)


def open_app(db, monkeypatch):
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("SIEVE_DB", str(db))
    at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "app.py"),
                           default_timeout=60)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def sign_in(at, name: str, password: str):
    at.text_input(key="sign_in_name").input(name)
    at.text_input(key="sign_in_password").input(password)
    at.button[0].click().run()
    assert not at.exception, [e.value for e in at.exception]
    return at


@pytest.fixture
def team_db(template, tmp_path):
    """A copy of the pets catalog with `admin` (one-time password, returned) and vera (viewer)."""
    db = tmp_path / "team.duckdb"
    shutil.copy(template, db)
    con = catalog.open_catalog(db, program="pytest")
    one_time = users.create_first_admin(con)
    users.add_user(con, "vera", "viewer", by="admin", password=PASSWORD)
    con.close()
    return db, one_time


def test_app_sign_in_forced_password_change_and_sign_out(team_db, monkeypatch):
    db, one_time = team_db
    at = open_app(db, monkeypatch)
    assert at.title[0].value == "Sign in to Sieve" and not at.sidebar.selectbox
    sign_in(at, "admin", "not the password")
    assert "Wrong name or password" in at.error[0].value
    sign_in(at, "admin", one_time)
    assert at.title[0].value == "Choose your password"
    at.text_input(key="password_old").input(one_time)
    at.text_input(key="password_new").input("a fresh password")
    at.text_input(key="password_again").input("a fresh password")
    at.button[0].click().run()
    assert not at.exception and at.session_state["user"] == "admin"
    assert "Signed in as **admin** · admin" in [m.value for m in at.sidebar.markdown]
    assert not [t for t in at.sidebar.text_input if t.label == "You are"]
    at.sidebar.button(key="sign_out").click().run()
    assert at.title[0].value == "Sign in to Sieve"


def test_app_sign_in_refused_after_repeated_failures(team_db, monkeypatch):
    db, _ = team_db
    monkeypatch.setattr(users, "SIGN_INS", users.SignInThrottle())
    at = open_app(db, monkeypatch)
    for _ in range(users.FREE_SIGN_IN_FAILURES):
        sign_in(at, "vera", "not the password")
    sign_in(at, "vera", PASSWORD)  # the right password, refused while vera must wait
    assert "Too many failed sign-ins" in at.error[0].value
    assert at.title[0].value == "Sign in to Sieve" and "user" not in at.session_state


def test_app_viewer_sees_no_lead_pages(team_db, monkeypatch):
    db, _ = team_db
    at = sign_in(open_app(db, monkeypatch), "vera", PASSWORD)
    assert at.session_state["user"] == "vera" and at.title[0].value == "Overview"
    with pytest.raises(ValueError, match="Could not find a navigation page"):
        at.switch_page("pages/audit.py")


@pytest.mark.parametrize("page", ["pages/fix.py", "pages/audit.py", "pages/sql.py"])
def test_page_opened_directly_stops_at_sign_in(team_db, monkeypatch, page):
    """Streamlit runs a script from pages/ on its own when a fresh server's first visitor
    lands on its URL: the gate in ui.get_cursor still holds."""
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("SIEVE_DB", str(team_db[0]))
    at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / page), default_timeout=60)
    at.run()
    assert [t.value for t in at.title] == ["Sign in to Sieve"] and not at.dataframe


@pytest.mark.parametrize("page,what", [("pages/audit.py", "The audit log"),
                                       ("pages/sql.py", "The SQL console")])
def test_lead_page_opened_directly_by_a_viewer_refused(team_db, monkeypatch, page, what):
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("SIEVE_DB", str(team_db[0]))
    at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / page), default_timeout=60)
    at.session_state["sieve_account"] = "vera"  # signed in as a viewer
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.warning[0].value == f"{what} is open to the lead role and above."
    assert not at.dataframe and not at.text_area


def test_dashboard_first_start_creates_admin_only_when_asked(single, monkeypatch, capsys):
    import ui

    monkeypatch.delenv("SIEVE_ACCOUNTS", raising=False)
    ui._create_first_admin(single)
    assert not users.has_accounts(single)  # a personal catalog stays single-user
    monkeypatch.setenv("SIEVE_ACCOUNTS", "on")
    ui._create_first_admin(single)
    printed = capsys.readouterr().err
    password = printed.split("One-time password: ")[1].split()[0]
    assert users.verify(single, "admin", password).must_change_password
    ui._create_first_admin(single)  # the next start finds the account: nothing new
    assert "One-time password" not in capsys.readouterr().err
    assert list(users.list_users(single)["name"]) == ["admin"]


def test_accounts_page_admin_adds_and_changes_accounts(team_db, monkeypatch):
    db, one_time = team_db
    con = catalog.open_catalog(db, program="pytest")
    users.change_password(con, "admin", one_time, "a fresh password")
    at = sign_in(open_app(db, monkeypatch), "admin", "a fresh password")
    at.switch_page("pages/accounts.py").run()
    at.text_input(key="account_name").input("otto")
    at.selectbox(key="account_role").select("lead")
    at.button[0].click().run()
    assert not at.exception, [e.value for e in at.exception]
    password = at.success[0].value.split("`")[1]
    assert users.verify(con, "otto", password).role == "lead"
    at.selectbox(key="account_who").select("vera")
    at.selectbox(key="account_new_role").select("annotator")
    at.button(key="account_set_role").click().run()
    assert catalog.user_row(con, "vera")["role"] == "annotator"
    at.selectbox(key="account_who").select("admin")
    at.button(key="account_disable").click().run()
    assert "last active admin" in at.error[0].value
    assert catalog.user_row(con, "admin")["active"]
    con.close()


def test_accounts_page_refused_to_a_lead(team_db, monkeypatch):
    db, _ = team_db
    con = catalog.open_catalog(db, program="pytest")
    users.add_user(con, "leo", "lead", by="admin", password=PASSWORD)
    con.close()
    at = sign_in(open_app(db, monkeypatch), "leo", PASSWORD)
    with pytest.raises(ValueError, match="Could not find a navigation page"):
        at.switch_page("pages/accounts.py")
    at.switch_page("pages/audit.py").run()  # a lead's pages are there
    assert at.title[0].value == "Audit"
