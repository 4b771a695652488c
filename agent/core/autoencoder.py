"""Denoising autoencoders that turn one stimulus (an image or a spectrogram) into a
short encoding and back.

Downstream, nodes classify encodings by Euclidean nearest neighbour, so what matters
is that encodings of the same digit lie close together and that decoding gives a
recognisable stimulus. Four architectures:

* "conv" (the default for both senses): a few strided convolutions down to about 8x8, then a linear map
  to the code; the decoder mirrors it with transposed convolutions. Chosen by
  measurement: on MNIST, 5 conv epochs give 96% 1-nearest-neighbour test accuracy
  on encodings and reconstruction MSE 0.004, against 85% and 0.028 for 2 MLP
  epochs that took longer; on FSDD (20 epochs each) 91% and 0.0024 against 85%
  and 0.0031. Light noise (std 0.05) beat 0.2 on FSDD and tied with 0 on MNIST.
* "mlp": the original design, image 784-2048-1024-256-64, spectrogram 4096-512-64.
* "linear": the optimal linear autoencoder (PCA), fitted in closed form in about a
  second. It gives purer nodes on the speakers it was fitted on, but once taught it
  hears new voices worse than "conv" (docs/RESULTS.md, "Whole agents per fold").

The code is a plain linear layer (no tanh, no normalisation): a bounded code squashes
distances near its bounds and a normalised code throws away the norm, both of which
hurt nearest-node matching. Measured scale after training: encoding norms of a few
tens (values of a few units per dimension), no outliers.

Defaults are tuned on MNIST (60k images: under a minute on 2 idle cores). Small sets such
as FSDD (2.7k spectrograms) need more gradient steps: use batch_size=32, epochs=20.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tqdm import tqdm

from agent.core import global_rng
from agent.core.config import AutoencoderSettings
from agent.core.storage import load_torch, save_torch
from agent.core.threads import check_stop


def _check_stimuli(x: np.ndarray | Tensor, input_shape: tuple[int, int] | None = None) -> None:
    """Raise a clear ValueError for anything that is not a finite (n, H, W) batch."""
    if x.ndim != 3 or x.shape[0] < 1:
        raise ValueError(f"expected stimuli of shape (n, H, W) with n >= 1, got {tuple(x.shape)}")
    if input_shape is not None and tuple(x.shape[1:]) != tuple(input_shape):
        raise ValueError(f"expected stimuli of shape (n, {input_shape[0]}, {input_shape[1]}), got {tuple(x.shape)}")
    finite = torch.isfinite(x).all() if isinstance(x, Tensor) else np.isfinite(x).all()
    if not finite:
        raise ValueError("stimuli contain NaN or infinite values")


class Autoencoder(nn.Module):
    """Encoder (n, H, W) -> (n, code_dim) and decoder (n, code_dim) -> (n, H, W) in [0, 1]."""

    def __init__(self, input_shape: tuple[int, int], settings: AutoencoderSettings):
        super().__init__()
        self.input_shape = (int(input_shape[0]), int(input_shape[1]))
        self.settings = settings
        H, W = self.input_shape
        if H < 1 or W < 1:
            raise ValueError(f"input_shape must be positive, got {input_shape}")
        # the mean and spread (std) of each bin over the stimuli it was trained on: a session's
        # are traded for them (agent.core.session_mean); saved with the weights
        self.register_buffer("input_mean", torch.zeros(H, W))
        self.register_buffer("input_std", torch.zeros(H, W))
        d = settings.code_dim
        if settings.arch == "identity":
            self.encoder = nn.Flatten()
            self.decoder = nn.Unflatten(1, (1, H, W))
            self.pad_hw = (H, W)
        elif settings.arch == "linear":
            # the optimal linear autoencoder (PCA), fitted in closed form by `train_autoencoder`
            self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(H * W, d))
            self.decoder = nn.Sequential(nn.Linear(d, H * W), nn.Unflatten(1, (1, H, W)))
            self.pad_hw = (H, W)
        elif settings.arch == "mlp":
            hidden = [2048, 1024, 256] if H * W <= 1024 else [512]  # the original sizes
            sizes = [H * W, *hidden]
            enc: list[nn.Module] = [nn.Flatten()]
            for a, b in zip(sizes, sizes[1:]):
                enc += [nn.Linear(a, b), nn.ReLU()]
            self.encoder = nn.Sequential(*enc, nn.Linear(sizes[-1], d))
            sizes = sizes[::-1]
            dec: list[nn.Module] = [nn.Linear(d, sizes[0]), nn.ReLU()]
            for a, b in zip(sizes, sizes[1:]):
                dec += [nn.Linear(a, b)] + ([nn.ReLU()] if b != H * W else [])
            self.decoder = nn.Sequential(*dec, nn.Unflatten(1, (1, H, W)))
            self.pad_hw = (H, W)
        else:
            # halve the resolution until the larger side is about 8: 28 -> 14 -> 7, 64 -> 32 -> 16 -> 8
            n_down = max(1, math.ceil(math.log2(max(H, W) / 8)))
            step = 2**n_down
            self.pad_hw = (math.ceil(H / step) * step, math.ceil(W / step) * step)
            h, w = self.pad_hw[0] // step, self.pad_hw[1] // step
            chans = [1] + [settings.channels * min(2**i, 4) for i in range(n_down)]
            enc = []
            for a, b in zip(chans, chans[1:]):
                enc += [nn.Conv2d(a, b, 4, stride=2, padding=1), nn.ReLU()]
            self.encoder = nn.Sequential(*enc, nn.Flatten(), nn.Linear(chans[-1] * h * w, d))
            rev = chans[::-1]
            dec = [nn.Linear(d, rev[0] * h * w), nn.ReLU(), nn.Unflatten(1, (rev[0], h, w))]
            for a, b in zip(rev, rev[1:]):
                dec += [nn.ConvTranspose2d(a, b, 4, stride=2, padding=1)] + ([nn.ReLU()] if b != 1 else [])
            self.decoder = nn.Sequential(*dec)

    @property
    def code_dim(self) -> int:
        """Length of one encoding (the stimulus size for "identity")."""
        H, W = self.input_shape
        return H * W if self.settings.arch == "identity" else self.settings.code_dim

    @property
    def learnable(self) -> bool:
        """False for "identity": nothing to train, teach or follow."""
        return self.settings.arch != "identity"

    def encode(self, x: Tensor) -> Tensor:
        """(n, H, W) -> (n, code_dim)."""
        H, W = self.input_shape
        x = x.unsqueeze(1)  # (n, 1, H, W)
        if self.settings.arch == "conv" and self.pad_hw != (H, W):
            x = F.pad(x, (0, self.pad_hw[1] - W, 0, self.pad_hw[0] - H))
        return self.encoder(x)

    def decode_logits(self, z: Tensor) -> Tensor:
        """(n, code_dim) -> (n, H, W) pre-sigmoid, for a numerically stable loss."""
        H, W = self.input_shape
        return self.decoder(z)[:, 0, :H, :W]

    def decode(self, z: Tensor) -> Tensor:
        """(n, code_dim) -> (n, H, W), in [0, 1] except for "identity"."""
        if self.settings.arch == "identity":
            return self.decode_logits(z)
        if self.settings.arch == "linear":
            return self.decode_logits(z).clamp(0.0, 1.0)  # a linear decoder predicts values, not logits
        return torch.sigmoid(self.decode_logits(z))

    def forward(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x))


def build_autoencoder(input_shape: tuple[int, int], settings: AutoencoderSettings) -> Autoencoder:
    return Autoencoder(input_shape, settings)


def as_input(data: np.ndarray) -> np.ndarray:
    """Stimulus pixels as an autoencoder takes them: uint8 images scale to [0, 1], the rest is float32."""
    if data.dtype == np.uint8:
        return data.astype(np.float32) / 255.0
    return data.astype(np.float32, copy=False)


def train_autoencoder(
    x: np.ndarray, settings: AutoencoderSettings, seed: int, desc: str = "", progress: bool = True
) -> tuple[Autoencoder, dict]:
    """Train a denoising autoencoder on stimuli x (n, H, W) in [0, 1].

    Loss: binary cross-entropy between the decoding of the corrupted input and the
    clean input (sharper reconstructions than MSE for [0, 1] data). Deterministic for
    a given seed: the seed sets the initial weights, the shuffling and the noise; after
    the initial weights it draws only from its own generator, so several senses can
    train at once in threads and get the same bits as one after the other.
    Returns the model (in eval mode) and {"losses": per-epoch mean loss, "seconds"}.
    """
    _check_stimuli(x)
    if settings.arch == "identity":  # nothing to fit; any finite values pass through
        model = build_autoencoder((x.shape[1], x.shape[2]), settings).eval()
        _keep_mean(model, x)
        return model, {"losses": [], "seconds": 0.0}
    if x.min() < 0 or x.max() > 1:
        raise ValueError(f"stimuli must lie in [0, 1], got [{x.min():.3g}, {x.max():.3g}]")
    with global_rng.TORCH:  # initial weights come from torch's global generator
        torch.manual_seed(seed)
        model = build_autoencoder((x.shape[1], x.shape[2]), settings)
    _keep_mean(model, x)
    if settings.arch == "linear":
        return _fit_pca(model, x)
    gen = torch.Generator().manual_seed(seed)
    data = torch.as_tensor(np.asarray(x, dtype=np.float32))  # (n, H, W)
    n, bs = len(data), settings.batch_size
    steps = settings.epochs * math.ceil(n / bs)
    opt = torch.optim.Adam(model.parameters(), lr=settings.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 0.5 * (1 + math.cos(math.pi * i / max(steps, 1))))
    losses: list[float] = []
    t0 = time.perf_counter()
    model.train()
    bar = tqdm(range(settings.epochs), desc=desc or "autoencoder", disable=not progress, leave=False)
    for _ in bar:
        order = torch.randperm(n, generator=gen)
        total = 0.0
        for i in range(0, n, bs):
            clean = data[order[i : i + bs]]  # (b, H, W)
            noisy = clean
            if settings.noise > 0:
                noisy = (clean + settings.noise * torch.randn(clean.shape, generator=gen)).clamp_(0, 1)
            loss = F.binary_cross_entropy_with_logits(model.decode_logits(model.encode(noisy)), clean)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(clean)
            check_stop()  # trained in a thread beside the other sense's: a stop ends it here
        losses.append(total / n)
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
    model.eval()
    return model, {"losses": losses, "seconds": time.perf_counter() - t0}


@torch.no_grad()
def _keep_mean(model: Autoencoder, x: np.ndarray) -> None:
    """Remember each bin's mean and spread over the training stimuli (in float64: the same bits in any thread)."""
    x = np.asarray(x)
    model.input_mean.copy_(torch.as_tensor(x.mean(axis=0, dtype=np.float64), dtype=torch.float32))
    model.input_std.copy_(torch.as_tensor(x.std(axis=0, dtype=np.float64), dtype=torch.float32))


