"""The ``scoresde`` command line: round trip train -> sample -> likelihood, the demo, and bad input."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_runner import run

from scoresde.checkpoint import load_checkpoint
from scoresde.cli import main
from scoresde.data import dequantization_range, get_dataset, to_levels
from scoresde.likelihood import bits_per_dim, log_likelihood
from scoresde.training import load_model

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("SCORESDE_DATA") or "/nonexistent-scoresde-data")
TINY_NET = ["--net-arg", "hidden=16", "--net-arg", "depth=1", "--net-arg", "embed_dim=8"]


def assert_user_error(code, err, expected_code=1, match=None):
    assert code == expected_code, err
    assert "Traceback" not in err
    assert "scoresde: error:" in err or (expected_code == 2 and "error:" in err)
    if match:
        assert match in err, err


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny trained 2-D run shared by the tests of this module."""
    d = tmp_path_factory.mktemp("cli")
    code = main(["train", "--data", "gmm", "--n-train", "512", "--steps", "8", "--batch-size", "64", *TINY_NET,
                 "--out", str(d / "run"), "--sample-every", "-1", "--checkpoint-every", "4", "--quiet", "--device", "cpu"])
    assert code == 0
    test = get_dataset("gmm", split="test", n=40).data.numpy()
    np.save(d / "test.npy", test)
    return d


# ---------------------------------------------------------------------- round trip
def test_train_sample_likelihood_round_trip(trained, capsys):
    d = trained
    assert load_checkpoint(d / "run")["step"] == 8
    code, out, _ = run(["sample", "--checkpoint", d / "run", "--solver", "ddim", "--steps", "20", "--num", "50",
                        "--seed", "3", "--out", d / "s.npy"], capsys)
    assert code == 0 and "NFE 21" in out  # 20 steps + the final denoising evaluation
    x = np.load(d / "s.npy")
    assert x.shape == (50, 2) and np.isfinite(x).all()
    # Same seed, same samples; the PNG path writes a figure.
    run(["sample", "--checkpoint", d / "run", "--solver", "ddim", "--steps", "20", "--num", "50", "--seed", "3",
         "--out", d / "s2.npy"], capsys)
    assert np.array_equal(np.load(d / "s2.npy"), x)
    code, _, _ = run(["sample", "--checkpoint", d / "run" / "latest.pt", "--solver", "pc", "--steps", "10",
                      "--snr", "0.1", "--corrector-steps", "1", "--num", "30", "--out", d / "s.png"], capsys)
    assert code == 0 and (d / "s.png").read_bytes()[:4] == b"\x89PNG"

    code, out, _ = run(["likelihood", "--checkpoint", d / "run", "--data", d / "test.npy", "--json"], capsys)
    assert code == 0
    summary = json.loads(out.strip().splitlines()[-1])
    assert set(summary) >= {"log_prob_mean", "log_prob_stderr", "nfe", "num"} and "bits_per_dim" not in summary
    assert summary["num"] == 40 and summary["nfe"] > 0
    # The CLI's number is the library's number for the same model and data.
    sde, score, _ = load_model(d / "run")
    x = torch.from_numpy(np.load(d / "test.npy")).double()
    ref = log_likelihood(sde, score, x, score_dtype=torch.float32).log_prob
    assert summary["log_prob_mean"] == pytest.approx(float(ref.mean()), rel=1e-6)
    assert summary["log_prob_stderr"] == pytest.approx(float(ref.std()) / math.sqrt(40), rel=1e-6)

    code, out, _ = run(["likelihood", "--checkpoint", d / "run", "--data", d / "test.npy", "--trace", "hutchinson",
                        "--n-probes", "4", "--json"], capsys)
    hutch = json.loads(out.strip().splitlines()[-1])
    # Hutchinson is unbiased; with 40 points and 4 probes it lands within a few standard errors of the exact value.
    assert abs(hutch["log_prob_mean"] - summary["log_prob_mean"]) < 5 * hutch["log_prob_stderr"] + 1e-3


def test_discrete_data_reports_bits_per_dim(tmp_path, capsys):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, size=(64, 1, 4, 4), dtype=np.uint8)
    np.save(tmp_path / "imgs.npy", imgs)
    code, _, err = run(["train", "--data", tmp_path / "imgs.npy", "--net", "mlp", *TINY_NET, "--steps", "3",
                        "--batch-size", "16", "--out", tmp_path / "run", "--sample-every", "-1", "--quiet"], capsys)
    assert code == 0, err
    code, out, _ = run(["likelihood", "--checkpoint", tmp_path / "run", "--data", tmp_path / "imgs.npy", "--num", "6",
                        "--json", "--seed", "1"], capsys)
    assert code == 0
    s = json.loads(out.strip().splitlines()[-1])
    assert s["levels"] == 256 and s["num"] == 6
    # bits/dim and nats agree through the dequantization Jacobian: bin width w = 2/255 in [-1, 1].
    D, w = 16, 2.0 / 255
    assert s["bits_per_dim"] == pytest.approx(-(s["log_prob_mean"] + D * math.log(w)) / (D * math.log(2)), rel=1e-9)
    # ... and equal the library's bits_per_dim on bins centred on the data's levels.
    sde, score, cfg = load_model(tmp_path / "run")
    x = get_dataset(str(tmp_path / "imgs.npy")).data[:6]
    ref = bits_per_dim(sde, score, to_levels(x), levels=256, data_range=dequantization_range(256, (-1, 1)),
                       generator=torch.Generator().manual_seed(1), eps=1e-5, method="dopri5", rtol=1e-5, atol=1e-5, trace="exact")
    assert s["bits_per_dim"] == pytest.approx(ref.mean, rel=1e-6)


