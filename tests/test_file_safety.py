"""File and input safety: image files are read only inside their dataset's root (a path that
climbs out is refused and logged), URL parameters are validated, user text reaches SQL only as
bound values, and the server's deployment settings (.streamlit/config.toml) are the safe ones."""
from __future__ import annotations

import logging
import tomllib
from pathlib import Path

import pytest

import ui
from core import audit, catalog, queues
from core.ingest import ingest
from tests.fixtures import write_png

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def pets(tmp_path):
    """A dataset 'pets' (cat/0.png) beside a secret image outside its folder."""
    write_png(tmp_path / "pets" / "cat" / "0.png", 8, 8)
    write_png(tmp_path / "secret.png", 8, 8, seed=3)
    con = catalog.open_catalog(tmp_path / "catalog.duckdb", program="pytest")
    ingest(con, tmp_path / "pets", fmt="imagefolder", dataset="pets", workers=1)
    yield con, catalog.find_dataset(con, "pets")
    con.close()


def test_dataset_file_inside_root(tmp_path):
    root = str(tmp_path / "pets")
    assert catalog.dataset_file(root, "cat/0.png") == str(tmp_path / "pets" / "cat" / "0.png")
    raw = b"caf\xe9.png"  # not UTF-8: the raw bytes are joined
    assert catalog.dataset_file(root, "caf\\xe9.png", raw) == bytes(tmp_path / "pets") + b"/" + raw
    assert catalog.dataset_file(root, "cat/../cat/0.png").endswith("/pets/cat/0.png")


@pytest.mark.parametrize("path", ["../secret.png", "cat/../../secret.png", "/etc/passwd",
                                  "../pets-other/0.png"])
def test_dataset_file_outside_root_refused_and_logged(tmp_path, caplog, path):
    with caplog.at_level(logging.WARNING, logger="sieve.files"):
        with pytest.raises(catalog.PathOutsideRoot, match="outside the dataset folder"):
            catalog.dataset_file(str(tmp_path / "pets"), path)
    assert f"refused to read {path!r}" in caplog.text


def test_dataset_file_raw_bytes_outside_root_refused(tmp_path):
    with pytest.raises(catalog.PathOutsideRoot):
        catalog.dataset_file(str(tmp_path / "pets"), "x.png", b"../secret.png")


def test_thumbnail_outside_root_not_read(pets, tmp_path, caplog):
    _, dataset = pets
    assert ui._thumbnail_png(dataset.root, "cat/0.png", None, 16) is not None
    with caplog.at_level(logging.WARNING, logger="sieve.files"):
        assert ui._thumbnail_png(dataset.root, "../secret.png", None, 16) is None
    assert "refused to read '../secret.png'" in caplog.text


def test_annotation_file_path_outside_source_refused(pets, tmp_path):
    con, _ = pets
    write_png(tmp_path / "birds" / "owl.png", 8, 8, seed=5)
    labels = tmp_path / "birds.csv"
    labels.write_text("image,label\nowl.png,owl\n../secret.png,cat\n")
    summary = ingest(con, tmp_path / "birds", fmt="csv", labels=labels, dataset="birds", workers=1)
    paths = [r[0] for r in con.execute("SELECT path FROM images i JOIN datasets d USING "
                                       "(dataset_id) WHERE d.name = 'birds'").fetchall()]
    assert paths == ["owl.png"] and summary.problems.get("refused") == 1


@pytest.mark.parametrize("key", ["../../etc/passwd", "1/all?split=a&root=/etc", "1/stored/x",
                                 "1/flagged?split=train", "1/all/../../x", "1; DROP TABLE images"])
def test_queue_url_parameter_validated(key):
    with pytest.raises(ValueError, match="not a queue"):
        queues.parse_queue_key(key)


def test_user_text_in_filters_is_a_bound_value(pets):
    con, dataset = pets
    quote = "x' OR '1'='1"
    spec = queues.parse_queue_key(f"{dataset.dataset_id}/all?annotator=x%27+OR+%271%27%3D%271")
    assert spec.annotator == quote
    assert queues.queue_images(con, spec).empty
    found = audit.audit_page(con, audit.AuditFilter(who=quote))
    assert found.total == 0 and catalog._one(con.execute("SELECT count(*) FROM images"))[0] == 1


def test_streamlit_config_is_safe_by_default():
    config = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text())
    server = config["server"]
    assert server["address"] == "127.0.0.1"  # reachable only through a proxy on the same host
    assert server["enableXsrfProtection"] is True
    assert 0 < server["maxUploadSize"] <= 200  # megabytes
    assert server.get("enableCORS", True) is True  # Streamlit's default: cross-origin refused
    assert config["browser"]["gatherUsageStats"] is False
