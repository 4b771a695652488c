"""cdz-agent: an unsupervised multimodal agent (autoencoders, growing node/cluster layers, a CDZ).

`Agent` (agent.api) is the Python entry point; it is imported on first use, so the
light processes that import `agent.core` or `agent.runtime` never load torch for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from agent.api import Agent, Recall


def __getattr__(name: str) -> Any:
    if name in ("Agent", "Recall", "Recalled"):
        from agent import api

        return getattr(api, name)
    raise AttributeError(f"module 'agent' has no attribute {name!r}")
