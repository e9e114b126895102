"""A catalog file that is corrupt, read-only or held by another process: the command line
(`stats`, `ingest`) and the dashboard (app.py under AppTest) say so in one clear line, show no
traceback, and leave the file's bytes as they were."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from core import catalog
from tests.fixtures import write_png

REPO = Path(__file__).resolve().parent.parent

# Runs one command line or one dashboard page view on argv[2] and prints what the user saw as
# JSON. With argv[3] == 'nobody' it first does the same on a good catalog (argv[4]) to load
# every module (the interpreter lives under /root, mode 700), then drops root's power to write
# any file.
RUNNER = r"""
import contextlib, io, json, os, sys, traceback
kind, db, who, warm, source = sys.argv[1:6]

def cli(path):
    from core.__main__ import main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([kind, *([source] if kind == 'ingest' else []), '--db', path,
                         '--workers', '1'] if kind == 'ingest' else [kind, '--db', path])
        except BaseException:
            traceback.print_exc()
            code = 'raised'
    return {'code': code, 'stdout': out.getvalue(), 'stderr': err.getvalue()}

def dashboard(path):
    from streamlit.testing.v1 import AppTest
    os.environ['SIEVE_DB'] = path
    app = AppTest.from_file('app.py', default_timeout=120).run()
    return {'errors': [e.value for e in app.error],
            'exceptions': [e.value for e in app.exception],
            'markdown': [m.value for m in app.markdown][:5]}

view = dashboard if kind == 'dashboard' else cli
if who == 'nobody':
    view(warm)
    os.setgid(65534)
    os.setuid(65534)