@torch.no_grad()
def _fit_pca(model: Autoencoder, x: np.ndarray) -> tuple[Autoencoder, dict]:
    """Closed-form fit of the linear autoencoder: the top principal directions of x."""
    t0 = time.perf_counter()
    flat = torch.as_tensor(np.asarray(x, dtype=np.float32)).reshape(len(x), -1)  # (n, H*W)
    mean = flat.mean(0)
    _, _, vt = torch.linalg.svd(flat - mean, full_matrices=False)
    d = model.settings.code_dim
    basis = vt[:d]  # (d, H*W) orthonormal rows
    if basis.shape[0] < d:
        raise ValueError(f"a linear autoencoder needs at least {d} stimuli, got {len(x)}")
    enc, dec = model.encoder[1], model.decoder[0]
    enc.weight.copy_(basis)
    enc.bias.copy_(-(basis @ mean))
    dec.weight.copy_(basis.T)
    dec.bias.copy_(mean)
    model.eval()
    return model, {"losses": [], "seconds": time.perf_counter() - t0}


@torch.no_grad()
def encode(model: Autoencoder, x: np.ndarray) -> np.ndarray:
    """Stimuli (n, H, W) -> float32 encodings (n, code_dim), in eval mode.

    Always in chunks of exactly 8 rows (the last one padded), so a stimulus gets the
    same bits whether it is encoded alone (an encoder worker) or among 60,000 (the
    replay): BLAS rounds differently for other batch sizes, one row as well as
    thousands (measured: a taught linear encoder differed by up to 2e-6 between
    2,048-row and 1-row batches, and by 3.8e-6 between 1-row and 8-row ones; the conv
    encoder by 4.8e-7). Per stimulus, 8-row chunks are also about as fast as any size
    on one thread; a lone stimulus pays for the padding (conv: 0.44 ms, 0.21 ms unpadded).
    """
    _check_stimuli(x, model.input_shape)
    if model.training:  # eval() walks every module: 26 us, paid per stimulus by a live worker
        model.eval()
    data = torch.as_tensor(np.asarray(x, dtype=np.float32))
    return torch.cat([_encode_chunk(model, data[i : i + _ROWS]) for i in range(0, len(data), _ROWS)]).numpy()


