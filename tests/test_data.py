"""Data loading: toy distributions, arrays, MNIST-family IDX files, level maps and the spec builder."""

import gzip
import hashlib
import math
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from scoresde.data import (
    DEFAULT_TOY_SIZE,
    MNIST_MD5,
    TOY_DATASETS,
    Dataset,
    get_dataset,
    load_array,
    load_mnist,
    to_levels,
    to_model_range,
    toy_data,
    toy_gmm,
)
from scoresde.errors import DataError

# the data folder named by SCORESDE_DATA (real MNIST / Fashion-MNIST files), when set
SHARED_DATA = Path(os.environ.get("SCORESDE_DATA") or "/nonexistent-scoresde-data")
needs_mnist = pytest.mark.skipif(not (SHARED_DATA / "mnist").is_dir(), reason=f"{SHARED_DATA}/mnist not present")
needs_fashion = pytest.mark.skipif(
    not (SHARED_DATA / "fashion-mnist").is_dir(), reason=f"{SHARED_DATA}/fashion-mnist not present"
)
Z = 4.5  # tolerance in standard errors


# --------------------------------------------------------------------------- toy data
@pytest.mark.parametrize("name", TOY_DATASETS)
def test_toy_data_is_centred_with_unit_average_variance(name):
    n = 100000
    x = toy_data(name, n, torch.Generator().manual_seed(0))
    assert x.shape == (n, 2) and x.dtype == torch.float32 and torch.isfinite(x).all()
    x = x.double()
    mean = x.mean(0)
    se = x.std(0) / math.sqrt(n)
    assert (mean.abs() < Z * se).all(), (mean, se)
    # average per-coordinate variance: r_i = ||x_i - mean||^2 / 2 has mean tr(cov)/2 (up to O(1/n))
    r = ((x - mean) ** 2).sum(1) / 2
    assert abs(float(r.mean()) - 1.0) < Z * float(r.std()) / math.sqrt(n)


@pytest.mark.parametrize("name", ["checkerboard", "rings", "gmm"])
def test_toy_data_with_unit_variance_per_coordinate(name):
    n = 100000
    x = toy_data(name, n, torch.Generator().manual_seed(1)).double()
    for k in range(2):
        r = (x[:, k] - x[:, k].mean()) ** 2
        assert abs(float(r.mean()) - 1.0) < Z * float(r.std()) / math.sqrt(n)


def test_toy_data_geometry():
    # checkerboard: every point lies in a cell (i, j) of the 4x4 board with i + j even
    x = toy_data("checkerboard", 20000, torch.Generator().manual_seed(0)).double() / (math.sqrt(3) / 2) + 2
    assert ((x >= 0) & (x <= 4)).all()
    cells = x.floor().clamp(max=3).long()
    assert ((cells[:, 0] + cells[:, 1]) % 2 == 0).all()
    # rings: radii cluster at 1..4 (before scaling) with equal frequencies
    n = 40000
    r = toy_data("rings", n, torch.Generator().manual_seed(0)).double().norm(dim=1) * math.sqrt((7.5 + 0.08**2) / 2)
    ring = r.round()
    assert ((r - ring).abs() < 0.5).float().mean() > 0.999
    counts = torch.stack([(ring == k).sum() for k in range(1, 5)]).double()
    assert ((counts - n / 4).abs() < Z * math.sqrt(n * 0.25 * 0.75)).all()


def test_toy_gmm_is_the_sampled_mixture():
    gmm = toy_gmm(torch.float64)
    assert gmm.n_components == 8
    torch.testing.assert_close(gmm.mean(), torch.zeros(2, dtype=torch.float64))
    second = (gmm.weights[:, None] * (gmm.means**2 + gmm.stds**2)).sum(0)  # E[x_k^2] per coordinate
    torch.testing.assert_close(second, torch.ones(2, dtype=torch.float64))
    n = 40000
    x = toy_data("gmm", n, torch.Generator().manual_seed(2)).double()
    label = gmm.responsibilities(x).argmax(1)
    counts = torch.bincount(label, minlength=8).double()
    assert ((counts - n / 8).abs() < Z * math.sqrt(n / 8 * 7 / 8)).all()
    # within each component the spread is the component std (0.1), per coordinate
    resid = x - gmm.means[label]
    r = resid**2
    assert (abs(r.mean(0) - 0.01) < Z * r.std(0) / math.sqrt(n)).all()
    # and the average log-density matches the mixture's (the components barely overlap: ~ Gaussian entropy)
    lp = gmm.log_prob(x)
    want = -math.log(2 * math.pi * math.e * 0.01) - math.log(8)  # -(entropy of one component) - log K
    assert abs(float(lp.mean()) - want) < Z * float(lp.std()) / math.sqrt(n) + 1e-3


