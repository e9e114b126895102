"""Shared fixtures: the real datasets (skipped outside CI when missing, a failure in CI)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.config import shared_data_dir  # noqa: E402


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (or ``SIEVE_SHARED_DATA``); in CI its absence is an error, elsewhere a skip."""
    path = shared_data_dir()
    if not (path / "README.md").exists():
        message = f"real datasets not found at {path} (set SIEVE_SHARED_DATA)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path
