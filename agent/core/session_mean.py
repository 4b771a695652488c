"""A session's own mean and spread of each bin, traded for the training material's (docs/LEARNING.md,
"A new voice").

A voice, a microphone and a room colour every word of a session alike: a deeper voice
puts its energy into lower mel bands, a cheap microphone drops a band, a hiss lifts the
floor and flattens the contrast. The words differ from one another, so over a few dozen
words of one session the mean and the spread (standard deviation) of each bin are mostly
that colouring. Each stimulus is rescaled from the session's running mean and spread to
those of what the encoder was trained on (`Autoencoder.input_mean`, `input_std`), so a
new voice in a new room reaches the encoder looking like the voices it learned on. No
label is read: it is the classic per-speaker mean and variance normalisation, done online.

The running figures start as the training ones, worth `prior` stimuli, and then follow
the session with a memory of about `window` stimuli. A session's first word is taken
as it is, and a change of speaker is followed within `window` words.

The training material is the reference itself, so it is never passed through a session:
the replay learns from plain stimuli, and what is heard afterwards (a test set, a live
microphone, `cdz recall`) goes through one.
"""

from __future__ import annotations

import numpy as np

from agent.core.autoencoder import Autoencoder
from agent.core.config import SenseSettings


class SessionMean:
    """Running mean and spread of one session's stimuli; `__call__` returns them rescaled to the training ones."""

    def __init__(self, reference: np.ndarray, spread: np.ndarray, prior: float, window: int):
        if prior <= 0 or window < 1:
            raise ValueError(f"a session needs prior > 0 and window >= 1, got prior={prior}, window={window}")
        reference, spread = np.asarray(reference, np.float64), np.asarray(spread, np.float64)
        if reference.shape != spread.shape:
            raise ValueError(f"reference {reference.shape} and spread {spread.shape} differ in shape")
        if not (np.all(np.isfinite(reference)) and np.all(np.isfinite(spread)) and np.all(spread >= 0)):
            raise ValueError("the reference mean and spread must be finite (and the spread >= 0)")
        self.reference, self.spread = reference, spread
        self.prior = float(prior)
        self.window = int(window)
        self.reset()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Stimuli (n, *shape) in the order heard -> float32 stimuli in [0, 1]; each is rescaled by the
        mean and spread of the ones before it (itself excluded), then counted into them. A row with NaN
        or inf is returned as it is and not counted."""
        x = self._checked(x)
        out = np.empty_like(x)
        for k, row in enumerate(x):  # a row with NaN is left as it is, for the encoder to refuse, and not counted
            out[k] = self._rescale(row)
            self.count(row[None])
        return out

    def settled(self, x: np.ndarray, delay: int | None = None) -> np.ndarray:
        """Stimuli in the order heard -> each rescaled by the figures the session reached `delay`
        stimuli after it (default: `window`), or at the end of `x`, whichever comes first.

        Why: a sleep teaches on what a session lived through. Its first words were heard before the
        session knew the voice; taught as heard, the encoder learns them in a place the voice's later
        words never go. Rescaled as the settled session hears, every word is taught where the session
        puts that voice now. The session itself goes on counting the rows, as `__call__` does."""
        x = self._checked(x)
        delay = self.window if delay is None else int(delay)
        out = np.empty_like(x)
        for k in range(len(x) + delay):
            if k >= delay:  # row k - delay is rescaled by the figures after row k - 1
                out[k - delay] = self._rescale(x[k - delay])
            if k < len(x):
                self.count(x[k:k + 1])
        return out

    def _checked(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float32)
        if x.shape[1:] != self.reference.shape:
            raise ValueError(f"expected stimuli of shape (n, {', '.join(map(str, self.reference.shape))}), "
                             f"got {x.shape}")
        return x

    def rescale(self, x: np.ndarray) -> np.ndarray:
        """Stimuli rescaled by the session's figures as they are now, without counting them: what was
        heard already, heard again (a worker living its last stimuli again after a sleep)."""
        x = self._checked(x)
        return np.stack([self._rescale(row) for row in x]).astype(np.float32) if len(x) else x.copy()

    def _rescale(self, row: np.ndarray) -> np.ndarray:
        if not np.all(np.isfinite(row)):
            return row
        spread = np.sqrt(np.maximum(self.square - self.mean**2, _MIN_VARIANCE))
        return np.clip((row - self.mean) / spread * self.spread + self.reference, 0.0, 1.0)

    def count(self, x: np.ndarray) -> None:
        """Counts stimuli into the running figures without rescaling them (rows with NaN or inf are not)."""
        for row in np.asarray(x, np.float32):
            if not np.all(np.isfinite(row)):
                continue
            self.heard += 1
            rate = 1.0 / min(self.prior + self.heard, self.window)
            self.mean += rate * (row - self.mean)
            self.square += rate * (row.astype(np.float64) ** 2 - self.square)

    def reset(self) -> None:
        """A new session (another speaker, another room): back to the training mean and spread."""
        self.mean = self.reference.copy()  # float64: they sum many small steps
        self.square = self.spread**2 + self.reference**2  # the running mean of x^2
        self.heard = 0


_MIN_VARIANCE = 1e-6  # a bin that never changed in a session is not blown up past the [0, 1] clip


def heard_as_session(x: np.ndarray, model: Autoencoder, sense: SenseSettings, seed: int,
                     before: np.ndarray | None = None) -> np.ndarray:
    """A set of stimuli heard as one session in a seeded random order (a test set has no order of its
    own, and one sorted by class would make the average a class's); returned in the set's order.

    `before`: what the session heard earlier, in its order (a live agent that met this voice
    already); only the figures it leaves count."""
    session = session_for(model, sense)
    if session is None or len(x) == 0:
        return np.asarray(x, np.float32)
    if before is not None and len(before):
        session(np.asarray(before, np.float32))
    order = np.random.default_rng(seed).permutation(len(x))
    out = np.empty(np.shape(x), np.float32)
    out[order] = session(np.asarray(x)[order])
    return out


def lived_as_heard(x: np.ndarray, model: Autoencoder, sense: SenseSettings, settled: bool = True) -> np.ndarray:
    """What a sense lived through (stimuli as they arrived, in order) as a fresh session hears them:
    once settled (`SessionMean.settled`: what a sleep teaches on), or each at its moment. As it is
    when the sense keeps no session."""
    session = session_for(model, sense)
    if session is None or len(x) == 0:
        return np.asarray(x, np.float32)
    return session.settled(x) if settled else session(x)


def session_for(model: Autoencoder, sense: SenseSettings) -> SessionMean | None:
    """A fresh session for what one sense hears through `model`; None when the sense keeps none."""
    if sense.session_window == 0:
        return None
    return SessionMean(model.input_mean.numpy(), model.input_std.numpy(), sense.session_prior, sense.session_window)