print(json.dumps(view(db)))
"""


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def folder():
    """A folder any user can read (the unprivileged runs need to), removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="sieve-faults-"))
    path.chmod(0o755)
    write_png(path / "src" / "cat" / "a.png", 8, 8)
    for part in (path / "src", path / "src" / "cat", path / "src" / "cat" / "a.png"):
        part.chmod(0o755)
    code = path / "code"  # the dashboard's files where that user may read them: the checkout
    code.mkdir()           # may sit in a folder only its owner can enter
    shutil.copy(REPO / "app.py", code / "app.py")
    for name in ("pages", "ui", "core", ".streamlit"):
        shutil.copytree(REPO / name, code / name, ignore=shutil.ignore_patterns("__pycache__"))
    for part in [code, *code.rglob("*")]:
        part.chmod(0o755 if part.is_dir() else 0o644)
    good = path / "good.duckdb"
    subprocess.run([sys.executable, "-m", "core", "ingest", str(path / "src"), "--db", str(good),
                    "--workers", "1"], cwd=REPO, check=True, capture_output=True, timeout=120)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def run(kind: str, db: Path, folder: Path, *, who: str = "me") -> dict:
    """What the user sees running `kind` ('stats', 'ingest' or 'dashboard') on `db`."""
    warm = folder / "warm.duckdb"
    if who == "nobody":
        shutil.copy(folder / "good.duckdb", warm)
    home = folder / "home"  # Sieve's own folder: the checkout's may not be open to that user
    home.mkdir(exist_ok=True)
    home.chmod(0o777)
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "HOME": str(folder), "SIEVE_HOME": str(home)}
    done = subprocess.run([sys.executable, "-c", RUNNER, kind, str(db), who, str(warm),
                           str(folder / "src")], cwd=folder / "code", capture_output=True, text=True,
                          timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def assert_one_clear_line(seen: dict, *words: str) -> None:
    """The user got one line naming the problem, and no traceback."""
    if "errors" in seen:  # the dashboard
        assert seen["exceptions"] == [], seen
        assert len(seen["errors"]) == 1, seen
        message = seen["errors"][0]
    else:
        assert seen["code"] in (2, 3), seen
        assert "Traceback" not in seen["stderr"], seen["stderr"]
        message = seen["stderr"].strip()
    assert "\n" not in message and message, message
    for word in words:
        assert word in message, message


# ---------------------------------------------------------------- corrupt


def corrupt_files(folder: Path) -> dict[str, Path]:
    """random bytes, and a good catalog cut to a fifth of its size."""
    random_bytes = folder / "random.duckdb"
    random_bytes.write_bytes(os.urandom(300_000))
    good = (folder / "good.duckdb").read_bytes()
    truncated = folder / "truncated.duckdb"
    truncated.write_bytes(good[: len(good) // 5])
    return {"random": random_bytes, "truncated": truncated}


@pytest.mark.parametrize("kind", ["stats", "ingest", "dashboard"])
@pytest.mark.parametrize("damage", ["random", "truncated"])
def test_corrupt_catalog_clear_message_nothing_written(folder, kind, damage):
    db = corrupt_files(folder)[damage]
    before = sha256(db)
    seen = run(kind, db, folder)
    assert_one_clear_line(seen, str(db), "damaged")
    assert sha256(db) == before
    assert not Path(str(db) + ".wal").exists()


# ---------------------------------------------------------------- read-only


def read_only_file(folder: Path) -> Path:
    db = folder / "read_only.duckdb"
    shutil.copy(folder / "good.duckdb", db)
    db.chmod(0o444)
    return db


def read_only_folder(folder: Path) -> Path:
    locked = folder / "locked"
    locked.mkdir(exist_ok=True)
    locked.chmod(0o755)
    db = locked / "catalog.duckdb"
    shutil.copy(folder / "good.duckdb", db)
    db.chmod(0o666)
    locked.chmod(0o555)
    return db


WHO = "nobody" if os.geteuid() == 0 else "me"  # root may write any file: test as another user


@pytest.mark.parametrize("kind", ["ingest", "dashboard"])
@pytest.mark.parametrize("make", [read_only_file, read_only_folder], ids=["file", "folder"])
def test_read_only_catalog_write_refused_clearly(folder, kind, make):
    db = make(folder)
    before = sha256(db)
    seen = run(kind, db, folder, who=WHO)
    assert_one_clear_line(seen, str(db), "read-only")
    assert sha256(db) == before


def test_read_only_catalog_still_readable(folder):
    db = read_only_file(folder)
    seen = run("stats", db, folder, who=WHO)
    assert seen["code"] == 0 and "a.png" not in seen["stderr"], seen
    assert "1 image (0 unreadable)" in seen["stdout"]


# ---------------------------------------------------------------- held by another process

HOLD = """
import sys, time
from core import catalog
con = catalog.open_catalog(sys.argv[1], program='the holder test process')
con.execute('CHECKPOINT')
print('holding', flush=True)
time.sleep(600)
"""


@pytest.fixture
def held(folder):
    """A catalog another process holds open for writing: (path, that process's pid)."""
    db = folder / "held.duckdb"
    shutil.copy(folder / "good.duckdb", db)
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(db)], cwd=REPO,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        time.sleep(0.2)
        yield db, holder.pid
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize("kind", ["stats", "ingest", "dashboard"])
def test_held_catalog_names_the_holder(held, folder, kind):
    db, pid = held
    before = sha256(db)
    seen = run(kind, db, folder)
    assert_one_clear_line(seen, str(db), "the holder test process", f"PID {pid}")
    assert sha256(db) == before
    if kind != "dashboard":
        assert seen["code"] == 3


def test_open_catalog_held_raises_catalog_busy(held):
    db, pid = held
    with pytest.raises(catalog.CatalogBusy, match=f"PID {pid}"):
        catalog.open_catalog(db, read_only=True)


def test_holder_note_lives_as_long_as_its_process(tmp_path):
    """The note naming the holder is there while a process holds the catalog, and gone when
    that process has ended: no stale notes beside catalogs."""
    db = tmp_path / "c.duckdb"
    note = tmp_path / "c.duckdb.holder.json"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(db)], cwd=REPO,
                              stdout=subprocess.PIPE, stdin=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        assert json.loads(note.read_text())["pid"] == holder.pid
    finally:
        holder.terminate()  # killed: its note stays until the next process replaces it
        holder.wait()
    closing = subprocess.run([sys.executable, "-c", "import sys; from core import catalog; "
                              "catalog.open_catalog(sys.argv[1]).close()", str(db)], cwd=REPO)
    assert closing.returncode == 0 and not note.exists()
