"""Hardening, class 2: bounded work.

Requests for absurd memory are refused before anything is allocated, decompression is bounded by
what the file declares, and multi-process runs cannot block forever.
"""

from __future__ import annotations

import gzip
import struct
import tracemalloc
import zipfile

import numpy as np
import pytest
import torch

from scoresde import distributed as D
from scoresde._utils import MEMORY_LIMIT_ENV, check_memory, memory_limit_bytes
from scoresde.cli import main
from scoresde.config import ConfigError
from scoresde.data import get_dataset, load_array, load_mnist
from scoresde.errors import DataError, DistributedError, ResourceLimitError
from scoresde.nets import build_network, network_bytes


def _write_npy_header(path, shape, payload=b"\0" * 64, descr="<f4"):
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": descr, "fortran_order": False, "shape": shape})
        f.write(payload)


# ---------------------------------------------------------------------- networks
def test_network_memory_is_counted_without_allocating():
    nbytes, n = network_bytes("mlp", dim=2, hidden=16, depth=1, embed_dim=8)
    net = build_network("mlp", (2,), hidden=16, depth=1, embed_dim=8)
    assert n == sum(p.numel() for p in net.parameters())
    assert nbytes == sum(t.numel() * t.element_size() for t in [*net.parameters(), *net.buffers()])
    # hidden = 1e8 asks for ~4e16 parameters (a float from JSON: an integral float is a valid width).
    with pytest.raises(ResourceLimitError, match="refused before allocating"):
        build_network("mlp", (2,), hidden=1e8)
    with pytest.raises(ResourceLimitError, match="'unet' network"):
        build_network("unet", (1, 28, 28), channels=2**20, num_groups=1)  # a multi-terabyte U-Net


def test_memory_limit_follows_the_environment(monkeypatch):
    monkeypatch.setenv(MEMORY_LIMIT_ENV, "1000000")
    assert memory_limit_bytes() == 10**6
    check_memory(10**6, "ok")
    with pytest.raises(ResourceLimitError, match="SCORESDE_MAX_BYTES"):
        check_memory(10**6 + 1, "too much")
    with pytest.raises(ResourceLimitError):  # ~3.2 MB of parameters
        build_network("mlp", (2,), hidden=256, depth=3)
    build_network("mlp", (2,), hidden=16, depth=1, embed_dim=8)