def test_toy_data_determinism_and_errors():
    a = toy_data("moons", 100, torch.Generator().manual_seed(5))
    assert torch.equal(a, toy_data("moons", 100, torch.Generator().manual_seed(5)))
    assert not torch.equal(a, toy_data("moons", 100, torch.Generator().manual_seed(6)))
    with pytest.raises(DataError, match="moons"):
        toy_data("spirals", 10)
    for bad in (0, -3, 2.5):
        with pytest.raises(ValueError):
            toy_data("moons", bad)


# --------------------------------------------------------------------------- arrays
def test_npy_and_npz_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    a = rng.normal(size=(10, 3, 4))
    np.save(tmp_path / "a.npy", a)
    x = load_array(tmp_path / "a.npy")
    assert x.dtype == torch.float32 and x.shape == (10, 3, 4)
    torch.testing.assert_close(x, torch.from_numpy(a).float())
    ints = rng.integers(0, 255, size=(5, 2)).astype(np.int64)
    np.save(tmp_path / "i.npy", ints)
    assert torch.equal(load_array(str(tmp_path / "i.npy")), torch.from_numpy(ints).float())
    # npz: "x", then "data", then the first array
    b, c = rng.normal(size=(4, 2)), rng.normal(size=(6, 2))
    np.savez(tmp_path / "xk.npz", other=c, x=b)
    torch.testing.assert_close(load_array(tmp_path / "xk.npz"), torch.from_numpy(b).float())
    np.savez(tmp_path / "dk.npz", other=c, data=b)
    torch.testing.assert_close(load_array(tmp_path / "dk.npz"), torch.from_numpy(b).float())
    np.savez_compressed(tmp_path / "first.npz", first=b, second=c)
    torch.testing.assert_close(load_array(tmp_path / "first.npz"), torch.from_numpy(b).float())


def _npy_bytes() -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, np.arange(12.0).reshape(4, 3))
    return buf.getvalue()


@pytest.mark.parametrize(
    "name, make, match",
    [
        ("missing.npy", None, "no such file"),
        ("a.txt", lambda p: p.write_text("1 2 3"), "extension"),
        ("noext", lambda p: p.write_text("1 2 3"), "extension"),
        ("c.npy", lambda p: np.save(p, np.ones((3, 2), dtype=np.complex64)), "dtype"),
        ("b.npy", lambda p: np.save(p, np.ones((3, 2), dtype=bool)), "dtype"),
        ("s.npy", lambda p: np.save(p, np.array([["a", "b"]])), "dtype"),
        ("o.npy", lambda p: np.save(p, np.array([[{"a": 1}]], dtype=object), allow_pickle=True), "pickle"),
        ("r1.npy", lambda p: np.save(p, np.ones(5)), "event"),
        ("r0.npy", lambda p: np.save(p, np.float64(1.0)), "event"),
        ("n0.npy", lambda p: np.save(p, np.ones((0, 3))), "at least one sample"),
        ("e0.npy", lambda p: np.save(p, np.ones((4, 0))), "at least one sample"),
        ("nan.npy", lambda p: np.save(p, np.array([[0.0, np.nan], [1.0, 2.0]])), "NaN"),
        ("inf.npy", lambda p: np.save(p, np.array([[0.0, -np.inf]])), "NaN or infinite"),
        ("big.npy", lambda p: np.save(p, np.array([[1e300]])), "float32"),
        ("junk.npy", lambda p: p.write_bytes(b"\x00not a numpy file at all" * 4), "not a NumPy .npy"),
        ("junk2.npz", lambda p: p.write_bytes(b"not a zip file" * 4), "not a NumPy .npz"),
        ("trunc.npy", lambda p: p.write_bytes(_npy_bytes()[:-7]), "NumPy|read"),
        ("junk.npz", lambda p: p.write_bytes(b"PK\x03\x04garbage" * 8), "read"),
        ("empty.npz", lambda p: np.savez(p), "no arrays"),
        ("o.npz", lambda p: np.savez(p, x=np.array([[{"a": 1}]], dtype=object)), "pickle"),
        ("nan.npz", lambda p: np.savez(p, x=np.array([[np.nan]])), "NaN"),
    ],
)
def test_load_array_rejects_bad_input(tmp_path, name, make, match):
    path = tmp_path / name
    if make is not None:
        make(path)
        assert path.exists()
    with pytest.raises(DataError, match=match):
        load_array(path)


