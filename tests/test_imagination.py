"""A live worker's imagination: a decoded mode is reused only while its node stays exactly put."""

from __future__ import annotations

import numpy as np
import torch

from agent.core.autoencoder import build_autoencoder
from agent.core.config import AutoencoderSettings, CortexSettings
from agent.core.cortex import Cortex
from agent.core.recollection import Imagination, imagine


def _model(seed: int):
    torch.manual_seed(seed)
    return build_autoencoder((28, 28), AutoencoderSettings(arch="conv", channels=4)).eval()


def test_a_mode_is_decoded_once_per_position_and_model_with_imagines_bits():
    rng = np.random.default_rng(0)
    model = _model(0)
    cortex = Cortex("visual", 64, CortexSettings(initial_nodes=3), epoch=100)
    for _ in range(3):  # seeding: three nodes, each with its own cluster
        cortex.fire(rng.normal(size=64).astype(np.float32))
    cid = int(cortex.alive_cluster_ids()[0])
    imagination = Imagination()

    first = imagination(cortex, model, cid)
    assert np.array_equal(first, imagine(cortex, model, [cid])[cid]) and not first.flags.writeable
    assert imagination(cortex, model, cid) is first and imagination.hits == 1  # nothing moved: not decoded again

    node = cortex.pos[cortex.node_slot[cortex.mode_node(cid)]]
    cortex.fire(node + 0.01)  # the cluster's own node moves a little towards this stimulus
    moved = imagination(cortex, model, cid)
    assert imagination.hits == 1 and not np.array_equal(moved, first)
    assert np.array_equal(moved, imagine(cortex, model, [cid])[cid])

    other = _model(1)  # a new encoder (a swap after a sleep): nothing decoded by the old one is reused
    assert np.array_equal(imagination(cortex, other, cid), imagine(cortex, other, [cid])[cid])
    assert imagination.hits == 1
    assert imagination(cortex, model, -1) is None  # a rejected stimulus's cluster