def test_cli_refuses_a_huge_network_up_front(tmp_path, capsys):
    code = main(["train", "--data", "moons", "--n-train", "64", "--steps", "1", "--net-arg", "hidden=1e8",
                 "--out", str(tmp_path / "r"), "--quiet", "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err and "refused before allocating" in err
    assert not (tmp_path / "r" / "latest.pt").exists()


# ---------------------------------------------------------------------- arrays
def test_npy_header_claiming_a_huge_shape_is_refused(tmp_path):
    _write_npy_header(tmp_path / "huge.npy", (10**12, 2))
    with pytest.raises(ResourceLimitError, match=r"\(1000000000000, 2\)"):
        load_array(tmp_path / "huge.npy")
    with pytest.raises(ResourceLimitError):
        get_dataset(str(tmp_path / "huge.npy"))
    with zipfile.ZipFile(tmp_path / "huge.npz", "w") as z:
        z.write(tmp_path / "huge.npy", "x.npy")
    with pytest.raises(ResourceLimitError):
        load_array(tmp_path / "huge.npz")


def test_npy_header_larger_than_the_file_is_refused(tmp_path):
    _write_npy_header(tmp_path / "short.npy", (100, 2))  # 800 bytes declared, 64 held
    with pytest.raises(DataError, match="declares shape"):
        load_array(tmp_path / "short.npy")
    np.savez_compressed(tmp_path / "fine.npz", x=np.ones((4, 2), np.float32))
    assert load_array(tmp_path / "fine.npz").shape == (4, 2)


def test_cli_reports_a_huge_array_in_one_line(tmp_path, capsys):
    _write_npy_header(tmp_path / "huge.npy", (10**12, 2))
    code = main(["train", "--data", str(tmp_path / "huge.npy"), "--steps", "1", "--out", str(tmp_path / "r"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err and err.startswith("scoresde: error:") and err.count("\n") == 1


# ---------------------------------------------------------------------- IDX / gzip
def _idx_header(*dims):
    return bytes([0, 0, 8, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims)


def test_gzip_bomb_is_not_inflated(tmp_path):
    folder = tmp_path / "mnist"
    folder.mkdir()
    # Images: a valid header for 5 images, then 64 MB of zeros that compress to ~64 KB.
    with gzip.open(folder / "train-images-idx3-ubyte.gz", "wb", compresslevel=1) as f:
        f.write(_idx_header(5, 28, 28))
        block = b"\0" * (1 << 20)
        for _ in range(64):
            f.write(block)
    with gzip.open(folder / "train-labels-idx1-ubyte.gz", "wb") as f:
        f.write(_idx_header(5) + bytes(5))
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match="inflates beyond its declared size"):
            load_mnist(folder, check_md5=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * 2**20  # the whole 64 MB payload was never held


def test_idx_header_claiming_too_much_is_refused(tmp_path, monkeypatch):
    folder = tmp_path / "mnist"
    folder.mkdir()
    with gzip.open(folder / "train-images-idx3-ubyte.gz", "wb") as f:
        f.write(_idx_header(2**31, 28, 28) + bytes(784))
    with gzip.open(folder / "train-labels-idx1-ubyte.gz", "wb") as f:
        f.write(_idx_header(1) + bytes(1))
    with pytest.raises(ResourceLimitError, match="IDX header"):
        load_mnist(folder, check_md5=False)


# ---------------------------------------------------------------------- torchrun
def test_collective_timeout_is_configurable(monkeypatch):
    monkeypatch.delenv(D.TIMEOUT_ENV, raising=False)
    assert D.collective_timeout().total_seconds() == D.DEFAULT_TIMEOUT_S
    monkeypatch.setenv(D.TIMEOUT_ENV, "12.5")
    assert D.collective_timeout().total_seconds() == 12.5
    for bad in ("0", "-3", "soon", "nan"):
        monkeypatch.setenv(D.TIMEOUT_ENV, bad)
        with pytest.raises(ConfigError, match=D.TIMEOUT_ENV):
            D.collective_timeout()


def test_process_group_is_joined_with_the_timeout(monkeypatch):
    seen = {}

    def fake_init(backend, **kwargs):
        seen.update(kwargs, backend=backend)

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv(D.TIMEOUT_ENV, "7")
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.distributed, "init_process_group", fake_init)
    info = D.init_distributed("cpu")
    assert info.world_size == 2 and seen["backend"] == "gloo" and seen["timeout"].total_seconds() == 7


def test_a_timed_out_collective_becomes_one_clear_error():
    e = RuntimeError("[gloo/transport/tcp/unbound_buffer.cc:81] Timed out waiting 2000ms for recv operation to complete")
    assert D.is_collective_failure(e)
    err = D.collective_failure(e)
    assert isinstance(err, DistributedError) and D.TIMEOUT_ENV in str(err) and "\n" not in str(err)
    assert not D.is_collective_failure(RuntimeError("shape mismatch"))


_STALL_SCRIPT = """
import sys, time, torch
from scoresde import distributed as D
info = D.init_distributed("cpu")
if info.rank == 1:
    time.sleep(600)  # a stalled rank: without the timeout, rank 0 would wait for it
    sys.exit(0)
try:
    D.all_reduce_mean(torch.ones(2), info)
except Exception as e:
    assert D.is_collective_failure(e), repr(e)
    print("scoresde: error:", D.collective_failure(e), file=sys.stderr)
    sys.exit(1)
sys.exit(0)
"""


@pytest.mark.slow
def test_a_stalled_rank_does_not_block_the_others_forever(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    (tmp_path / "stall.py").write_text(_STALL_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", D.TIMEOUT_ENV: "3",
           "PYTHONPATH": str(repo) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("SCORESDE_MAX_BYTES", None)
    # The bound below (120 s) is far below the stall (600 s): only the collective timeout can end the run in time.
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(tmp_path / "stall.py")], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "did not answer within the collective timeout (3 s" in proc.stderr, proc.stderr[-2000:]
