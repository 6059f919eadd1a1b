"""Real image data: CIFAR-10 (binary and python distributions, archives), image folders, random flips.

Every file is generated here, small: CIFAR batches of 20 records instead of 10,000, images of a few pixels.
"""

import hashlib
import io
import math
import os
import pickle
import struct
import tarfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import scoresde.data.cifar10 as cifar10
import scoresde.data.folder as folder_mod
from scoresde.data import (
    CIFAR10_CLASSES,
    CIFAR10_MD5,
    Dataset,
    get_dataset,
    load_cifar10,
    load_image_folder,
    random_hflip,
    to_levels,
)
from scoresde.data.safe_pickle import loads_plain
from scoresde.errors import DataError, OptionError, ResourceLimitError, ScoreSDEError, ShapeError

PER = 20  # records per generated batch file
Z = 4.5  # tolerance in standard errors


# --------------------------------------------------------------------------- generated CIFAR-10 files
def _records(n, seed):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8), rng.integers(0, 10, size=n).astype(np.uint8)


def _bin_bytes(images, labels):
    return np.concatenate([labels[:, None], images.reshape(len(labels), -1)], axis=1).tobytes()


def _py_bytes(images, labels, protocol=2, bytes_keys=False):
    batch = {"batch_label": "training batch", "labels": [int(v) for v in labels],
             "data": images.reshape(len(labels), -1), "filenames": [f"img_{i}.png" for i in range(len(labels))]}
    if bytes_keys:  # like a Python 2 pickle read with encoding="bytes"; Python 3 writes bytes via _codecs.encode
        batch = {k.encode(): v for k, v in batch.items()}
    return pickle.dumps(batch, protocol=protocol)


SPLIT_FILES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}


def _distribution(kind="binary", protocol=2):
    """``{member name: bytes}`` of a small distribution and the expected ``{split: (images, labels)}``."""
    files, expected = {}, {}
    for split, names in SPLIT_FILES.items():
        parts = [_records(PER, seed=hash((split, i)) % 1000) for i in range(len(names))]
        for name, (x, y) in zip(names, parts):
            files[name + ".bin" if kind == "binary" else name] = _bin_bytes(x, y) if kind == "binary" else _py_bytes(x, y, protocol)
        expected[split] = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]).astype(np.int64))
    return files, expected


def _write(folder: Path, files):
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)


def _tar(path: Path, top: str, files):
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return hashlib.md5(path.read_bytes()).hexdigest()


def _same(x, y, expected):
    assert x.dtype == torch.uint8 and x.shape == (len(expected[1]), 3, 32, 32)
    assert y.dtype == torch.int64 and np.array_equal(y.numpy(), expected[1])
    assert np.array_equal(x.numpy(), expected[0])


def test_binary_batch_layout_and_pixel_order(tmp_path):
    files, expected = _distribution("binary")
    _write(tmp_path / "cifar-10-batches-bin", files)
    raw = files["test_batch.bin"]
    x, y = load_cifar10(tmp_path, split="test", check_md5=False)
    # record = label byte, then 1024 red, 1024 green, 1024 blue bytes, each 32x32 row-major
    assert int(y[3]) == raw[3 * 3073]
    rec = np.frombuffer(raw[3 * 3073 + 1 : 4 * 3073], dtype=np.uint8)
    assert np.array_equal(x[3, 0].numpy().ravel(), rec[:1024]) and np.array_equal(x[3, 2, 0].numpy(), rec[2048:2080])
    for split in ("train", "test"):
        _same(*load_cifar10(tmp_path, split=split, check_md5=False), expected[split])


@pytest.mark.parametrize("layout", ["cifar-10-batches-bin", "cifar10", "cifar10/cifar-10-batches-bin", "."])
def test_binary_folder_layouts(tmp_path, layout):
    files, expected = _distribution("binary")
    _write(tmp_path / layout, files)
    _same(*load_cifar10(tmp_path, split="train", check_md5=False), expected["train"])
    _same(*load_cifar10(tmp_path / layout, split="test", check_md5=False), expected["test"])