# --------------------------------------------------------------------------- level maps
def test_to_model_range_and_to_levels_round_trip():
    k = torch.arange(256, dtype=torch.uint8)
    x = to_model_range(k)
    assert x.dtype == torch.float32
    assert float(x[0]) == -1.0 and float(x[-1]) == 1.0
    torch.testing.assert_close(x[1:] - x[:-1], torch.full((255,), 2 / 255))
    assert torch.equal(to_levels(x), k)
    # small perturbations (less than half a level) round back
    assert torch.equal(to_levels(x + 0.99 / 255), to_levels(x - 0.99 / 255).clamp(0, 255))
    assert torch.equal(to_levels(x + 0.99 / 255), k)
    # clipping of out-of-range values (generated samples)
    assert torch.equal(to_levels(torch.tensor([-3.0, 3.0])), torch.tensor([0, 255], dtype=torch.uint8))
    # 17 levels on [0, 1] from whole-number floats (e.g. 8x8 digits with values 0..16)
    k17 = torch.arange(17, dtype=torch.float64)
    y = to_model_range(k17, levels=17, data_range=(0.0, 1.0))
    torch.testing.assert_close(y, torch.arange(17, dtype=torch.float32) / 16)
    assert torch.equal(to_levels(y, levels=17, data_range=(0.0, 1.0)).long(), k17.long())
    assert to_levels(torch.zeros(2), levels=1024).dtype == torch.int64


def test_level_map_errors():
    with pytest.raises(DataError):
        to_model_range(torch.tensor([0.5]))
    with pytest.raises(DataError):
        to_model_range(torch.tensor([256]))
    with pytest.raises(DataError):
        to_model_range(torch.tensor([-1]))
    with pytest.raises(DataError):
        to_model_range(torch.tensor([17]), levels=17)
    with pytest.raises(DataError):
        to_model_range(torch.tensor([True]))
    with pytest.raises(ValueError):
        to_model_range(torch.tensor([0]), levels=1)
    with pytest.raises(ValueError):
        to_levels(torch.tensor([0.0]), data_range=(1.0, -1.0))


# --------------------------------------------------------------------------- synthetic IDX files
def _idx(data: np.ndarray, magic_type: int = 0x08) -> bytes:
    header = bytes([0, 0, magic_type, data.ndim]) + b"".join(struct.pack(">I", s) for s in data.shape)
    return header + data.astype(np.uint8).tobytes()


def _write_set(folder: Path, images: np.ndarray, labels: np.ndarray, split="train", gz=True, image_bytes=None, label_bytes=None):
    folder.mkdir(parents=True, exist_ok=True)
    prefix = "train" if split == "train" else "t10k"
    for base, payload in (
        (f"{prefix}-images-idx3-ubyte", image_bytes if image_bytes is not None else _idx(images)),
        (f"{prefix}-labels-idx1-ubyte", label_bytes if label_bytes is not None else _idx(labels)),
    ):
        if gz:
            with gzip.open(folder / (base + ".gz"), "wb") as f:
                f.write(payload)
        else:
            (folder / base).write_bytes(payload)


def _fake(n=5, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, 28, 28)).astype(np.uint8), rng.integers(0, 10, size=n).astype(np.uint8)


