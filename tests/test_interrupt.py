"""Ctrl-C and SIGTERM during `scoresde train`: the current step finishes, a checkpoint is written, --resume continues.

The signal is sent to a real `scoresde train` subprocess once its log shows training under way.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from scoresde.checkpoint import load_checkpoint
from scoresde.training.trainer import truncate_log


def _start(out, steps=1_000_000):
    cmd = [sys.executable, "-m", "scoresde", "train", "--data", "moons", "--n-train", "512", "--batch-size", "64",
           "--steps", str(steps), "--net-arg", "hidden=16", "--checkpoint-every", "1000000", "--sample-every", "-1",
           "--log-every", "1", "--device", "cpu", "--threads", "1", "--out", str(out), "--quiet"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _wait_for_steps(log, proc, n=20, timeout=60.0):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            pytest.fail(f"training ended early: {proc.communicate()}")
        if log.exists() and sum(1 for line in log.read_text().splitlines() if '"loss"' in line) >= n:
            return
        time.sleep(0.1)
    proc.kill()
    pytest.fail("training did not start in time")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_during_training_leaves_a_checkpoint_that_resume_continues(tmp_path, sig):
    out = tmp_path / "run"
    proc = _start(out)
    _wait_for_steps(out / "log.jsonl", proc)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "--resume" in stderr, stderr
    state = load_checkpoint(out)
    step = state["step"]
    assert step >= 20 and f"stopped at step {step}" in stdout
    events = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert events[-1]["event"] == "interrupted" and events[-1]["step"] == step
    # resume and finish 5 more steps: it starts where the checkpoint is, and the log has each step once
    again = subprocess.run([sys.executable, "-m", "scoresde", "train", "--resume", "--out", str(out), "--steps",
                            str(step + 5), "--quiet", "--threads", "1"], capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert f"resuming at step {step}" in again.stdout
    assert load_checkpoint(out)["step"] == step + 5
    steps = [e["step"] for e in map(json.loads, (out / "log.jsonl").read_text().splitlines()) if "loss" in e]
    assert steps == sorted(set(steps)) and steps[-1] == step + 5


def test_resume_truncates_the_log_to_the_checkpoint(tmp_path):
    log = tmp_path / "log.jsonl"
    lines = [{"step": s, "loss": 1.0} for s in range(1, 8)] + [{"event": "nonfinite", "step": 9}]
    log.write_text("".join(json.dumps(x) + "\n" for x in lines))
    assert truncate_log(log, 5) == 3
    assert [json.loads(x)["step"] for x in log.read_text().splitlines()] == [1, 2, 3, 4, 5]
    assert truncate_log(log, 5) == 0 and truncate_log(tmp_path / "missing.jsonl", 3) == 0


def test_a_second_signal_stops_at_once_and_keeps_the_last_checkpoint(tmp_path):
    out = tmp_path / "run"
    proc = _start(out)
    _wait_for_steps(out / "log.jsonl", proc, n=5)
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in stderr, stderr
    if (out / "latest.pt").exists():  # the first request may have been served before the second arrived
        assert load_checkpoint(out)["step"] >= 5
    assert torch.get_num_threads() >= 1