def test_binary_sizes_checked_when_no_md5_is_published(tmp_path, monkeypatch):
    files, expected = _distribution("binary")
    _write(tmp_path / "cifar-10-batches-bin", files)
    with pytest.raises(DataError, match="30,730,000 bytes"):  # 20 records is not an original batch
        load_cifar10(tmp_path, split="test")
    monkeypatch.setattr(cifar10, "CIFAR10_RECORDS_PER_FILE", PER)
    ds = get_dataset("cifar10", data_dir=tmp_path, split="train")
    assert isinstance(ds, Dataset) and ds.name == "cifar10" and len(ds) == 5 * PER and ds.event_shape == (3, 32, 32)
    assert ds.discrete_levels == 256 and ds.data_range == (-1.0, 1.0) and ds.class_names == CIFAR10_CLASSES
    assert ds.data.dtype == torch.float32 and float(ds.data.min()) == -1.0 and float(ds.data.max()) == 1.0
    assert np.array_equal(to_levels(ds.data).numpy(), expected["train"][0])
    assert np.array_equal(ds.labels.numpy(), expected["train"][1])
    # n keeps the first n and reads only the batches it needs
    (tmp_path / "cifar-10-batches-bin" / "data_batch_5.bin").unlink()
    ds = get_dataset("cifar10", data_dir=tmp_path, n=2 * PER + 3)
    assert np.array_equal(to_levels(ds.data).numpy(), expected["train"][0][: 2 * PER + 3])
    with pytest.raises(DataError, match="data_batch_5.bin missing"):
        get_dataset("cifar10", data_dir=tmp_path)
    with pytest.raises(DataError, match=f"n={PER + 1}"):
        get_dataset("cifar10", data_dir=tmp_path, split="test", n=PER + 1)
    # a file of the right size is still checked for structure
    (tmp_path / "cifar-10-batches-bin" / "test_batch.bin").write_bytes(b"\x0a" * (PER * 3073))
    with pytest.raises(DataError, match="0..9"):
        get_dataset("cifar10", data_dir=tmp_path, split="test")


def test_binary_corrupt_files(tmp_path):
    files, _ = _distribution("binary")
    _write(tmp_path, files)
    (tmp_path / "test_batch.bin").write_bytes(files["test_batch.bin"][:-5])
    with pytest.raises(DataError, match="test_batch.bin.*multiple of 3073"):
        load_cifar10(tmp_path, split="test", check_md5=False)
    (tmp_path / "test_batch.bin").write_bytes(b"")
    with pytest.raises(DataError, match="test_batch.bin"):
        load_cifar10(tmp_path, split="test", check_md5=False)


@pytest.mark.parametrize("kind", ["binary", "python"])
def test_archives_are_read_without_extracting(tmp_path, monkeypatch, kind):
    files, expected = _distribution(kind)
    top, name = ("cifar-10-batches-bin", "cifar-10-binary.tar.gz") if kind == "binary" else ("cifar-10-batches-py", "cifar-10-python.tar.gz")
    digest = _tar(tmp_path / name, top, files)
    before = sorted(os.listdir(tmp_path))
    for split in ("train", "test"):
        _same(*load_cifar10(tmp_path, split=split, check_md5=False), expected[split])
    _same(*load_cifar10(tmp_path / name, split="test", check_md5=False), expected["test"])  # the archive itself
    assert sorted(os.listdir(tmp_path)) == before  # nothing written
    # the published md5 is checked by default: the generated archive is refused, naming both md5s
    with pytest.raises(DataError) as err:
        load_cifar10(tmp_path, split="test")
    msg = str(err.value)
    assert name in msg and CIFAR10_MD5[name] in msg and digest in msg and "Replace" in msg
    monkeypatch.setitem(cifar10.CIFAR10_MD5, name, digest)
    ds = get_dataset("cifar10", data_dir=tmp_path, split="test", n=7)
    assert np.array_equal(to_levels(ds.data).numpy(), expected["test"][0][:7]) and ds.labels.tolist() == expected["test"][1][:7].tolist()


