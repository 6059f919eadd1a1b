"""Hardening, class 4: security.

A safe torch floor, crafted checkpoints refused with a message that does not suggest loading them
unsafely, and MNIST-family files verified on every load path.
"""

from __future__ import annotations

import gzip
import os
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from scoresde.checkpoint import load_checkpoint
from scoresde.cli import main
from scoresde.data import MNIST_RAW_MD5, check_mnist_md5, get_dataset, load_mnist
from scoresde.errors import CheckpointError, DataError

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SCORESDE_DATA") or "/nonexistent-scoresde-data")
needs_real = pytest.mark.skipif(
    not ((SHARED_DATA / "mnist").is_dir() and (SHARED_DATA / "fashion-mnist").is_dir()),
    reason="MNIST and Fashion-MNIST not found (set SCORESDE_DATA)",
)


# ---------------------------------------------------------------------- the torch floor
def _version(s: str):
    return tuple(int(p) for p in re.findall(r"\d+", s)[:2])


def test_torch_floor_is_past_the_weights_only_advisories():
    text = (REPO / "pyproject.toml").read_text()
    floor = re.search(r'"torch>=([\d.]+)', text)
    assert floor and _version(floor.group(1)) >= (2, 10), floor
    assert _version(torch.__version__) >= _version(floor.group(1))
    readme = (REPO / "README.md").read_text()
    assert "CVE-2025-32434" in readme and "torch>=2.10" in readme


# ---------------------------------------------------------------------- crafted checkpoints
class _RunsCode:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("protocol", [2, 0])
def test_crafted_checkpoint_is_refused_as_needing_code(tmp_path, protocol):
    marker = tmp_path / "executed"
    path = tmp_path / "evil.pt"
    torch.save({"format": "scoresde-checkpoint", "version": 2, "step": 1, "x": _RunsCode(str(marker))}, path,
               pickle_protocol=protocol)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    msg = str(info.value)
    assert "needs code execution to load" in msg and "refused" in msg
    assert "weights_only" not in msg and "truncated or corrupt" not in msg and "trusted source" not in msg
    assert not marker.exists()


def test_cli_reports_a_crafted_checkpoint_in_one_line(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    torch.save({"x": _RunsCode(str(tmp_path / "executed"))}, path)
    code = main(["sample", "--checkpoint", str(path), "--out", str(tmp_path / "s.npy")])
    err = capsys.readouterr().err
    assert code == 1 and "needs code execution" in err and "weights_only" not in err and err.count("\n") == 1
    assert not (tmp_path / "executed").exists()


# ---------------------------------------------------------------------- MNIST files
def _idx(data: np.ndarray) -> bytes:
    return bytes([0, 0, 8, data.ndim]) + b"".join(struct.pack(">I", s) for s in data.shape) + data.astype(np.uint8).tobytes()


def _write_set(folder: Path, seed: int, n: int = 5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28)).astype(np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    for base, payload in (("train-images-idx3-ubyte", _idx(images)), ("train-labels-idx1-ubyte", _idx(np.zeros(n)))):
        with gzip.open(folder / (base + ".gz"), "wb") as f:
            f.write(payload)
    return images


def test_md5_is_checked_on_the_dataset_path_used_by_trainer_and_cli(tmp_path, capsys):
    _write_set(tmp_path / "mnist", seed=0)  # well-formed IDX files, but not the published ones
    with pytest.raises(DataError, match="md5"):
        get_dataset("mnist", data_dir=tmp_path)
    code = main(["train", "--data", "mnist", "--data-dir", str(tmp_path), "--steps", "1", "--out", str(tmp_path / "r"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and "md5" in err and "Traceback" not in err
    code = main(["likelihood", "--checkpoint", str(tmp_path / "none"), "--data", "mnist", "--data-dir", str(tmp_path)])
    assert code == 1
    with pytest.raises(DataError, match="md5"):
        load_mnist(tmp_path)  # the reader itself checks by default


def test_uncompressed_files_are_checked_too(tmp_path):
    folder = tmp_path / "raw"
    folder.mkdir()
    (folder / "train-images-idx3-ubyte").write_bytes(_idx(np.zeros((2, 28, 28))))
    (folder / "train-labels-idx1-ubyte").write_bytes(_idx(np.zeros(2)))
    with pytest.raises(DataError, match="md5"):
        load_mnist(folder)
    assert set(MNIST_RAW_MD5) == {"mnist", "fashion-mnist"}


def test_a_data_sets_own_folder_wins_over_files_in_its_parent(tmp_path):
    parent_images = _write_set(tmp_path, seed=1)  # loose files in the parent
    own_images = _write_set(tmp_path / "fashion-mnist", seed=2)
    x, _ = load_mnist(tmp_path, dataset="fashion-mnist", check_md5=False)
    assert np.array_equal(x[:, 0].numpy(), own_images) and not np.array_equal(x[:, 0].numpy(), parent_images)


@needs_real
def test_fashion_mnist_never_loads_mnist_files(tmp_path):
    with pytest.raises(DataError, match="is the mnist file .* not fashion-mnist"):
        get_dataset("fashion-mnist", data_dir=SHARED_DATA / "mnist", split="test")
    with pytest.raises(DataError, match="is the fashion-mnist file"):
        get_dataset("mnist", data_dir=SHARED_DATA / "fashion-mnist", split="test")
    check_mnist_md5(SHARED_DATA / "mnist" / "t10k-labels-idx1-ubyte.gz", "mnist")
    # Uncompressed copies are recognised by their own md5.
    raw = tmp_path / "t10k-labels-idx1-ubyte"
    raw.write_bytes(gzip.decompress((SHARED_DATA / "mnist" / "t10k-labels-idx1-ubyte.gz").read_bytes()))
    check_mnist_md5(raw, "mnist")
    with pytest.raises(DataError, match="is the mnist file"):
        check_mnist_md5(raw, "fashion-mnist")
