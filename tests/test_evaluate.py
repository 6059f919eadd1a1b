"""Image-path command line: presets, the CPU advice, likelihood defaults, evaluate, data folders."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from cli_runner import run

from scoresde.cli.train import _advise_cpu
from scoresde.config import ConfigError
from scoresde.data import get_dataset
from scoresde.errors import DataError
from scoresde.metrics import LeNet, QualityClassifier
from scoresde.training import TrainConfig, Trainer, read_config
from scoresde.training.presets import PRESETS, apply_preset

TINY_NET = ["--net-arg", "hidden=16", "--net-arg", "depth=1", "--net-arg", "embed_dim=8"]
TINY_UNET = ["--net-arg", "channels=8", "--net-arg", "channel_mults=[1,2]", "--net-arg", "dropout=0.0"]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """64 random 8-bit 28x28 images in a .npy file."""
    d = tmp_path_factory.mktemp("img")
    rng = np.random.default_rng(0)
    np.save(d / "imgs.npy", rng.integers(0, 256, size=(64, 1, 28, 28), dtype=np.uint8))
    return d / "imgs.npy"


def test_apply_preset_merges_and_overrides():
    opts = apply_preset("cpu", {"steps": 10, "net_kwargs": {"channels": 8}})
    assert opts["steps"] == 10 and opts["batch_size"] == PRESETS["cpu"]["batch_size"]
    assert opts["net_kwargs"]["channels"] == 8 and opts["net_kwargs"]["num_res_blocks"] == 1
    assert PRESETS["cpu"]["net_kwargs"]["channels"] == 16  # the table itself is untouched
    with pytest.raises(ConfigError, match="valid presets: cpu, gpu"):
        apply_preset("tpu")
    for name in PRESETS:  # every preset is a valid configuration
        TrainConfig(data="mnist", **apply_preset(name)).validate()


def test_train_with_the_cpu_preset(images, tmp_path, capsys):
    code, out, err = run(["train", "--data", images, "--preset", "cpu", "--steps", "2", "--batch-size", "8",
                          "--out", tmp_path / "r", "--quiet"], capsys)
    assert code == 0, err
    cfg = read_config(tmp_path / "r")
    assert cfg.net_kwargs["channels"] == 16 and cfg.ema_decay == 0.999 and cfg.lr == 2e-3
    assert cfg.weighting == "min_snr" and cfg.lr_schedule == "cosine"  # the measured recipe (docs: training guide)
    assert cfg.steps == 2 and cfg.batch_size == 8  # explicit options override the preset
    assert "note: no GPU" not in err


def test_cpu_preset_with_conditional_is_the_guided_recipe(tmp_path, capsys):
    """``--preset cpu --conditional`` on labelled images: the measured label dropout 0.2 (docs: training guide)."""
    rng = np.random.default_rng(1)
    np.savez(tmp_path / "d.npz", x=rng.integers(0, 256, size=(40, 1, 28, 28), dtype=np.uint8), y=np.arange(40) % 10)
    for name, extra in (("cond", ["--conditional"]), ("plain", [])):
        code, out, err = run(["train", "--data", tmp_path / "d.npz", "--preset", "cpu", *extra, "--steps", "1",
                              "--batch-size", "8", "--out", tmp_path / name, "--quiet"], capsys)
        assert code == 0, err
    cond, plain = read_config(tmp_path / "cond"), read_config(tmp_path / "plain")
    assert cond.conditional and cond.p_uncond == 0.2 and cond.net_kwargs["num_classes"] == 10
    assert not plain.conditional and "num_classes" not in plain.net_kwargs  # the preset alone stays unconditional


def test_gpu_sized_training_on_a_cpu_prints_the_expected_time_and_the_preset(images, tmp_path, capsys):
    # the image defaults' 1.1M-parameter U-Net, timed at a small batch to keep the test fast
    trainer = Trainer(TrainConfig(data=str(images), out=str(tmp_path / "r"), device="cpu", steps=100_000, batch_size=8),
                      progress=False)
    state = torch.random.get_rng_state()
    _advise_cpu(trainer)
    err = capsys.readouterr().err
    assert "note: no GPU; 100,000 steps of batch 8" in err and "--preset cpu" in err and "s per step, measured" in err
    assert torch.equal(torch.random.get_rng_state(), state)  # the timing leaves the run's randomness alone


def test_likelihood_defaults_to_the_runs_data_and_checks_shapes(tmp_path, capsys):
    code, _, err = run(["train", "--data", "gmm", "--n-train", "256", "--steps", "3", "--batch-size", "32", *TINY_NET,
                        "--out", tmp_path / "run", "--sample-every", "-1", "--quiet"], capsys)
    assert code == 0, err
    code, out, err = run(["likelihood", "--checkpoint", tmp_path / "run", "--num", "5", "--json", "--quiet"], capsys)
    assert code == 0, err
    s = json.loads(out.strip().splitlines()[-1])
    assert s["data"] == "gmm" and s["num"] == 5 and s["trace"] == "exact"  # 2-D: the exact trace is cheap
    assert err == ""  # --quiet
    np.save(tmp_path / "three.npy", np.zeros((4, 3), dtype=np.float32))
    code, _, err = run(["likelihood", "--checkpoint", tmp_path / "run", "--data", tmp_path / "three.npy"], capsys)
    assert code == 1 and "shape (3,)" in err and "trained on examples of shape (2,)" in err and "Traceback" not in err


def test_image_likelihood_uses_hutchinson_and_reports_progress(images, tmp_path, capsys, monkeypatch):
    code, _, err = run(["train", "--data", images, *TINY_UNET, "--steps", "2", "--batch-size", "8",
                        "--out", tmp_path / "run", "--sample-every", "-1", "--quiet"], capsys)
    assert code == 0, err
    monkeypatch.setenv("SCORESDE_PROGRESS_INTERVAL", "0")
    code, out, err = run(["likelihood", "--checkpoint", tmp_path / "run", "--num", "2", "--rtol", "1e-2", "--atol", "1e-2",
                          "--json"], capsys)
    assert code == 0, err
    s = json.loads(out.strip().splitlines()[-1])
    assert s["trace"] == "hutchinson" and s["num"] == 2 and s["levels"] == 256 and s["bits_per_dim"] > 0
    assert "likelihood" in err and "NFE" in err and "elapsed" in err  # one line per update when not a terminal


def test_evaluate_reports_quality_and_bits_per_dim(images, tmp_path, capsys):
    code, _, err = run(["train", "--data", images, *TINY_UNET, "--steps", "2", "--batch-size", "8",
                        "--out", tmp_path / "run", "--sample-every", "-1", "--quiet"], capsys)
    assert code == 0, err
    net = LeNet(1, 10)
    with torch.no_grad():  # every image is class 4 with probability e^6 / (e^6 + 9) > 0.9
        net.head.weight.zero_()
        net.head.bias.zero_()
        net.head.bias[4] = 6.0
    QualityClassifier(net, "test", [1, 28, 28], [-1.0, 1.0], 1.0).save(tmp_path / "clf.pt")
    code, out, err = run(["evaluate", "--checkpoint", tmp_path / "run", "--classifier", tmp_path / "clf.pt", "--num", "6",
                          "--steps", "3", "--batch-size", "3", "--likelihood-num", "2", "--rtol", "1e-2", "--atol", "1e-2",
                          "--json", "--quiet", "--samples-out", tmp_path / "s.png"], capsys)
    assert code == 0, err
    s = json.loads(out.strip().splitlines()[-1])
    assert s["confident_fraction"] == 1.0 and s["class_fractions"][4] == 1.0 and s["min_class_fraction"] == 0.0
    assert s["n"] == 6 and s["n_reference"] == 64 and s["fld"] >= 0 and s["sampling"]["solver"] == "ddim"
    assert s["likelihood"]["num"] == 2 and s["likelihood"]["bits_per_dim"] > 0
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"
    code, _, err = run(["evaluate", "--checkpoint", tmp_path / "run", "--classifier", tmp_path / "none.pt"], capsys)
    assert code == 1 and "no classifier at" in err and "scoresde classifier" in err


def test_evaluate_with_guidance_samples_every_class(tmp_path, capsys):
    rng = np.random.default_rng(2)
    np.savez(tmp_path / "d.npz", x=rng.integers(0, 256, size=(32, 1, 28, 28), dtype=np.uint8), y=np.arange(32) % 4)
    for name, extra in (("cond", ["--conditional"]), ("plain", [])):
        code, _, err = run(["train", "--data", tmp_path / "d.npz", *TINY_UNET, *extra, "--steps", "2", "--batch-size", "8",
                            "--out", tmp_path / name, "--sample-every", "-1", "--quiet"], capsys)
        assert code == 0, err
    QualityClassifier(LeNet(1, 4), "test", [1, 28, 28], [-1.0, 1.0], 1.0).save(tmp_path / "clf.pt")
    argv = ["evaluate", "--classifier", tmp_path / "clf.pt", "--num", "6", "--steps", "2", "--likelihood-num", "0",
            "--guidance", "1", "--quiet", "--json"]
    code, out, err = run([*argv, "--checkpoint", tmp_path / "cond"], capsys)
    assert code == 0, err
    s = json.loads(out.strip().splitlines()[-1])
    assert s["n"] == 6 and s["sampling"]["guidance"] == 1.0 and "every class in turn with guidance w = 1" in out
    code, _, err = run([*argv, "--checkpoint", tmp_path / "plain"], capsys)
    assert code == 1 and "class-conditional" in err


def test_image_data_without_a_folder_names_the_environment_variable(monkeypatch, tmp_path):
    monkeypatch.delenv("SCORESDE_DATA", raising=False)
    with pytest.raises(DataError, match="SCORESDE_DATA"):
        get_dataset("mnist")
    monkeypatch.setenv("SCORESDE_DATA", str(tmp_path))
    with pytest.raises(DataError, match="not found"):
        get_dataset("mnist")


def test_training_logs_sample_quality_at_checkpoints(images, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("scoresde.evaluate.EVAL_SAMPLES", 8)
    monkeypatch.setattr("scoresde.evaluate.EVAL_STEPS", 3)
    net = LeNet(1, 11)
    QualityClassifier(net.eval(), "test", [1, 28, 28], [-1.0, 1.0], 1.0, reject_class=10).save(tmp_path / "clf.pt")
    code, _, err = run(["train", "--data", images, *TINY_UNET, "--steps", "4", "--batch-size", "8", "--checkpoint-every", "2",
                        "--eval-every", "2", "--classifier", tmp_path / "clf.pt", "--out", tmp_path / "run",
                        "--sample-every", "-1"], capsys)
    assert code == 0, err
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    evals = [r for r in log if r.get("event") == "eval"]
    assert [r["step"] for r in evals] == [2, 4] and all(r["fld"] >= 0 for r in evals)
    assert "step 4: FLD" in err