def test_broken_archives(tmp_path):
    files, _ = _distribution("binary")
    del files["data_batch_3.bin"]
    _tar(tmp_path / "cifar-10-binary.tar.gz", "cifar-10-batches-bin", files)
    with pytest.raises(DataError, match="no cifar-10-batches-bin/data_batch_3.bin"):
        load_cifar10(tmp_path, check_md5=False)
    (tmp_path / "cifar-10-binary.tar.gz").write_bytes(b"not a gzip file" * 100)
    with pytest.raises(DataError, match="cannot read the archive"):
        load_cifar10(tmp_path, check_md5=False)


@pytest.mark.parametrize("protocol, bytes_keys", [(0, False), (2, False), (2, True), (4, False), (5, False)])
def test_python_batches(tmp_path, protocol, bytes_keys):
    x, y = _records(PER, 3)
    (tmp_path / "cifar-10-batches-py").mkdir()
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(_py_bytes(x, y, protocol, bytes_keys))
    _same(*load_cifar10(tmp_path, split="test", check_md5=False), (x, y.astype(np.int64)))


def test_python_batch_md5(tmp_path, monkeypatch):
    files, expected = _distribution("python")
    _write(tmp_path / "cifar-10-batches-py", files)
    _same(*load_cifar10(tmp_path, split="train", check_md5=False), expected["train"])
    with pytest.raises(DataError) as err:
        load_cifar10(tmp_path, split="train")
    got = hashlib.md5(files["data_batch_1"]).hexdigest()
    assert "data_batch_1" in str(err.value) and "c99cafc152244af753f735de768cd75f" in str(err.value) and got in str(err.value)
    for name, data in files.items():
        monkeypatch.setitem(cifar10.CIFAR10_MD5, name, hashlib.md5(data).hexdigest())
    monkeypatch.setenv("SCORESDE_DATA", str(tmp_path))  # the default data folder
    ds = get_dataset("cifar10", split="test")
    assert np.array_equal(to_levels(ds.data).numpy(), expected["test"][0]) and ds.class_names[0] == "airplane"


class _System:
    def __reduce__(self):
        return (os.system, ("touch pwned-by-pickle",))


class _Eval:
    def __reduce__(self):
        import builtins

        return (builtins.eval, ("__import__('os').getcwd()",))


@pytest.mark.parametrize(
    "payload, match",
    [
        ({"data": _System(), "labels": [0]}, "system"),
        ({"data": np.zeros((1, 3072), np.uint8), "labels": [_Eval()]}, "eval"),
        ({"data": np.array([[1, "a"]], dtype=object), "labels": [0]}, "dtype"),
        ({"data": np.zeros(2, dtype=[("a", "u1"), ("b", "f4")]), "labels": [0]}, "dtype"),
        ({"data": np.array(["ab"]), "labels": [0]}, "dtype"),
    ],
)
@pytest.mark.parametrize("protocol", [2, 5])
def test_malicious_pickles_are_refused(tmp_path, monkeypatch, payload, match, protocol):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "test_batch").write_bytes(pickle.dumps(payload, protocol=protocol))
    with pytest.raises(DataError, match=f"(?s)test_batch.*refused.*{match}.*not a plain CIFAR-10 batch"):
        load_cifar10(tmp_path, split="test", check_md5=False)
    assert not (tmp_path / "pwned-by-pickle").exists()


