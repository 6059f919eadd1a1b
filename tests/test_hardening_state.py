"""Hardening, class 3: runs never lose or poison their state.

The last good checkpoint is really good (finite weights, finite loss), resume never silently
builds another model, one run directory has one trainer, damaged checkpoints are recognised, and
a finished multi-process run tears down cleanly.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from scoresde import distributed as D
from scoresde.checkpoint import load_checkpoint, payload_digest, save_checkpoint
from scoresde.cli import main
from scoresde.errors import CheckpointError, NonFiniteError, RunLockedError
from scoresde.training import TrainConfig, Trainer, load_model
from scoresde.training.runlock import LOCK_FILE, RunLock

REPO = Path(__file__).resolve().parents[1]
TINY_NET = {"hidden": 16, "depth": 1, "embed_dim": 8}
TINY_ARGS = ["--net-arg", "hidden=16", "--net-arg", "depth=1", "--net-arg", "embed_dim=8"]


def tiny(tmp_path, **kw) -> TrainConfig:
    base = dict(data="gmm", n_train=256, steps=4, batch_size=32, net_kwargs=dict(TINY_NET), out=str(tmp_path / "run"),
                device="cpu", sample_every=-1, checkpoint_every=2, log_every=1)
    return TrainConfig(**{**base, **kw})


def _flip_tensor_byte(path: Path, member_suffix: str = "data/0", at: int = 0) -> None:
    """Flip one byte inside a stored tensor of a torch zip checkpoint (the archive stays readable)."""
    with zipfile.ZipFile(path) as z:
        info = next(i for i in z.infolist() if i.filename.endswith(member_suffix))
    data = bytearray(path.read_bytes())
    name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26 : info.header_offset + 30])
    data[info.header_offset + 30 + name_len + extra_len + at] ^= 0x40
    path.write_bytes(bytes(data))


# ---------------------------------------------------------------------- the last good checkpoint
def test_checkpoint_of_poisoned_weights_is_never_written(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--data", "moons", "--n-train", "256", "--batch-size", "32", *TINY_ARGS, "--out", str(run),
                 "--sample-every", "-1", "--steps", "4", "--quiet"]) == 0
    capsys.readouterr()
    # A learning rate of 1e30 makes the weights ~1e30 after one step: finite, but their loss is not.
    # With a checkpoint every step, such weights used to become the "last good" checkpoint.
    code = main(["train", "--out", str(run), "--resume", "--steps", "40", "--lr", "1e30", "--checkpoint-every", "1", "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err and "last good checkpoint" in err
    state = load_checkpoint(run)
    assert f"(step {state['step']}" in err
    assert all(bool(torch.isfinite(v).all()) and float(v.abs().max()) < 1e10 for v in state["model"].values())
    # Resuming with a sensible learning rate works at once.
    code = main(["train", "--out", str(run), "--resume", "--steps", str(state["step"] + 3), "--lr", "1e-3",
                 "--checkpoint-every", "1", "--quiet"])
    assert code == 0, capsys.readouterr().err
    assert load_checkpoint(run)["step"] == state["step"] + 3


def test_health_check_names_what_is_wrong(tmp_path):
    trainer = Trainer(tiny(tmp_path))
    assert trainer.health_check() is None
    with torch.no_grad():
        next(trainer.net.parameters()).fill_(1e30)
    assert "loss" in trainer.health_check()
    with torch.no_grad():
        next(trainer.net.parameters()).fill_(float("nan"))
    assert "non-finite weights" in trainer.health_check()
    with pytest.raises(NonFiniteError, match="no checkpoint was written"):
        trainer.save()
    assert not (tmp_path / "run" / "latest.pt").exists()
    trainer._release()


def test_non_finite_ema_weights_are_refused_on_resume_and_load(tmp_path):
    Trainer(tiny(tmp_path)).train()
    state = load_checkpoint(tmp_path / "run")
    key = next(iter(state["ema"]["state"]))
    state["ema"]["state"][key] = torch.full_like(state["ema"]["state"][key], float("nan"))
    save_checkpoint(state, tmp_path / "run")  # a valid digest: the file is intact, its contents are not usable
    with pytest.raises(CheckpointError, match="non-finite EMA weights"):
        Trainer(tiny(tmp_path, steps=6), resume=True)
    with pytest.raises(CheckpointError, match="non-finite EMA weights"):
        load_model(tmp_path / "run")
    load_model(tmp_path / "run", use_ema=False)  # the raw weights are fine


# ---------------------------------------------------------------------- resume
def test_resume_without_a_checkpoint_uses_the_runs_config(tmp_path, capsys):
    run = tmp_path / "run"
    args = ["--n-train", "256", "--batch-size", "32", *TINY_ARGS, "--sample-every", "-1", "--quiet"]
    assert main(["train", "--data", "swiss_roll", "--out", str(run), "--steps", "2", *args]) == 0
    (run / "latest.pt").unlink()  # as if the run died before its first checkpoint
    capsys.readouterr()
    assert main(["train", "--out", str(run), "--resume", "--steps", "3", "--quiet"]) == 0
    assert json.loads((run / "config.json").read_text())["data"] == "swiss_roll"  # not the default moons
    assert load_checkpoint(run)["step"] == 3
    (run / "latest.pt").unlink()
    capsys.readouterr()
    code = main(["train", "--out", str(run), "--resume", "--steps", "3", "--data", "gmm", "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and "defines another run" in err and "data" in err
    assert json.loads((run / "config.json").read_text())["data"] == "swiss_roll"


def test_trainer_resume_without_checkpoint_checks_config_json(tmp_path):
    Trainer(tiny(tmp_path, steps=2)).train()
    (tmp_path / "run" / "latest.pt").unlink()
    with pytest.raises(CheckpointError, match="defines another run"):
        Trainer(tiny(tmp_path, steps=2, seed=5), resume=True)
    Trainer(tiny(tmp_path, steps=2), resume=True).train()


# ---------------------------------------------------------------------- one trainer per directory
def test_second_trainer_on_the_same_directory_is_refused(tmp_path):
    first = Trainer(tiny(tmp_path))
    with pytest.raises(RunLockedError, match=rf"pid {os.getpid()} on host {socket.gethostname()}"):
        Trainer(tiny(tmp_path))
    first.train()  # releases the lock
    assert not (tmp_path / "run" / LOCK_FILE).exists()
    Trainer(tiny(tmp_path, steps=6), resume=True).train()


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    dead = int(proc.stdout)
    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK_FILE).write_text(json.dumps({"pid": dead, "host": socket.gethostname(), "started": 0}))
    lock = RunLock(run).acquire()
    assert lock.took_over["pid"] == dead
    assert json.loads((run / LOCK_FILE).read_text())["pid"] == os.getpid()
    lock.release()
    assert not (run / LOCK_FILE).exists()


def test_lock_of_a_live_process_is_respected(tmp_path):
    run = tmp_path / "run"
    code = ("import sys, time; from scoresde.training.runlock import RunLock; l = RunLock(sys.argv[1]).acquire(); "
            "print('locked', flush=True); time.sleep(60)")
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    holder = subprocess.Popen([sys.executable, "-c", code, str(run)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunLockedError, match=f"pid {holder.pid}"):
            RunLock(run).acquire()
    finally:
        holder.kill()
        holder.wait()
    RunLock(run).acquire().release()  # the kernel dropped the dead holder's lock


@pytest.mark.slow
def test_two_concurrent_cli_trainers_one_refuses(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, "-m", "scoresde", "train", "--data", "gmm", "--n-train", "256", "--batch-size", "32", *TINY_ARGS,
           "--steps", "2000", "--sample-every", "-1", "--out", str(tmp_path / "run"), "--quiet"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(c for c, _ in results)
    assert codes == [0, 1], results
    assert any("in use by another trainer" in err for _, err in results)


# ---------------------------------------------------------------------- integrity
def test_flipped_weights_are_detected_on_every_load_path(tmp_path, capsys):
    Trainer(tiny(tmp_path)).train()
    path = tmp_path / "run" / "latest.pt"
    state = load_checkpoint(path)
    assert state["digest"] == payload_digest({k: v for k, v in state.items() if k != "digest"})
    _flip_tensor_byte(path, at=1)
    with pytest.raises(CheckpointError, match="corrupt.*SHA-256"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="corrupt"):
        load_model(tmp_path / "run")
    with pytest.raises(CheckpointError, match="corrupt"):
        Trainer(tiny(tmp_path, steps=6), resume=True)
    code = main(["sample", "--checkpoint", str(tmp_path / "run"), "--num", "4", "--out", str(tmp_path / "s.npy")])
    err = capsys.readouterr().err
    assert code == 1 and "corrupt" in err and "Traceback" not in err


def test_digest_is_stable_and_sensitive():
    a = {"w": torch.arange(6.0).reshape(2, 3), "step": 3, "cfg": "{}", "opt": {0: {"m": torch.zeros(2)}}, "none": None}
    b = {"none": None, "opt": {0: {"m": torch.zeros(2)}}, "cfg": "{}", "step": 3, "w": torch.arange(6.0).reshape(2, 3)}
    assert payload_digest(a) == payload_digest(b)
    for change in ({"step": 4}, {"w": torch.arange(6.0).reshape(3, 2)}, {"w": torch.arange(6.0).reshape(2, 3).double()},
                   {"cfg": "{ }"}, {"opt": {1: {"m": torch.zeros(2)}}}):
        assert payload_digest({**a, **change}) != payload_digest(a)


# ---------------------------------------------------------------------- DDP tear-down
def test_teardown_errors_do_not_fail_a_finished_run(monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "barrier", lambda *a, **k: calls.append("barrier"))

    def broken_destroy():
        calls.append("destroy")
        raise RuntimeError("Connection reset by peer")

    monkeypatch.setattr(torch.distributed, "destroy_process_group", broken_destroy)
    info = D.DistInfo(rank=1, world_size=2, owns_group=True)
    D.shutdown(info, graceful=True)  # must not raise
    assert calls == ["barrier", "destroy"]
    assert "tearing down the process group failed" in capsys.readouterr().err
