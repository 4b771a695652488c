"""The per-stimulus steps of the learning rules, as swappable kernels (docs/LEARNING.md steps 2-6).

`agent.core.cortex` and `agent.core.cdz` own the rules and their state; the arithmetic
each rule does per stimulus lives here as plain functions over that state's arrays,
in two implementations with the same signatures:

* `compiled`: numba, one compiled function per rule (the default, `runtime.kernels = "numba"`);
* `reference`: numpy, the code the rules were first written in (`runtime.kernels = "numpy"`).

Both compute the same rules; they may differ in the last bits (the compiled ones sum
in float64, numpy in float32), so over a long stream a near-tie can now and then
break the other way. The in-process brain and the distributed runtime load the same
kernels, so they stay bit-identical to each other.

numba is imported only when a compiled kernel is first called (`Kernels`): the light
processes (bus, sensors, viewer, top, player, recorder), and a reader of a trained
brain that learns nothing, never load a compiler. The compiled code is cached on disk
(numba's `cache=True`: next to the module, or where NUMBA_CACHE_DIR says).
"""

from __future__ import annotations

import functools
import importlib
from types import ModuleType

KERNELS = ("numba", "numpy")
NAMES = ("nearest", "fire", "feedback", "feedback_step", "connect", "strongest", "pair")  # what each module holds
_MODULES = {"numba": "agent.core.kernels.compiled", "numpy": "agent.core.kernels.reference"}


def certainty(max_weight: float, age: float, age_factor: float) -> float:
    """Certainty of a node or a CDZ row: max_weight^2 * min(age / age_factor, 1) (both kernels use this one)."""
    return max_weight * max_weight * min(age / age_factor, 1.0)


@functools.cache
def load(name: str) -> ModuleType:
    """The kernel module called `name` ("numba" or "numpy"); the compiled one ready to call (compiled, or
    read from the cache, once per process: not on the first stimulus)."""
    if name not in _MODULES:
        raise ValueError(f"runtime.kernels must be one of {list(KERNELS)}, not {name!r}")
    module = importlib.import_module(_MODULES[name])
    if name == "numba":
        module.warm_up()
    return module


class Kernels:
    """The kernels called `name`, loaded at the first call of one (each is then a plain attribute)."""

    def __init__(self, name: str):
        if name not in _MODULES:
            raise ValueError(f"runtime.kernels must be one of {list(KERNELS)}, not {name!r}")
        self.name = name

    def __getattr__(self, attr: str):  # noqa: ANN204 - only reached before the first load
        if attr not in NAMES:
            raise AttributeError(attr)
        self.ready()
        return getattr(self, attr)

    def ready(self) -> None:
        """Load (for numba: compile or read from the cache) now; a live process calls this at start, so
        its first stimulus does not wait."""
        if "fire" not in vars(self):
            module = load(self.name)
            for kernel in NAMES:
                setattr(self, kernel, getattr(module, kernel))
