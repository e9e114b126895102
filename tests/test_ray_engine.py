"""The Ray engine (core.rayengine) on a cluster of two nodes started on this machine by the tests:
ingest records the same catalog as the local engine, row for row (fixture images and the 10,000
CIFAR-10 test images), ends complete when a worker node dies mid-ingest, and micro-model
inference gives the local engine's predictions. Errors are messages, not stack traces."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core import autolabel, catalog, rayengine, suspects
from core.__main__ import main
from core.ingest import ingest
from tests.fixtures import open_test_catalog, write_broken_images, write_good_images
from tests.test_autolabel import (FAST, _cli, catalog_file, request,  # noqa: F401 — fixtures
                                  world)

REPO = Path(__file__).resolve().parent.parent
NODE = {"num_cpus": 1, "object_store_memory": 80 << 20}  # bytes: Ray's smallest store is 75 MB
KILL_AT = 2560  # images recorded when the worker node is killed (10 of 40 chunks)


def _ray():
    """The `ray` module; its absence fails under CI (the Makefile installs it), else skips."""
    try:
        import ray
    except ImportError:
        if os.environ.get("CI") == "true":
            pytest.fail("ray is not installed: pip install -r requirements-ray.txt")
        pytest.skip("ray is not installed (requirements-ray.txt)")
    return ray


@pytest.fixture(scope="module")
def cluster():
    """A Ray head and a second node on this machine, one CPU each; this process is the driver."""
    from ray.cluster_utils import Cluster

    _ray()
    started = Cluster(initialize_head=True,
                      head_node_args={**NODE, "include_dashboard": False})
    started.add_node(**NODE)
    started.wait_for_nodes()
    yield started
    rayengine.disconnect()
    started.shutdown()


def catalog_rows(con) -> dict[str, list]:
    """What an ingest recorded, without the times of the run: images, file events, labels."""
    queries = {
        "images": "SELECT * EXCLUDE (ingested_at) FROM images ORDER BY image_id",
        "file_events": "SELECT image_id, event, old_sha256, new_sha256 FROM file_events "
                       "ORDER BY image_id, event",
        "labels": "SELECT image_id, class_id, annotator_id FROM label_events "
                  "ORDER BY image_id, class_id"}
    return {name: con.execute(sql).fetchall() for name, sql in queries.items()}


def cifar_labels(data: Path, out: Path) -> Path:
    """cifar10-test's labels.csv (index, label_id, label_name) as image,label rows."""
    table = pd.read_csv(data / "cifar10-test" / "labels.csv")
    pd.DataFrame({"image": [f"{i:05d}.png" for i in table["index"]],
                  "label": table["label_name"]}).to_csv(out, index=False)
    return out


def ingest_cifar(folder: Path, data: Path, **options):
    """(connection, summary) of the CIFAR-10 test images ingested into a new catalog."""
    con = open_test_catalog(folder)
    summary = ingest(con, data / "cifar10-test" / "images", fmt="csv",
                     labels=cifar_labels(data, folder / "labels.csv"), dataset="cifar10-test",
                     **options)
    return con, summary


@pytest.fixture(scope="module")
def local_cifar(shared_data, tmp_path_factory) -> dict[str, list]:
    """The CIFAR-10 test catalog the local engine records."""
    con, summary = ingest_cifar(tmp_path_factory.mktemp("local"), shared_data, workers=2)
    assert summary.added == 10000
    rows = catalog_rows(con)
    con.close()
    return rows


def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# ---------------------------------------------------------------- errors, without a cluster


def test_check_engine_unknown_engine_is_named():
    with pytest.raises(rayengine.RayEngineError, match="unknown engine 'spark'"):
        rayengine.check_engine("spark")


def test_connect_without_ray_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(rayengine.RayEngineError, match="pip install -r requirements-ray.txt"):
        rayengine.connect("127.0.0.1:6379")


