"""Shared pytest fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The offline data folder (mnist/ and fsdd/): $CDZ_DATA_DIR or <repo>/../shared/data."""
    path = Path(os.environ.get("CDZ_DATA_DIR") or REPO.parent / "shared" / "data").expanduser().resolve()
    if not path.is_dir():
        pytest.fail(
            f"test data folder {path} does not exist: set CDZ_DATA_DIR to a folder "
            f"holding mnist/ (the 4 IDX .gz files) and fsdd/ (the 3000 FSDD wavs)",
            pytrace=False)
    return path


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Tests share 2 cores with pytest itself: one torch thread is faster and steadier."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Feature and judge caches go to a fresh folder: tests never read or fill the user's cache."""
    mp = pytest.MonkeyPatch()
    mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))
    mp.setenv("CDZ_NO_DOWNLOAD", "1")
    yield
    mp.undo()


@pytest.fixture
def thread_bus():
    """A bus forwarder in a background thread on free loopback ports; its address. Closed after the test."""
    import threading

    from tests.processes import bind_forwarder

    fwd, address = bind_forwarder()
    threading.Thread(target=fwd.run, daemon=True).start()
    try:
        yield address
    finally:
        fwd.close()

