"""What the agent lived through: the raw stimuli it learned, with their event times.

Sleep (`agent.core.sleep`) teaches the encoders on this material, so a live agent
comes to hear its user's voice and read its user's hand. The buffer is bounded
(the oldest stimuli go first) and travels in the worker's checkpoint part as
plain arrays, so a killed process keeps everything up to its last checkpoint
and nothing is ever unpickled.
"""

from __future__ import annotations

import numpy as np

from agent.core.state_check import check_arrays, check_range

DEFAULT_CAPACITY = 10_000  # stimuli kept per sense


class Experience:
    """A ring buffer of one sense's stimuli and their event times (ns)."""

    def __init__(self, shape: tuple[int, ...], capacity: int = DEFAULT_CAPACITY, dtype=np.float32):
        if capacity < 1:
            raise ValueError(f"an experience buffer needs capacity >= 1, got {capacity}")
        self.shape = tuple(shape)
        self.capacity = capacity
        self.dtype = np.dtype(dtype)
        self._x: np.ndarray | None = None  # allocated at the first stimulus (lossless runs keep none)
        self._t = np.zeros(capacity, np.int64)
        self._next = 0  # slot of the next stimulus
        self.seen = 0  # stimuli ever added (the buffer keeps the last `capacity` of them)

    def __len__(self) -> int:
        return min(self.seen, self.capacity)

    def add(self, x: np.ndarray, t_ns: int) -> None:
        """Keep one stimulus; the oldest is forgotten once the buffer is full."""
        if x.shape != self.shape:
            raise ValueError(f"stimulus of shape {x.shape}, this buffer holds {self.shape}")
        if self._x is None:
            self._x = np.zeros((self.capacity, *self.shape), self.dtype)
        self._x[self._next] = x
        self._t[self._next] = t_ns
        self._next = (self._next + 1) % self.capacity
        self.seen += 1

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(stimuli, event times in ns), oldest first (copies)."""
        return self.newest(len(self))

    def newest(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The newest `n` (at most all kept) stimuli and event times, oldest first (copies)."""
        n = min(max(n, 0), len(self))
        if self._x is None or n == 0:
            return np.zeros((0, *self.shape), self.dtype), np.zeros(0, np.int64)
        order = (np.arange(len(self) - n, len(self)) + (self._next if self.seen >= self.capacity else 0)) % self.capacity
        return self._x[order], self._t[order]  # fancy indexing copies

    def clear(self) -> None:
        self._next, self.seen = 0, 0

    # ------------------------------------------------------------------ checkpoint
    def state_dict(self, prefix: str) -> dict[str, np.ndarray]:
        x, t = self.arrays()
        return {f"{prefix}.x": x, f"{prefix}.t_ns": t, f"{prefix}.seen": np.array(self.seen, np.int64)}

    def check_state(self, state: dict[str, np.ndarray], prefix: str) -> None:
        """Raise `StateError` unless the `prefix` arrays are a whole buffer of this shape (or all absent)."""
        if f"{prefix}.x" in state:
            shape = ("n", *self.shape)
            check_arrays(state, {f"{prefix}.x": (self.dtype.kind, shape), f"{prefix}.t_ns": ("i", ("n",)),
                                 f"{prefix}.seen": ("i", ())}, prefix, optional=frozenset({f"{prefix}.seen"}))
            if f"{prefix}.seen" in state:  # stimuli ever taken: at least the ones kept
                check_range(state[f"{prefix}.seen"].reshape(1), len(state[f"{prefix}.x"]), 2**62, "seen", prefix)

    def load_state_dict(self, state: dict[str, np.ndarray], prefix: str) -> None:
        """Restore from `state_dict` arrays; absent keys (nothing lived yet) leave it empty."""
        self.check_state(state, prefix)
        self.clear()
        if f"{prefix}.x" not in state:
            return
        x, t = state[f"{prefix}.x"], state[f"{prefix}.t_ns"]
        keep = min(len(x), self.capacity)
        if keep == 0:
            return
        if self._x is None:
            self._x = np.zeros((self.capacity, *self.shape), self.dtype)
        self._x[:keep] = x[len(x) - keep :]  # oldest first, from slot 0
        self._t[:keep] = t[len(t) - keep :]
        self._next = keep % self.capacity
        self.seen = self.seen_in(state, prefix)

    def seen_in(self, state: dict[str, np.ndarray], prefix: str) -> int:
        """How many stimuli a saved buffer had ever taken (what `seen` becomes once it is loaded)."""
        if f"{prefix}.x" not in state:
            return 0
        keep = min(len(state[f"{prefix}.x"]), self.capacity)
        return max(int(state.get(f"{prefix}.seen", keep)), keep) if keep == self.capacity else keep
