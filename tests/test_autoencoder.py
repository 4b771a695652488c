import gzip

import numpy as np
import pytest
import torch

from agent.core.autoencoder import (
    AutoencoderSettings,
    build_autoencoder,
    decode,
    encode,
    load_autoencoder,
    save_autoencoder,
    train_autoencoder,
)

FAST = AutoencoderSettings(epochs=1, batch_size=64)


@pytest.fixture(scope="module")
def digits(data_dir) -> np.ndarray:
    """300 MNIST test images (n, 28, 28) in [0, 1] (no data: the conftest fails, never a skip)."""
    with gzip.open(data_dir / "mnist" / "t10k-images-idx3-ubyte.gz") as f:
        raw = np.frombuffer(f.read(), np.uint8, offset=16, count=300 * 784)
    return raw.reshape(300, 28, 28).astype(np.float32) / 255


@pytest.fixture(scope="module")
def trained(digits) -> tuple:
    return train_autoencoder(digits, FAST, seed=0, progress=False)


@pytest.mark.parametrize("arch", ["conv", "mlp"])
@pytest.mark.parametrize("shape", [(28, 28), (64, 64), (20, 37)])
def test_shapes_and_range(arch, shape):
    torch.manual_seed(0)
    model = build_autoencoder(shape, AutoencoderSettings(arch=arch, code_dim=16))
    x = np.random.default_rng(0).random((5, *shape), dtype=np.float32)
    z = encode(model, x)
    assert z.shape == (5, 16) and z.dtype == np.float32
    out = decode(model, z * 100)  # far outside the usual code range: still a valid stimulus
    assert out.shape == (5, *shape) and out.dtype == np.float32
    assert out.min() >= 0 and out.max() <= 1


def test_training_lowers_the_loss(digits):
    model, info = train_autoencoder(digits, AutoencoderSettings(epochs=3, batch_size=32), seed=0, progress=False)
    assert len(info["losses"]) == 3 and info["seconds"] > 0
    assert info["losses"][-1] < 0.9 * info["losses"][0]
    torch.manual_seed(0)
    untrained = build_autoencoder((28, 28), model.settings)
    mse = lambda m: np.mean((decode(m, encode(m, digits)) - digits) ** 2)
    assert mse(model) < 0.5 * mse(untrained)


def test_same_seed_same_encodings(digits, trained):
    model, _ = trained
    again, _ = train_autoencoder(digits, FAST, seed=0, progress=False)
    other, _ = train_autoencoder(digits, FAST, seed=1, progress=False)
    z = encode(model, digits)
    assert np.array_equal(z, encode(again, digits))
    assert not np.allclose(z, encode(other, digits))


def test_encoding_scale_is_sane(digits, trained):
    z = encode(trained[0], digits)
    assert np.isfinite(z).all() and np.abs(z).max() < 100


def test_save_load_round_trip(tmp_path, digits, trained):
    model, _ = trained
    path = tmp_path / "visual.pt"
    save_autoencoder(model, path)
    loaded = load_autoencoder(path)
    assert loaded.input_shape == (28, 28) and loaded.settings == model.settings
    z = encode(model, digits)
    assert np.array_equal(z, encode(loaded, digits))
    assert np.array_equal(decode(model, z), decode(loaded, z))
    assert [p.name for p in tmp_path.iterdir()] == ["visual.pt"]  # no temporary file left behind


def test_bad_input_raises(digits, trained):
    model, _ = trained
    nan = digits[:4].copy()
    nan[0, 3, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        encode(model, nan)
    with pytest.raises(ValueError, match="NaN"):
        train_autoencoder(nan, FAST, seed=0, progress=False)
    with pytest.raises(ValueError, match="shape"):
        encode(model, np.zeros((4, 64, 64), np.float32))
    with pytest.raises(ValueError, match="shape"):
        encode(model, np.zeros((28, 28), np.float32))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        train_autoencoder(digits * 255, FAST, seed=0, progress=False)
    with pytest.raises(ValueError, match="encodings"):
        decode(model, np.zeros((4, 63), np.float32))
    with pytest.raises(ValueError):
        AutoencoderSettings(arch="transformer")


def test_corrupt_or_mismatched_file_raises(tmp_path, trained):
    model, _ = trained
    path = tmp_path / "visual.pt"
    save_autoencoder(model, path)
    path.write_bytes(path.read_bytes()[:1000])  # truncated
    with pytest.raises(ValueError, match="not a readable autoencoder"):
        load_autoencoder(path)
    ckpt = {"state_dict": model.state_dict(), "input_shape": [64, 64], "settings": {"arch": "conv"}}
    torch.save(ckpt, path)  # weights for 28x28 claimed to be for 64x64
    with pytest.raises(ValueError, match="not a readable autoencoder"):
        load_autoencoder(path)
    with pytest.raises(FileNotFoundError):
        load_autoencoder(tmp_path / "missing.pt")


def test_linear_autoencoder_is_pca(digits, tmp_path):
    """The linear option fits the top principal directions in closed form."""
    settings = AutoencoderSettings(arch="linear", code_dim=16)
    model, info = train_autoencoder(digits, settings, seed=0, progress=False)
    z = encode(model, digits)
    # the code axes are orthonormal projections: decorrelated, variance falling with rank
    cov = np.cov(z, rowvar=False)
    off = cov - np.diag(np.diag(cov))
    assert np.abs(off).max() < 1e-3 * np.diag(cov).max()
    assert np.all(np.diff(np.diag(cov)) <= 1e-6 * np.diag(cov).max())
    # reconstructs much better than the mean image, and better with more components
    mse = float(((decode(model, z) - digits) ** 2).mean())
    mean_mse = float(((digits.mean(0) - digits) ** 2).mean())
    assert mse < 0.6 * mean_mse
    small, _ = train_autoencoder(digits, AutoencoderSettings(arch="linear", code_dim=4), seed=0, progress=False)
    assert float(((decode(small, encode(small, digits)) - digits) ** 2).mean()) > mse
    save_autoencoder(model, tmp_path / "lin.pt")
    np.testing.assert_array_equal(encode(load_autoencoder(tmp_path / "lin.pt"), digits), z)


def test_senses_trained_at_once_get_the_bits_of_one_after_the_other():
    """`replay.pipeline.train_encoders` trains the senses in threads: no draw may be shared."""
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(0)
    jobs = [(rng.random((256, 28, 28), dtype=np.float32), AutoencoderSettings(epochs=2, batch_size=64)),
            (rng.random((96, 64, 64), dtype=np.float32), AutoencoderSettings(epochs=2, batch_size=32))]
    alone = [train_autoencoder(x, s, seed=k, progress=False)[0] for k, (x, s) in enumerate(jobs)]
    with ThreadPoolExecutor(len(jobs)) as pool:
        futures = [pool.submit(train_autoencoder, x, s, seed=k, progress=False) for k, (x, s) in enumerate(jobs)]
        together = [f.result()[0] for f in futures]
    for a, b in zip(alone, together):
        for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
            assert torch.equal(p, q), name