_ROWS = 8


def _encode_chunk(model: Autoencoder, chunk: Tensor) -> Tensor:
    """Encode at most 8 rows, padded to exactly 8 (see `encode`)."""
    n = len(chunk)
    if n == _ROWS:
        return model.encode(chunk)
    pad = torch.zeros((_ROWS - n, *chunk.shape[1:]), dtype=chunk.dtype)
    return model.encode(torch.cat([chunk, pad]))[:n]


@torch.no_grad()
def decode(model: Autoencoder, z: np.ndarray, batch_size: int = 2048) -> np.ndarray:
    """Encodings (n, code_dim) -> float32 stimuli (n, H, W) (in [0, 1] but for "identity")."""
    d = model.code_dim
    if z.ndim != 2 or z.shape[1] != d or len(z) < 1:
        raise ValueError(f"expected encodings of shape (n, {d}) with n >= 1, got {tuple(z.shape)}")
    if not np.isfinite(z).all():
        raise ValueError("encodings contain NaN or infinite values")
    if model.training:
        model.eval()
    data = torch.as_tensor(np.asarray(z, dtype=np.float32))
    return torch.cat([model.decode(data[i : i + batch_size]) for i in range(0, len(data), batch_size)]).numpy()


def save_autoencoder(model: Autoencoder, path: Path) -> None:
    """Write weights, input shape and settings; a crash mid-write leaves any old file intact."""
    save_torch({"state_dict": model.state_dict(), "input_shape": list(model.input_shape),
                "settings": asdict(model.settings)}, path)


def load_autoencoder(path: Path) -> Autoencoder:
    """Rebuild an autoencoder from `save_autoencoder`'s file alone (no pickled code is run)."""
    ckpt = load_torch(path, "autoencoder")
    try:
        model = build_autoencoder(tuple(ckpt["input_shape"]), AutoencoderSettings(**ckpt["settings"]))
        model.load_state_dict(ckpt["state_dict"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:  # foreign or mismatched file
        raise ValueError(f"{path} is not a readable autoencoder checkpoint: {type(e).__name__}: {e}") from e
    model.eval()
    return model