def test_python_batches_that_are_not_cifar(tmp_path):
    x, y = _records(4, 0)
    cases = {
        "truncated": _py_bytes(x, y)[:-20],
        "list": pickle.dumps([1, 2, 3]),
        "nolabels": pickle.dumps({"data": x.reshape(4, -1)}),
        "float": pickle.dumps({"data": x.reshape(4, -1).astype(np.float32), "labels": y.tolist()}),
        "count": pickle.dumps({"data": x.reshape(4, -1), "labels": y.tolist()[:3]}),
        "label11": pickle.dumps({"data": x.reshape(4, -1), "labels": [11, 0, 0, 0]}),
    }
    for name, data in cases.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "test_batch").write_bytes(data)
        with pytest.raises(DataError, match="test_batch"):
            load_cifar10(tmp_path / name, split="test", check_md5=False)
    # a pickle may not set attributes on the admitted callables (which would change how the next file is read)
    with pytest.raises(DataError, match="refused"):
        loads_plain(b"c_codecs\nencode\n(N(dS'__defaults__'\n(S'x'\ntstb.", "mem")
    # the unpickler itself returns plain data with real arrays
    out = loads_plain(pickle.dumps({"a": [1, 2.5, "s", b"b", None], "x": np.arange(6, dtype=">i4").reshape(2, 3)}), "mem")
    assert out["a"] == [1, 2.5, "s", b"b", None] and np.array_equal(out["x"], np.arange(6).reshape(2, 3))


def test_cifar_folder_errors(tmp_path, monkeypatch):
    monkeypatch.delenv("SCORESDE_DATA", raising=False)
    with pytest.raises(DataError, match="cifar10 needs a data folder.*SCORESDE_DATA"):
        get_dataset("cifar10")
    with pytest.raises(DataError, match="does not exist"):
        get_dataset("cifar10", data_dir=tmp_path / "nowhere")
    with pytest.raises(DataError, match="not found: looked in .*cifar-10-batches-bin.*data_dir"):
        get_dataset("cifar10", data_dir=tmp_path)
    with pytest.raises(OptionError, match="image_size applies only to folder"):
        get_dataset("cifar10", data_dir=tmp_path, image_size=32)
    files, _ = _distribution("binary")
    _write(tmp_path / "cifar10", files)
    monkeypatch.setenv("SCORESDE_MAX_BYTES", "100000")
    with pytest.raises(ResourceLimitError, match="cifar10"):
        load_cifar10(tmp_path, check_md5=False)
    with pytest.raises(DataError, match="unknown data set.*cifar10.*folder:PATH"):
        get_dataset("cifar100")


# --------------------------------------------------------------------------- image folders
def _img(path: Path, arr, mode=None, fmt=None, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(arr, dtype=np.uint8), mode=mode).save(path, format=fmt, **kw)


def _rgb(h, w, seed):
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def test_class_subfolders_png_and_jpeg(tmp_path):
    a = [_rgb(6, 5, i) for i in range(3)]
    _img(tmp_path / "dogs" / "b.png", a[0])
    _img(tmp_path / "dogs" / "a.png", a[1])
    _img(tmp_path / "cats" / "z.PNG", a[2])
    _img(tmp_path / "cats" / "more" / "y.jpeg", np.full((6, 5, 3), 200), quality=95)  # nested below a class folder
    (tmp_path / "cats" / ".hidden.png").write_bytes(b"junk")  # hidden: skipped
    (tmp_path / "cats" / "README.txt").write_text("not an image")  # not an image: ignored
    (tmp_path / ".git").mkdir()  # hidden folder: not a class
    ds = get_dataset(f"folder:{tmp_path}")
    assert ds.class_names == ("cats", "dogs") and ds.labels.tolist() == [0, 0, 1, 1]
    assert ds.event_shape == (3, 6, 5) and ds.discrete_levels == 256 and ds.data_range == (-1.0, 1.0)
    levels = to_levels(ds.data).numpy().transpose(0, 2, 3, 1)
    # order: classes sorted, then paths sorted (cats/more/y.jpeg before cats/z.PNG); PNG is exact, JPEG near
    assert np.array_equal(levels[1], a[2]) and np.array_equal(levels[2], a[1]) and np.array_equal(levels[3], a[0])
    assert np.abs(levels[0].astype(int) - 200).max() <= 2
    found = load_image_folder(tmp_path, n=3)
    assert found.images.shape == (3, 3, 6, 5) and found.labels.tolist() == [0, 0, 1]
    assert [Path(f).name for f in found.files] == ["y.jpeg", "z.PNG", "a.png"]
    with pytest.raises(DataError, match="n=9"):
        get_dataset(f"folder:{tmp_path}", n=9)


