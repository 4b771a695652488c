"""A supervised classifier of raw stimuli, used only to score generated ones.

"Generation accuracy" decodes a recalled cluster into an image or spectrogram and
asks a judge to name it; the judge never sees encodings and takes no part in
learning. It is a small CNN: conv-ReLU-maxpool blocks until the larger side is
about 8 (two blocks for 28x28, three for 64x64), then a two-layer head. Training
uses random shifts of a few pixels (time frames / mel bands for spectrograms),
which makes it robust to the slightly off-centre, blurry stimuli that decoders make.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from agent.core.storage import load_torch, save_torch


class Judge(nn.Module):
    """(n, H, W) stimuli -> (n, n_classes) logits; `classes` maps output index -> label."""

    def __init__(self, input_shape: tuple[int, int], classes: list[int]):
        super().__init__()
        self.input_shape = (int(input_shape[0]), int(input_shape[1]))
        H, W = self.input_shape
        if len(classes) < 2 or len(set(classes)) != len(classes):
            raise ValueError(f"need at least 2 distinct classes, got {classes}")
        self.register_buffer("classes", torch.tensor(classes, dtype=torch.int64))  # (k,)
        n_blocks = max(1, math.ceil(math.log2(max(H, W) / 8)))
        chans = [1] + [min(16 * 2**i, 64) for i in range(n_blocks)]  # 28x28: 16, 32; 64x64: 16, 32, 64
        layers: list[nn.Module] = []
        for a, b in zip(chans, chans[1:]):
            layers += [nn.Conv2d(a, b, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True)]
        h, w = H, W
        for _ in range(n_blocks):
            h, w = math.ceil(h / 2), math.ceil(w / 2)
        self.net = nn.Sequential(
            *layers, nn.Flatten(), nn.Dropout(0.3), nn.Linear(chans[-1] * h * w, 128), nn.ReLU(),
            nn.Dropout(0.3), nn.Linear(128, len(classes)),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.unsqueeze(1))  # (n, k)


def _check(x: np.ndarray, input_shape: tuple[int, int] | None = None) -> None:
    if x.ndim != 3 or len(x) < 1:
        raise ValueError(f"expected stimuli of shape (n, H, W) with n >= 1, got {tuple(x.shape)}")
    if input_shape is not None and tuple(x.shape[1:]) != tuple(input_shape):
        raise ValueError(f"judge expects (n, {input_shape[0]}, {input_shape[1]}), got {tuple(x.shape)}")
    if not np.isfinite(x).all():
        raise ValueError("stimuli contain NaN or infinite values")


def _shift(x: Tensor, max_shift: tuple[int, int], gen: torch.Generator) -> Tensor:
    """Move each stimulus (n, H, W) by a random whole number of rows and columns, filling with 0."""
    sh, sw = max_shift
    n, H, W = x.shape
    padded = F.pad(x, (sw, sw, sh, sh))  # (n, H + 2sh, W + 2sw)
    dy = torch.randint(0, 2 * sh + 1, (n, 1), generator=gen) + torch.arange(H)  # (n, H)
    dx = torch.randint(0, 2 * sw + 1, (n, 1), generator=gen) + torch.arange(W)  # (n, W)
    return padded[torch.arange(n)[:, None, None], dy[:, :, None], dx[:, None, :]]


def default_epochs(n: int) -> int:
    """About 150k samples seen, within [3, 20] epochs: 3 for MNIST (60k, 99.0%), 20 for FSDD (2.7k, 98.3%)."""
    return max(3, min(20, math.ceil(150_000 / n)))


def train_judge(
    x: np.ndarray,
    y: np.ndarray,
    seed: int,
    epochs: int | None = None,
    desc: str = "",
    progress: bool = True,
    max_shift: tuple[int, int] | None = None,
    batch_size: int = 64,
    lr: float = 2e-3,
) -> Judge:
    """Train on stimuli x (n, H, W) with any integer labels y (n,). Deterministic per seed.

    epochs None: `default_epochs(n)`. max_shift None: about 7% of each side (2 pixels
    for 28x28, 5 for 64x64); (0, 0) turns augmentation off.
    """
    _check(x)
    y = np.asarray(y)
    if y.shape != (len(x),) or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"expected integer labels of shape ({len(x)},), got {y.dtype} {y.shape}")
    classes, targets = np.unique(y, return_inverse=True)
    H, W = x.shape[1:]
    epochs = default_epochs(len(x)) if epochs is None else epochs
    max_shift = max_shift or (math.ceil(0.07 * H), math.ceil(0.07 * W))
    torch.manual_seed(seed)
    judge = Judge((H, W), classes.tolist())
    gen = torch.Generator().manual_seed(seed)
    data, targets = torch.as_tensor(np.asarray(x, dtype=np.float32)), torch.as_tensor(targets)
    n, steps = len(data), epochs * math.ceil(len(data) / batch_size)
    opt = torch.optim.AdamW(judge.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(steps, 1), pct_start=0.15)
    judge.train()
    bar = tqdm(range(epochs), desc=desc or "judge", disable=not progress, leave=False)
    for _ in bar:
        order = torch.randperm(n, generator=gen)
        correct = 0
        for i in range(0, n, batch_size):
            idx = order[i : i + batch_size]
            xb = _shift(data[idx], max_shift, gen) if any(max_shift) else data[idx]
            logits = judge(xb)
            loss = F.cross_entropy(logits, targets[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            correct += (logits.argmax(1) == targets[idx]).sum().item()
        bar.set_postfix(train_acc=f"{correct / n:.3f}")
    judge.eval()
    return judge


@torch.no_grad()
def predict(judge: Judge, x: np.ndarray, batch_size: int = 2048) -> np.ndarray:
    """Stimuli (n, H, W) -> int64 labels (n,), in the caller's own label values."""
    _check(x, judge.input_shape)
    judge.eval()
    data = torch.as_tensor(np.asarray(x, dtype=np.float32))
    idx = torch.cat([judge(data[i : i + batch_size]).argmax(1) for i in range(0, len(data), batch_size)])
    return judge.classes[idx].numpy().astype(np.int64)


def save_judge(judge: Judge, path: Path) -> None:
    """Write weights, input shape and classes; a crash mid-write leaves any old file intact."""
    save_torch({"state_dict": judge.state_dict(), "input_shape": list(judge.input_shape),
                "classes": judge.classes.tolist()}, path)


def load_judge(path: Path) -> Judge:
    """Rebuild a judge from `save_judge`'s file alone (no pickled code is run)."""
    ckpt = load_torch(path, "judge")
    try:
        judge = Judge(tuple(ckpt["input_shape"]), list(ckpt["classes"]))
        judge.load_state_dict(ckpt["state_dict"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:  # foreign or mismatched file
        raise ValueError(f"{path} is not a readable judge checkpoint: {type(e).__name__}: {e}") from e
    judge.eval()
    return judge
