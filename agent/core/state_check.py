"""Checks of a saved state before any of it is used: all or nothing.

A checkpoint file can be damaged, truncated by hand, or written by another
build. Each component declares the arrays its state holds (kind and shape, with
named dimensions that must agree across arrays) and checks its index ranges;
only a state that passes is loaded, so a bad file never leaves a component half
loaded and never turns into an IndexError deep inside the learning code.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

Shape = tuple[int | str, ...]  # an int is a fixed size, a str a named dimension shared between arrays


class StateError(ValueError):
    """A saved state whose arrays do not fit together; the message names the array."""


def check_arrays(state: Mapping[str, np.ndarray], spec: Mapping[str, tuple[str, Shape]], where: str,
                 dims: dict[str, int] | None = None, optional: frozenset[str] = frozenset()) -> dict[str, int]:
    """Check each `name: (kinds, shape)` of `spec` against `state`; return the named dimensions.

    `kinds` lists the numpy dtype kinds allowed ("f" float, "i" signed int, "b" bool).
    Named dimensions in `dims` are fixed beforehand (e.g. the encoding length).
    """
    dims = dict(dims or {})
    for name, (kinds, shape) in spec.items():
        if name not in state:
            if name in optional:
                continue
            raise StateError(f"{where}: array {name!r} is missing")
        arr = state[name]
        if not isinstance(arr, np.ndarray) or arr.dtype.kind not in kinds:
            raise StateError(f"{where}: array {name!r} has dtype {getattr(arr, 'dtype', type(arr))}, "
                             f"expected kind {kinds!r}")
        if arr.ndim != len(shape):
            raise StateError(f"{where}: array {name!r} has shape {arr.shape}, expected {len(shape)} dimensions")
        for axis, (size, want) in enumerate(zip(arr.shape, shape)):
            if isinstance(want, str):
                want = dims.setdefault(want, size)
            if size != want:
                raise StateError(f"{where}: array {name!r} has shape {arr.shape}; axis {axis} should be {want}")
        if arr.dtype.kind == "f" and name not in _MAY_BE_INFINITE and not np.isfinite(arr).all():
            raise StateError(f"{where}: array {name!r} holds NaN or infinite values")
    return dims


_MAY_BE_INFINITE = frozenset({"pos_sq", "t_max"})  # a free node slot has an infinite norm; a new CDZ has seen no time (-inf)


def check_range(values: np.ndarray, lo: int, hi: int, what: str, where: str) -> None:
    """Every value in [lo, hi), e.g. an index into another array."""
    if values.size and (int(values.min()) < lo or int(values.max()) >= hi):
        raise StateError(f"{where}: {what} must lie in [{lo}, {hi}), found [{int(values.min())}, {int(values.max())}]")


def check_ids(ids: np.ndarray, next_id: int, what: str, where: str) -> None:
    """Live ids (>= 0) are unique and below the next id to hand out; -1 marks a free slot."""
    check_range(ids, -1, max(next_id, 0), what, where)
    alive = ids[ids >= 0]
    if len(np.unique(alive)) != len(alive):
        raise StateError(f"{where}: {what} repeats an id")