def test_unlabelled_grey_folder_and_lossless_conversions(tmp_path):
    g = np.random.default_rng(0).integers(0, 256, size=(4, 7), dtype=np.uint8)
    _img(tmp_path / "g.png", g)
    _img(tmp_path / "h.jpg", g, fmt="JPEG", quality=100)
    Image.fromarray(g > 128).save(tmp_path / "i.png")  # mode 1 -> L (0 / 255)
    la = np.stack([g, np.full_like(g, 255)], -1)
    Image.fromarray(la, mode="LA").save(tmp_path / "j.png")  # opaque LA -> L
    ds = get_dataset(f"folder:{tmp_path}")
    assert ds.labels is None and ds.class_names is None and ds.event_shape == (1, 4, 7)
    k = to_levels(ds.data).numpy()[:, 0]
    assert np.array_equal(k[0], g) and np.abs(k[1].astype(int) - g).max() <= 3
    assert np.array_equal(k[2], np.where(g > 128, 255, 0)) and np.array_equal(k[3], g)


def test_palette_and_alpha(tmp_path):
    rgb = _rgb(5, 5, 1)
    rgba = np.concatenate([rgb, np.full((5, 5, 1), 255, np.uint8)], -1)
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")  # opaque RGBA -> RGB
    Image.fromarray(rgb).quantize(8).save(tmp_path / "b.png")  # palette, no transparency -> RGB
    x = load_image_folder(tmp_path).images
    assert x.shape == (2, 3, 5, 5) and np.array_equal(x[0].numpy().transpose(1, 2, 0), rgb)
    pal = Image.open(tmp_path / "b.png").convert("RGB")
    assert np.array_equal(x[1].numpy().transpose(1, 2, 0), np.asarray(pal))
    rgba[2, 3, 3] = 10
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "c.png")
    with pytest.raises(DataError, match="c.png.*transparent"):
        load_image_folder(tmp_path)


def test_mixed_sizes_need_image_size(tmp_path):
    a, b = _rgb(8, 12, 0), _rgb(10, 10, 1)  # 12 wide x 8 high, and 10 x 10
    _img(tmp_path / "a.png", a)
    _img(tmp_path / "b.png", b)
    with pytest.raises(DataError, match=r"(?s)a\.png is 12x8 but .*b\.png is 10x10.*--image-size"):
        get_dataset(f"folder:{tmp_path}")
    ds = get_dataset(f"folder:{tmp_path}", image_size=8)
    assert ds.event_shape == (3, 8, 8)
    k = to_levels(ds.data).numpy().transpose(0, 2, 3, 1)
    assert np.array_equal(k[0], a[:, 2:10])  # the centre square, exactly (already 8x8)
    ref = Image.fromarray(b).resize((8, 8), Image.Resampling.LANCZOS)
    assert np.array_equal(k[1], np.asarray(ref))
    with pytest.raises(OptionError, match="image_size"):
        get_dataset(f"folder:{tmp_path}", image_size=0)


def test_mixed_modes(tmp_path):
    _img(tmp_path / "a.png", np.zeros((4, 4)))
    _img(tmp_path / "b.png", _rgb(4, 4, 0))
    with pytest.raises(DataError, match=r"(?s)a\.png is grey.*b\.png is colour"):
        get_dataset(f"folder:{tmp_path}")


def _png16(path: Path, colortype: int, channels: int):
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
    raw = b"".join(b"\x00" + b"\x12\x34" * channels * 4 for _ in range(4))
    ihdr = struct.pack(">IIBBBBB", 4, 4, 16, colortype, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def _truncated_png(path: Path):
    buf = io.BytesIO()
    Image.fromarray(_rgb(32, 32, 0)).save(buf, format="PNG")
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])