def test_dequantization_bins_are_centred_on_the_levels():
    lo, hi = dequantization_range(256, (-1.0, 1.0))
    w = (hi - lo) / 256
    assert w == pytest.approx(2 / 255)
    # bits_per_dim maps level k to lo + w (k + u), u ~ U[0, 1): the bin centre is the data value of level k.
    for k in (0, 100, 255):
        assert lo + w * (k + 0.5) == pytest.approx(-1 + 2 * k / 255)


def test_resume_continues_and_takes_options_from_the_checkpoint(tmp_path, capsys):
    args = ["train", "--data", "moons", "--n-train", "256", "--batch-size", "32", *TINY_NET, "--out", tmp_path / "r",
            "--sample-every", "-1", "--quiet"]
    assert run([*args, "--steps", "4"], capsys)[0] == 0
    # Without --resume, an existing run is never overwritten.
    code, _, err = run([*args, "--steps", "8"], capsys)
    assert_user_error(code, err, match="--resume")
    # With --resume, only the changed option needs to be given.
    code, out, err = run(["train", "--out", tmp_path / "r", "--resume", "--steps", "8", "--quiet"], capsys)
    assert code == 0, err
    assert "resuming at step 4" in out and load_checkpoint(tmp_path / "r")["step"] == 8
    code, _, err = run(["train", "--out", tmp_path / "r", "--resume", "--steps", "10", "--batch-size", "64"], capsys)
    assert_user_error(code, err, match="batch_size: checkpoint 32, now 64")


def test_nan_loss_exits_nonzero_and_keeps_the_checkpoint(tmp_path, capsys):
    args = ["train", "--data", "moons", "--n-train", "256", "--batch-size", "32", *TINY_NET, "--out", tmp_path / "r",
            "--sample-every", "-1", "--checkpoint-every", "2", "--quiet"]
    assert run([*args, "--steps", "4"], capsys)[0] == 0
    before = (tmp_path / "r" / "latest.pt").read_bytes()
    code, _, err = run(["train", "--out", tmp_path / "r", "--resume", "--steps", "40", "--lr", "1e30", "--quiet"], capsys)
    assert_user_error(code, err, match="last good checkpoint")
    assert (tmp_path / "r" / "latest.pt").read_bytes() == before
    assert load_checkpoint(tmp_path / "r")["step"] == 4


# ---------------------------------------------------------------------- bad input
def test_bad_training_input(tmp_path, capsys):
    base = ["train", "--steps", "2", "--out", tmp_path / "o", "--quiet"]
    code, _, err = run([*base, "--data", tmp_path / "missing.npy"], capsys)
    assert_user_error(code, err, match="no such file")
    (tmp_path / "corrupt.npy").write_bytes(b"\x93NUMPY garbage")
    code, _, err = run([*base, "--data", tmp_path / "corrupt.npy"], capsys)
    assert_user_error(code, err)
    np.save(tmp_path / "flat.npy", np.zeros(5, dtype=np.float32))
    code, _, err = run([*base, "--data", tmp_path / "flat.npy"], capsys)
    assert_user_error(code, err, match="shape")
    nan = np.zeros((8, 2), dtype=np.float32)
    nan[2, 0] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    code, _, err = run([*base, "--data", tmp_path / "nan.npy"], capsys)
    assert_user_error(code, err)
    code, _, err = run([*base, "--data", "mooons"], capsys)
    assert_user_error(code, err, match="unknown data set")
    code, _, err = run([*base, "--data", "moons", "--ema-decay", "1.5"], capsys)
    assert_user_error(code, err, match="ema_decay")
    code, _, err = run([*base, "--data", "moons", "--net-arg", "widht=3"], capsys)
    assert_user_error(code, err, match="widht")
    assert not (tmp_path / "o" / "latest.pt").exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "--bogus-option"],
        ["train", "--steps", "0"],
        ["train", "--lr", "-1"],
    ],
)
def test_malformed_command_lines_exit_2(argv, capsys):
    code, _, err = run(argv, capsys)
    assert code == 2 and "Traceback" not in err and "error:" in err
    assert len(err.strip().splitlines()) == 1 and "usage:" not in err  # one line, no usage block


