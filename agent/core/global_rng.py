"""Locks around the process-wide random generators, so seeded work can run in threads.

Some libraries draw only from a global generator: torch's initial weights and kornia
from torch's, audiomentations from Python's `random` and numpy's legacy one. A job
that seeds such a generator and then draws from it holds its lock for that span, so
two senses learning at once each get the numbers of their own seed, the same bits
as one after the other. Work that draws from its own `torch.Generator` or
`numpy.random.Generator` needs no lock.
"""

from __future__ import annotations

import threading

TORCH = threading.Lock()  # torch.manual_seed ... draws from torch's default generator
PYTHON_NUMPY = threading.Lock()  # random.seed / np.random.seed ... draws from them
