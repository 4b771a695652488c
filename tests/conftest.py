"""Shared pytest fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The offline data folder (mnist/ and fsdd/): $CDZ_DATA_DIR or <repo>/../shared/data."""
    path = Path(os.environ.get("CDZ_DATA_DIR") or REPO.parent / "shared" / "data").expanduser()
    if not path.is_dir():
        pytest.fail(
            f"test data folder {path} does not exist: set CDZ_DATA_DIR to a folder "
            f"holding mnist/ (the 4 IDX .gz files) and fsdd/ (the 3000 FSDD wavs)",
            pytrace=False)
    return path