@pytest.mark.parametrize("gz", [True, False])
def test_load_mnist_synthetic_layouts(tmp_path, gz):
    images, labels = _fake()
    _write_set(tmp_path / "mnist", images, labels, gz=gz)
    for data_dir in (tmp_path / "mnist", tmp_path):  # the folder itself or its parent
        x, y = load_mnist(data_dir, check_md5=False)
        assert x.dtype == torch.uint8 and x.shape == (5, 1, 28, 28)
        assert y.dtype == torch.int64 and y.shape == (5,)
        assert np.array_equal(x[:, 0].numpy(), images) and np.array_equal(y.numpy(), labels)
    _write_set(tmp_path / "tv" / "FashionMNIST" / "raw", images, labels, split="test", gz=gz)
    x, _ = load_mnist(tmp_path / "tv", split="test", dataset="fashion-mnist", check_md5=False)
    assert np.array_equal(x[:, 0].numpy(), images)


def test_load_mnist_rejects_corrupt_files(tmp_path):
    images, labels = _fake()

    def expect(match, **kw):
        folder = tmp_path / f"case{len(list(tmp_path.iterdir()))}"
        _write_set(folder, images, labels, **kw)
        with pytest.raises(DataError, match=match):
            load_mnist(folder, check_md5=False)

    expect("magic", image_bytes=_idx(images, magic_type=0x09))  # not unsigned bytes
    expect("magic", image_bytes=_idx(images[:, :, :, None]))  # wrong rank
    expect("magic", label_bytes=_idx(labels[:, None]))
    expect("header", image_bytes=_idx(images)[:-10])  # truncated payload
    expect("header", image_bytes=_idx(images) + b"\x00")  # trailing bytes
    expect("too short", label_bytes=b"\x00\x00\x08")
    expect("5 images but 4 labels", label_bytes=_idx(labels[:4]))
    expect("28x28", image_bytes=_idx(images[:, :27, :]))
    expect("0..9", label_bytes=_idx(np.full(5, 10, dtype=np.uint8)))
    # a file that is not gzip data under a .gz name
    folder = tmp_path / "badgz"
    _write_set(folder, images, labels)
    (folder / "train-images-idx3-ubyte.gz").write_bytes(b"this is not gzip" * 10)
    with pytest.raises(DataError, match="decompress"):
        load_mnist(folder, check_md5=False)
    # missing labels, missing folder, wrong arguments
    folder = tmp_path / "nolabels"
    _write_set(folder, images, labels)
    (folder / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="labels"):
        load_mnist(folder, check_md5=False)
    with pytest.raises(DataError, match="not found"):
        load_mnist(tmp_path / "nolabels", split="test")
    with pytest.raises(DataError, match="does not exist"):
        load_mnist(tmp_path / "nowhere")
    with pytest.raises(ValueError):
        load_mnist(folder, split="validation")
    with pytest.raises(ValueError):
        load_mnist(folder, dataset="cifar10")


def test_load_mnist_md5_check_on_synthetic_files(tmp_path):
    images, labels = _fake()
    _write_set(tmp_path / "gz", images, labels)
    with pytest.raises(DataError, match="md5"):  # valid files, but not the published ones
        load_mnist(tmp_path / "gz", check_md5=True)
    load_mnist(tmp_path / "gz", check_md5=False)
    _write_set(tmp_path / "raw", images, labels, gz=False)
    with pytest.raises(DataError, match="md5"):  # uncompressed files are checked too
        load_mnist(tmp_path / "raw")
    load_mnist(tmp_path / "raw", check_md5=False)


# --------------------------------------------------------------------------- the real files
@needs_mnist
def test_real_mnist():
    x, y = load_mnist(SHARED_DATA, split="train", dataset="mnist", check_md5=True)
    assert x.shape == (60000, 1, 28, 28) and x.dtype == torch.uint8
    assert y.shape == (60000,) and y.dtype == torch.int64
    assert y[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]  # the well-known first training labels
    assert abs(float(x.double().mean()) / 255 - 0.1307) < 1e-4  # the standard MNIST normalisation mean
    xt, yt = load_mnist(SHARED_DATA / "mnist", split="test")
    assert xt.shape == (10000, 1, 28, 28) and int(yt.min()) == 0 and int(yt.max()) == 9
    assert yt[:5].tolist() == [7, 2, 1, 0, 4]
    for name, digest in MNIST_MD5["mnist"].items():
        assert hashlib.md5((SHARED_DATA / "mnist" / name).read_bytes()).hexdigest() == digest