@pytest.mark.parametrize(
    "name, make, match",
    [
        ("trunc.png", _truncated_png, "corrupt or truncated|not a readable"),
        ("junk.png", lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40), "not a readable"),
        ("gif.png", lambda p: Image.new("RGB", (4, 4)).save(p, format="GIF"), "not a readable"),
        ("cmyk.jpg", lambda p: Image.new("CMYK", (4, 4), (10, 20, 30, 40)).save(p, format="JPEG"), "mode CMYK"),
        ("grey16.png", lambda p: _png16(p, 0, 1), "mode I"),
        ("rgb16.png", lambda p: _png16(p, 2, 3), "16-bit RGB"),
        ("anim.gif", lambda p: Image.new("RGB", (4, 4)).save(p, format="GIF"), r"\.gif images are not read"),
    ],
)
def test_bad_image_files_are_named(tmp_path, name, make, match):
    _img(tmp_path / "ok.png", _rgb(32, 32, 1))
    make(tmp_path / name)
    with pytest.raises(DataError, match=match) as err:
        get_dataset(f"folder:{tmp_path}")
    assert str(tmp_path / name) in str(err.value)


def test_folder_structure_errors(tmp_path, monkeypatch):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / ".DS_Store").write_bytes(b"x")
    with pytest.raises(DataError, match="holds no PNG or JPEG images"):
        get_dataset(f"folder:{tmp_path / 'empty'}")
    with pytest.raises(DataError, match="does not exist"):
        get_dataset(f"folder:{tmp_path / 'nowhere'}")
    with pytest.raises(DataError, match="names no folder"):
        get_dataset("folder:")
    _img(tmp_path / "both" / "a.png", _rgb(4, 4, 0))
    _img(tmp_path / "both" / "cls" / "b.png", _rgb(4, 4, 0))
    with pytest.raises(DataError, match="both directly and in the subfolder"):
        get_dataset(f"folder:{tmp_path / 'both'}")
    _img(tmp_path / "classes" / "a" / "x.png", _rgb(4, 4, 0))
    (tmp_path / "classes" / "b").mkdir()
    with pytest.raises(DataError, match=r"classes/b: the class folder holds no"):
        get_dataset(f"folder:{tmp_path / 'classes'}")
    # memory is bounded from the headers before anything is decoded
    _img(tmp_path / "big" / "a.png", _rgb(64, 64, 0))
    monkeypatch.setattr(folder_mod, "_decode", lambda *a: pytest.fail("decoded before the memory check"))
    monkeypatch.setenv("SCORESDE_MAX_BYTES", "10000")
    with pytest.raises(ResourceLimitError, match="big"):
        get_dataset(f"folder:{tmp_path / 'big'}")
    assert issubclass(ResourceLimitError, ScoreSDEError)


# --------------------------------------------------------------------------- random flips
def test_random_hflip():
    B = 4000
    x = torch.arange(B * 2 * 3 * 5, dtype=torch.float32).reshape(B, 2, 3, 5)  # no image is its own mirror
    y = random_hflip(x, torch.Generator().manual_seed(0))
    assert y.shape == x.shape and y.dtype == x.dtype
    assert torch.equal(y, random_hflip(x, torch.Generator().manual_seed(0)))  # reproducible
    assert not torch.equal(y, random_hflip(x, torch.Generator().manual_seed(1)))
    flipped = (y == x.flip(-1)).flatten(1).all(1)
    kept = (y == x).flatten(1).all(1)
    assert bool((flipped ^ kept).all())  # each sample exactly mirrored or exactly unchanged
    want = torch.randint(0, 2, (B,), generator=torch.Generator().manual_seed(0)).bool()
    assert torch.equal(flipped, want)  # per-sample fair coins from the generator
    frac = flipped.double().mean().item()
    assert abs(frac - 0.5) < Z * math.sqrt(0.25 / B)
    assert torch.equal(x, torch.arange(B * 30, dtype=torch.float32).reshape(B, 2, 3, 5))  # input untouched
    with pytest.raises(ShapeError):
        random_hflip(torch.zeros(4, 3), torch.Generator())
    with pytest.raises(OptionError):
        random_hflip(x, 0)
