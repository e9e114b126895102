"""Where Sieve finds things: the shared real datasets, its working folder, the demo catalog.

Everything is overridable with an environment variable so that tests, CI and users can point
Sieve elsewhere without code changes.
"""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def shared_data_dir() -> Path:
    """The folder holding the real public datasets (``SIEVE_SHARED_DATA``, else ``../shared/data``)."""
    return Path(os.environ.get("SIEVE_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


def home_dir(*, create: bool = True) -> Path:
    """Sieve's working folder for catalogs and generated files (``SIEVE_HOME``, else ``.sieve/``),
    made when `create` (not merely to name a default: `--help` writes nothing)."""
    path = Path(os.environ.get("SIEVE_HOME", REPO_ROOT / ".sieve"))
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def default_catalog_path() -> Path:
    """The catalog the dashboard opens (``SIEVE_DB``, else the demo catalog); its folder is made
    when the catalog is (`core.catalog.open_catalog`)."""
    return Path(os.environ.get("SIEVE_DB", home_dir(create=False) / "demo.duckdb"))