@pytest.mark.parametrize(
    "argv,suggestion",
    [
        (["train", "--sde", "cld"], None),
        (["train", "--sde", "VP"], "vp"),
        (["sample", "--solver", "nope"], None),
        (["sample", "--solver", "dpm++"], "dpmpp_2m"),
        (["sample", "--solver", "DPMPP_2M"], "dpmpp_2m"),
        (["sample", "--grid", "karas"], "karras"),
        (["likelihood", "--trace", "approx"], None),
        (["likelihood", "--trace", "hutchinsn"], "hutchinson"),
        (["train", "--weighting", "likelyhood"], "likelihood"),
        (["smaple"], "sample"),
        (["frobnicate"], None),
    ],
)
def test_a_mistyped_choice_is_one_line_with_a_suggestion(argv, suggestion, capsys):
    code, _, err = run(argv, capsys)
    assert code == 1 and "Traceback" not in err and "usage:" not in err, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("scoresde: error:"), err
    assert "unknown" in err
    if suggestion is not None:
        assert f"did you mean {suggestion}?" in err, err


def test_bad_sampling_and_likelihood_input(trained, tmp_path, capsys):
    d = trained
    code, _, err = run(["sample", "--checkpoint", tmp_path / "none", "--out", tmp_path / "x.npy"], capsys)
    assert_user_error(code, err, match="no checkpoint")
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint at all")
    code, _, err = run(["sample", "--checkpoint", tmp_path / "bad.pt", "--out", tmp_path / "x.npy"], capsys)
    assert_user_error(code, err, match="not a readable checkpoint")
    code, _, err = run(["sample", "--checkpoint", d / "run", "--solver", "ode", "--snr", "0.1", "--out", tmp_path / "x.npy"], capsys)
    assert_user_error(code, err, match="does not take --snr")
    code, _, err = run(["sample", "--checkpoint", d / "run", "--solver", "ode", "--method", "rk99", "--out", tmp_path / "x.npy"], capsys)
    assert_user_error(code, err, match="unknown ODE method")
    code, _, err = run(["sample", "--checkpoint", d / "run", "--out", tmp_path / "x.txt"], capsys)
    assert_user_error(code, err, match=".npy or .png")
    np.save(tmp_path / "wide.npy", np.zeros((4, 3), dtype=np.float32))
    code, _, err = run(["likelihood", "--checkpoint", d / "run", "--data", tmp_path / "wide.npy"], capsys)
    assert_user_error(code, err, match="shape (3,)")
    code, _, err = run(["likelihood", "--checkpoint", d / "run", "--data", tmp_path / "missing.npy"], capsys)
    assert_user_error(code, err, match="no such file")
    assert not (tmp_path / "x.npy").exists() and not (tmp_path / "x.txt").exists()


def test_console_entry_point_reports_errors_without_traceback(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-m", "scoresde", "sample", "--checkpoint", str(tmp_path / "nothing")],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.startswith("scoresde: error:") and "Traceback" not in proc.stderr


# ---------------------------------------------------------------------- demo and real data
def test_demo_quick(tmp_path, capsys):
    code, out, err = run(["demo", "--quick", "--steps", "150", "--out", tmp_path / "demo", "--quiet"], capsys)
    assert code == 0, err
    assert (tmp_path / "demo" / "demo.png").read_bytes()[:4] == b"\x89PNG"
    for name in ("euler_maruyama", "pc", "ode"):
        assert name in out
    assert "test NLL" in out and "true entropy" in out
    # the quick demo's short run keeps the learning rate constant (the cosine decay costs NLL at 2,000 steps)
    assert json.loads((tmp_path / "demo" / "model" / "config.json").read_text())["lr_schedule"] == "constant"


@pytest.mark.slow
@pytest.mark.skipif(not (DATA_DIR / "mnist").is_dir(), reason="MNIST not found: set SCORESDE_DATA")
def test_mnist_round_trip(tmp_path, capsys):
    code, _, err = run(["train", "--data", "mnist", "--data-dir", DATA_DIR, "--steps", "2", "--batch-size", "8",
                        "--net-arg", "channels=8", "--out", tmp_path / "m", "--sample-every", "-1", "--quiet"], capsys)
    assert code == 0, err
    code, out, err = run(["likelihood", "--checkpoint", tmp_path / "m", "--data", "mnist", "--data-dir", DATA_DIR,
                          "--num", "2", "--trace", "hutchinson", "--rtol", "1e-3", "--atol", "1e-3", "--json"], capsys)
    assert code == 0, err
    s = json.loads(out.strip().splitlines()[-1])
    assert s["levels"] == 256 and math.isfinite(s["bits_per_dim"]) and s["bits_per_dim"] > 0
