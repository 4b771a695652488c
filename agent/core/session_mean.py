"""A session's own average stimulus, traded for the training material's (docs/LEARNING.md, "A new voice").

A voice, a microphone and a room colour every word of a session alike: a deeper voice
puts its energy into lower mel bands, a cheap microphone drops a band, a fan lifts the
floor. The words differ from one another, so the average over a few dozen words of one
session is mostly that colouring. Each stimulus has the session's running average taken
off and the average of what the encoder was trained on (`Autoencoder.input_mean`) put
back, so a new voice reaches the encoder looking like the voices it learned on. No label
is read: it is the classic per-speaker mean normalisation, done online.

The running average starts as the training average, worth `prior` stimuli, and then
follows the session with a memory of about `window` stimuli. A session's first word is
barely changed, and a change of speaker is followed within `window` words.

The training material is the reference itself, so it is never passed through a session:
the replay learns from plain stimuli, and what is heard afterwards (a test set, a live
microphone, `cdz recall`) goes through one.
"""

from __future__ import annotations

import numpy as np

from agent.core.autoencoder import Autoencoder
from agent.core.config import SenseSettings


class SessionMean:
    """Running average of one session's stimuli; `__call__` returns them with it swapped for the reference."""

    def __init__(self, reference: np.ndarray, prior: float, window: int):
        if prior <= 0 or window < 1:
            raise ValueError(f"a session needs prior > 0 and window >= 1, got prior={prior}, window={window}")
        reference = np.asarray(reference, np.float64)
        if not np.all(np.isfinite(reference)):
            raise ValueError("the reference average contains NaN or infinite values")
        self.reference = reference
        self.prior = float(prior)
        self.window = int(window)
        self.mean = reference.copy()  # the session's running average (float64: it sums many small steps)
        self.heard = 0

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Stimuli (n, *shape) in the order heard -> float32 stimuli in [0, 1]; each is corrected by the
        average of the ones before it (itself excluded), then counted into that average. A row with NaN
        or inf is returned as it is and not counted."""
        x = np.asarray(x, np.float32)
        if x.shape[1:] != self.reference.shape:
            raise ValueError(f"expected stimuli of shape (n, {', '.join(map(str, self.reference.shape))}), "
                             f"got {x.shape}")
        out = np.empty_like(x)
        for k, row in enumerate(x):
            if not np.all(np.isfinite(row)):  # left as it is, for the encoder to refuse; the average stays clean
                out[k] = row
                continue
            out[k] = np.clip(row - self.mean + self.reference, 0.0, 1.0)
            self.heard += 1
            self.mean += (row - self.mean) / min(self.prior + self.heard, self.window)
        return out

    def reset(self) -> None:
        """A new session (another speaker, another room): back to the reference."""
        self.mean = self.reference.copy()
        self.heard = 0


def heard_as_session(x: np.ndarray, model: Autoencoder, sense: SenseSettings, seed: int) -> np.ndarray:
    """A set of stimuli heard as one session in a seeded random order (a test set has no order of its
    own, and one sorted by class would make the average a class's); returned in the set's order."""
    session = session_for(model, sense)
    if session is None or len(x) == 0:
        return np.asarray(x, np.float32)
    order = np.random.default_rng(seed).permutation(len(x))
    out = np.empty(np.shape(x), np.float32)
    out[order] = session(np.asarray(x)[order])
    return out


def session_for(model: Autoencoder, sense: SenseSettings) -> SessionMean | None:
    """A fresh session for what one sense hears through `model`; None when the sense keeps none."""
    if sense.session_window == 0:
        return None
    return SessionMean(model.input_mean.numpy(), sense.session_prior, sense.session_window)