@needs_fashion
def test_real_fashion_mnist_test_split():
    x, y = load_mnist(SHARED_DATA, split="test", dataset="fashion-mnist", check_md5=True)
    assert x.shape == (10000, 1, 28, 28)
    assert torch.equal(torch.bincount(y), torch.full((10,), 1000))  # balanced: 1,000 images per class


@needs_mnist
def test_get_dataset_mnist():
    ds = get_dataset("mnist", data_dir=SHARED_DATA, split="test", n=500)
    assert isinstance(ds, Dataset) and len(ds) == 500 and ds.name == "mnist"
    assert ds.event_shape == (1, 28, 28) and ds.discrete_levels == 256 and ds.data_range == (-1.0, 1.0)
    assert ds.data.dtype == torch.float32 and float(ds.data.min()) == -1.0 and float(ds.data.max()) == 1.0
    x, y = load_mnist(SHARED_DATA, split="test")
    assert torch.equal(to_levels(ds.data), x[:500]) and torch.equal(ds.labels, y[:500])
    assert ds[3].shape == (1, 28, 28)
    with pytest.raises(DataError, match="10000"):
        get_dataset("mnist", data_dir=SHARED_DATA, split="test", n=20000)


# --------------------------------------------------------------------------- the spec builder
def test_get_dataset_toy_and_arrays(tmp_path):
    ds = get_dataset("moons", n=1000)
    assert ds.data.shape == (1000, 2) and ds.event_shape == (2,) and ds.discrete_levels is None and ds.name == "moons"
    assert torch.equal(ds.data, get_dataset("moons", n=1000).data)  # reproducible without a generator
    assert not torch.equal(ds.data, get_dataset("moons", n=1000, split="test").data)  # splits differ
    g = torch.Generator().manual_seed(11)
    assert torch.equal(get_dataset("rings", n=50, generator=g).data, toy_data("rings", 50, torch.Generator().manual_seed(11)))
    assert len(get_dataset("gmm")) == DEFAULT_TOY_SIZE

    a = np.random.default_rng(0).normal(size=(20, 3)).astype(np.float32)
    np.save(tmp_path / "a.npy", a)
    ds = get_dataset(str(tmp_path / "a.npy"), n=7)
    assert ds.event_shape == (3,) and len(ds) == 7 and ds.discrete_levels is None
    assert np.array_equal(ds.data.numpy(), a[:7])
    imgs = np.random.default_rng(1).integers(0, 256, size=(4, 1, 8, 8)).astype(np.uint8)
    np.savez(tmp_path / "imgs.npz", x=imgs)
    ds = get_dataset(str(tmp_path / "imgs.npz"))
    assert ds.discrete_levels == 256 and ds.event_shape == (1, 8, 8)
    assert np.array_equal(to_levels(ds.data).numpy(), imgs)


def test_get_dataset_errors(tmp_path, monkeypatch):
    monkeypatch.delenv("SCORESDE_DATA", raising=False)
    with pytest.raises(DataError, match="moons.*mnist.*npy"):
        get_dataset("cifar100")
    with pytest.raises(DataError, match="no such file"):
        get_dataset(str(tmp_path / "missing.npy"))
    with pytest.raises(DataError, match="data_dir"):
        get_dataset("mnist")
    with pytest.raises(DataError, match="not found|does not exist"):
        get_dataset("fashion-mnist", data_dir=tmp_path)
    with pytest.raises(ValueError, match="split"):
        get_dataset("moons", split="val")
    with pytest.raises(ValueError):
        get_dataset("moons", n=0)
    np.save(tmp_path / "small.npy", np.zeros((3, 2)))
    with pytest.raises(DataError, match="n=5"):
        get_dataset(str(tmp_path / "small.npy"), n=5)
