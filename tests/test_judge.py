import gzip

import numpy as np
import pytest
import torch

from tools.scoring.judge import _shift, load_judge, predict, save_judge, train_judge



@pytest.fixture(scope="module")
def mnist(data_dir) -> tuple[np.ndarray, np.ndarray]:
    """1,000 MNIST test images (n, 28, 28) in [0, 1] and their labels (no data: the conftest fails)."""
    root = data_dir / "mnist"
    with gzip.open(root / "t10k-images-idx3-ubyte.gz") as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16, count=1000 * 784).reshape(-1, 28, 28)
    with gzip.open(root / "t10k-labels-idx1-ubyte.gz") as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8, count=1000)
    return x.astype(np.float32) / 255, y.astype(np.int64)


@pytest.fixture(scope="module")
def judged(mnist):
    """A judge trained on 600 images whose labels are renamed to 100 + 7 * digit."""
    x, y = mnist
    return train_judge(x[:600], 100 + 7 * y[:600], seed=0, epochs=6, progress=False)


def test_judge_beats_chance_with_any_labels(mnist, judged):
    x, y = mnist
    pred = predict(judged, x[600:])
    assert pred.dtype == np.int64 and pred.shape == (400,)
    assert set(pred) <= set(100 + 7 * np.arange(10))
    assert np.mean(pred == 100 + 7 * y[600:]) > 0.7  # chance is 0.1


def test_same_seed_same_judge(mnist):
    x, y = mnist
    a = train_judge(x[:200], y[:200], seed=3, epochs=1, progress=False)
    b = train_judge(x[:200], y[:200], seed=3, epochs=1, progress=False)
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), name


def test_save_load_round_trip(tmp_path, mnist, judged):
    x, _ = mnist
    save_judge(judged, tmp_path / "judge.pt")
    loaded = load_judge(tmp_path / "judge.pt")
    assert loaded.input_shape == (28, 28)
    with torch.no_grad():
        assert torch.equal(judged(torch.as_tensor(x[600:])), loaded(torch.as_tensor(x[600:])))
    assert np.array_equal(predict(judged, x[600:]), predict(loaded, x[600:]))


def test_corrupt_file_raises(tmp_path, judged):
    path = tmp_path / "judge.pt"
    save_judge(judged, path)
    path.write_bytes(b"not a checkpoint" + path.read_bytes()[16:])
    with pytest.raises(ValueError, match="not a readable judge"):
        load_judge(path)
    torch.save({"state_dict": judged.state_dict(), "input_shape": [28, 28], "classes": [0, 1, 2]}, path)
    with pytest.raises(ValueError, match="not a readable judge"):  # 3 classes, 10 outputs
        load_judge(path)


def test_bad_input_raises(mnist, judged):
    x, y = mnist
    bad = x[:10].copy()
    bad[2, 0, 0] = np.inf
    with pytest.raises(ValueError, match="NaN or infinite"):
        predict(judged, bad)
    with pytest.raises(ValueError, match="NaN or infinite"):
        train_judge(bad, y[:10], seed=0, epochs=1, progress=False)
    with pytest.raises(ValueError, match="judge expects"):
        predict(judged, np.zeros((3, 64, 64), np.float32))
    with pytest.raises(ValueError, match="labels"):
        train_judge(x[:10], y[:9], seed=0, epochs=1, progress=False)
    with pytest.raises(ValueError, match="classes"):
        train_judge(x[:10], np.zeros(10, np.int64), seed=0, epochs=1, progress=False)


def test_shift_moves_content_without_changing_it():
    x = torch.zeros(50, 9, 11)
    x[:, 4, 5] = 1.0  # one bright pixel in the middle
    out = _shift(x, (2, 3), torch.Generator().manual_seed(0))
    assert out.shape == x.shape and torch.equal(out.sum((1, 2)), torch.ones(50))
    flat = out.reshape(50, -1).argmax(1)
    rows, cols = flat // 11, flat % 11
    assert (rows - 4).abs().max() <= 2 and (cols - 5).abs().max() <= 3
    assert len(set(zip(rows.tolist(), cols.tolist()))) > 5  # it really moves things
    assert torch.equal(_shift(x, (0, 0), torch.Generator()), x)
