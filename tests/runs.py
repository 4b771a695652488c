"""Small real run folders for tests (trained through the command line, as a user would).

Tiny runs set `senses.audio.encoder.arch=linear`: the default conv audio encoder is
chosen on FSDD's 2,700 words, and on the few dozen of a test it trains slower and
hears worse than the linear one (PCA, fitted in a second). `make demo` runs the default.
"""

from __future__ import annotations

from pathlib import Path

import pytest


def train_run(tmp_path_factory, data_dir: Path, settings: list[str], name: str = "tiny") -> Path:
    """A run folder trained with `--set` settings (for module fixtures; data from `data_dir`)."""
    from tools.cli import main

    out = tmp_path_factory.mktemp("runs") / name
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CDZ_DATA_DIR", str(data_dir))
        assert main(["train", "--quiet", "--out", str(out), *(a for s in settings for a in ("--set", s))]) == 0
    return out
