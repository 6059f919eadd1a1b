"""Checkpoints: atomic writes, code-free loading, clear errors for missing/corrupt/incompatible files."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from scoresde import checkpoint as ckpt_mod
from scoresde.checkpoint import LATEST, checkpoint_file, load_checkpoint, save_checkpoint
from scoresde.errors import CheckpointError
from scoresde.training import TrainConfig, Trainer, load_model

REPO = Path(__file__).resolve().parents[1]


def _state(step: int, size: int = 10):
    return {
        "step": step,
        "config": TrainConfig().to_json(),
        "model": {"w": torch.full((size,), float(step))},
        "ema": {"decay": 0.9, "num_updates": step, "state": {"w": torch.zeros(size)}},
    }


def test_round_trip_file_and_directory(tmp_path):
    path = save_checkpoint(_state(3), tmp_path)
    assert path == tmp_path / LATEST
    for where in (tmp_path, tmp_path / LATEST):
        s = load_checkpoint(where)
        assert s["step"] == 3 and torch.equal(s["model"]["w"], torch.full((10,), 3.0))
    assert checkpoint_file(tmp_path) == tmp_path / LATEST
    # No temporary file is left behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == [LATEST]


def test_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="no checkpoint in"):
        load_checkpoint(tmp_path)  # an empty directory


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_checkpoint(tmp_path, damage):
    path = save_checkpoint(_state(1, size=1000), tmp_path)
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(os.urandom(len(data)))
    else:
        path.write_bytes(b"")
    with pytest.raises(CheckpointError, match="not a readable checkpoint|not a scoresde checkpoint"):
        load_checkpoint(path)


class _Payload:
    """Pickling this object would run ``open(marker, 'w')`` when unpickled by an unsafe loader."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_loading_never_executes_code(tmp_path):
    marker = tmp_path / "executed"
    path = tmp_path / "evil.pt"
    torch.save({**_state(1), "format": ckpt_mod.FORMAT, "version": ckpt_mod.VERSION, "x": _Payload(str(marker))}, path)
    with pytest.raises(CheckpointError, match="needs code execution to load .*refused"):
        load_checkpoint(path)
    assert not marker.exists()


def test_foreign_or_incomplete_file(tmp_path):
    torch.save({"state_dict": {"w": torch.zeros(2)}}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a scoresde checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    torch.save({"format": ckpt_mod.FORMAT, "version": ckpt_mod.VERSION, "step": 1}, tmp_path / "partial.pt")
    with pytest.raises(CheckpointError, match="incomplete"):
        load_checkpoint(tmp_path / "partial.pt")
    torch.save({"format": ckpt_mod.FORMAT, "version": 99}, tmp_path / "future.pt")
    with pytest.raises(CheckpointError, match="version 99"):
        load_checkpoint(tmp_path / "future.pt")


def test_failed_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    save_checkpoint(_state(1), tmp_path)
    real_save = torch.save

    def dying_save(obj, f, *a, **k):
        f.write(b"PK\x03\x04 partial bytes")  # some bytes hit the temporary file, then the writer dies
        raise KeyboardInterrupt

    monkeypatch.setattr(ckpt_mod.torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(_state(2), tmp_path)
    monkeypatch.setattr(ckpt_mod.torch, "save", real_save)
    assert load_checkpoint(tmp_path)["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [LATEST]


def test_sigkill_mid_write_never_corrupts_latest(tmp_path):
    """A writer killed at an arbitrary moment leaves a loadable latest.pt (old or new, never partial)."""
    script = textwrap.dedent(
        f"""
        import sys, torch
        sys.path.insert(0, {str(REPO)!r})
        from scoresde.checkpoint import save_checkpoint
        from scoresde.training import TrainConfig
        cfg = TrainConfig().to_json()
        step = 0
        while True:
            step += 1
            w = torch.full((4_000_000,), float(step))  # 16 MB: each write takes a while
            save_checkpoint({{"step": step, "config": cfg, "model": {{"w": w}}, "ema": {{}}}}, {str(tmp_path)!r})
            print(step, flush=True)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        # Wait until at least two checkpoints were written, then kill at a random point of a write.
        assert proc.stdout.readline() and proc.stdout.readline()
        time.sleep(0.05 + 0.1 * torch.rand(()).item())
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    state = load_checkpoint(tmp_path)
    step = state["step"]
    assert step >= 2
    assert torch.equal(state["model"]["w"], torch.full((4_000_000,), float(step)))


def test_load_model_rejects_mismatched_weights(tmp_path):
    cfg = TrainConfig(data="moons", n_train=64, steps=2, batch_size=8, net_kwargs=dict(hidden=8, depth=1),
                      out=str(tmp_path / "run"), sample_every=-1, device="cpu")
    Trainer(cfg).train()
    sde, score, c = load_model(tmp_path / "run")
    assert c.event_shape == [2] and c.net == "mlp"
    state = load_checkpoint(tmp_path / "run")
    stored = TrainConfig.from_json(state["config"])
    state["config"] = stored.replace(net_kwargs={**stored.net_kwargs, "hidden": 16}).to_json()
    state.pop("format"), state.pop("version")
    save_checkpoint(state, tmp_path / "bad")
    with pytest.raises(CheckpointError, match="do not fit"):
        load_model(tmp_path / "bad")