@pytest.fixture
def disconnected():
    """This process off any cluster (a process uses one cluster at a time)."""
    _ray()
    rayengine.disconnect()


def test_connect_unreachable_address_fails_fast_with_the_address(disconnected):
    address = f"127.0.0.1:{free_port()}"
    with pytest.raises(rayengine.RayEngineError,
                       match=f"cannot reach the Ray cluster at {address}"):
        rayengine.connect(address)


def test_cli_ingest_engine_ray_unreachable_exits_2(disconnected, tmp_path, capsys):
    write_good_images(tmp_path / "images")
    code = main(["ingest", str(tmp_path / "images"), "--format", "imagefolder", "--engine", "ray",
                 "--ray-address", f"127.0.0.1:{free_port()}", "--db", str(tmp_path / "c.duckdb")])
    assert code == 2
    assert "error: cannot reach the Ray cluster at 127.0.0.1:" in capsys.readouterr().err


def test_local_engine_never_imports_ray():
    code = ("import sys, core.__main__, core.ingest, core.autolabel, core.suspects; "
            "print('ray' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "False"


# ---------------------------------------------------------------- on a two-node cluster


def test_ingest_ray_fixture_images_match_local(cluster, tmp_path):
    source = tmp_path / "images"
    write_good_images(source)
    write_broken_images(source)
    rows = {}
    for engine in ("local", "ray"):
        (tmp_path / engine).mkdir()
        con = open_test_catalog(tmp_path / engine)
        summary = ingest(con, source, fmt="imagefolder", dataset="fixture", workers=2,
                         engine=engine, ray_address=cluster.address)
        assert (summary.files, summary.unreadable) == (12, 5)
        rows[engine] = catalog_rows(con)
        con.close()
    assert rows["ray"] == rows["local"]


def test_ingest_ray_cifar10_test_matches_local_row_for_row(cluster, local_cifar, shared_data,
                                                           tmp_path):
    con, summary = ingest_cifar(tmp_path, shared_data, engine="ray", ray_address=cluster.address)
    assert (summary.added, summary.unreadable, summary.labels_added) == (10000, 0, 10000)
    rows = catalog_rows(con)
    assert len(rows["images"]) == 10000
    assert rows == local_cifar
    again = ingest(con, shared_data / "cifar10-test" / "images", fmt="csv",
                   labels=tmp_path / "labels.csv", dataset="cifar10-test", engine="ray",
                   ray_address=cluster.address)
    assert (again.added, again.unchanged, again.changed) == (0, 10000, 0)
    con.close()


def test_train_run_ray_predicts_as_local(cluster, world):
    con, dataset, _ = world
    probs = {}
    for engine in ("local", "ray"):
        run_id = autolabel.train_run(con, dataset, request(split="train", per_class=4),
                                     engine=engine, ray_address=cluster.address)
        predicted = catalog.run_predictions(con, run_id).sort_values("image_id")
        probs[engine] = np.stack(predicted["probs"].to_numpy())
    assert probs["ray"].shape == (13, 3)
    np.testing.assert_allclose(probs["ray"], probs["local"], rtol=0, atol=1e-6)
    assert (probs["ray"].argmax(axis=1) == probs["local"].argmax(axis=1)).all()


def test_find_label_issues_ray_matches_local(cluster, world):
    con, dataset, _ = world
    found = {engine: suspects.find_label_issues(con, dataset, split="train", train_split="test",
                                                config=FAST, engine=engine,
                                                ray_address=cluster.address)
             for engine in ("local", "ray")}
    assert found["ray"]["image"].iloc[0] == "wrong_green_as_red.png"
    assert found["ray"]["image"].tolist() == found["local"]["image"].tolist()
    np.testing.assert_allclose(found["ray"]["score"], found["local"]["score"], rtol=0, atol=1e-6)


@pytest.mark.parametrize("argv", [["train", "--split", "train", "--per-class", "4"],
                                  ["label-issues", "--split", "train", "--folds", "3"]])
def test_cli_inference_engine_ray_unreachable_exits_2(disconnected, catalog_file, capsys,
                                                      argv):
    code, _, err = _cli([*argv, "--db", catalog_file, "--engine", "ray", "--ray-address",
                         f"127.0.0.1:{free_port()}"], capsys)
    assert code == 2
    assert "error: cannot reach the Ray cluster at 127.0.0.1:" in err


def test_cli_train_detect_refuses_engine_ray(catalog_file, capsys):
    code, _, err = _cli(["train", "--task", "detect", "--engine", "ray", "--db", catalog_file],
                        capsys)
    assert code == 2
    assert "detection models train and predict on this machine only" in err


def test_cli_label_issues_engine_ray_ranks_the_wrong_label_first(cluster, catalog_file, capsys):
    code, out, _ = _cli(["label-issues", "--db", catalog_file, "--split", "train",
                         "--train-split", "test", "--engine", "ray", "--ray-address",
                         cluster.address, "--json"], capsys)
    assert code == 0
    assert json.loads(out)[0]["image"] == "wrong_green_as_red.png"


# ---------------------------------------------------------------- the dashboard


def test_overview_offers_no_engine_without_a_cluster(tmp_path, monkeypatch):
    from tests.test_pages import _app

    monkeypatch.delenv(rayengine.ADDRESS_VARIABLE, raising=False)
    at = _app(str(tmp_path / "fresh.duckdb"))
    assert "ingest_engine" not in [box.key for box in at.selectbox]


def test_overview_ingest_on_the_configured_cluster_runs_as_a_job(cluster, tmp_path, monkeypatch):
    import ui
    from tests.test_pages import _app, _tiny_folder, ingest_on_overview

    monkeypatch.setenv(rayengine.ADDRESS_VARIABLE, cluster.address)
    at = _app(str(tmp_path / "fresh.duckdb"))
    job_id = ingest_on_overview(at, _tiny_folder(tmp_path / "shapes"), engine="ray", timeout=120)
    job = catalog.job_row(ui.get_connection(), job_id)
    assert json.loads(job["params"])["engine"] == "ray"
    assert (job["status"], job["done"], job["total"]) == ("done", 7, 7)


# ---------------------------------------------------------------- a node killed mid-ingest
# Last in the module: Ray prints the dead node's notice to stdout a few seconds later, and the
# cluster's teardown right after this test stops that (a CLI test's --json output would catch it).


def is_busy(node) -> bool:
    """Whether the node's CPU is leased to a task: Ray's per-node view of what is free, where a
    resource fully in use is left out."""
    from ray._private.state import available_resources_per_node

    free = available_resources_per_node()
    return node.node_id in free and free[node.node_id].get("CPU", 0) == 0


def test_ingest_ray_worker_node_killed_mid_ingest_ends_complete(cluster, local_cifar,
                                                                shared_data, tmp_path):
    doomed = cluster.add_node(**NODE)
    cluster.wait_for_nodes()
    seen, killed_at = [], []  # (done, total) of every progress report; done at the kill

    def progress(done: int, total: int, message: str = "") -> None:
        if message == "reading images" and done >= KILL_AT and not killed_at and is_busy(doomed):
            cluster.remove_node(doomed, allow_graceful=False)  # with a task running there
            killed_at.append(done)
        seen.append((done, total))

    con, summary = ingest_cifar(tmp_path, shared_data, engine="ray", ray_address=cluster.address,
                                progress=progress)
    assert killed_at and killed_at[0] < 10000  # the node died mid-ingest, while busy
    done = [d for d, _ in seen]
    assert done == sorted(done) and done[-1] == 10000  # the bar kept counting to the end
    assert (summary.added, summary.unreadable) == (10000, 0)
    (distinct,) = con.execute("SELECT count(DISTINCT path) FROM images").fetchone()
    assert distinct == 10000
    assert catalog_rows(con) == local_cifar
    con.close()
