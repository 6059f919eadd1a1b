"""Published and exported models through the command line: score_sde checkpoints, safetensors exports, TensorBoard.

The score_sde fixtures (tiny NCSN++/DDPM++ networks with their reference outputs, `tests/fixtures/score_sde`) stand
in for the published checkpoints: the same file format, config fields and score scaling.
"""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_runner import run

import scoresde
from scoresde.cli import main
from scoresde.data import to_levels
from scoresde.pretrained import from_score_sde
from scoresde.pretrained.spec import load_model_spec

FIXTURES = Path(__file__).parent / "fixtures" / "score_sde"


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Eight 3 x 16 x 16 8-bit images (the VE fixture's size)."""
    d = tmp_path_factory.mktemp("imgs")
    x = np.random.default_rng(0).integers(0, 256, (8, 3, 16, 16)).astype(np.uint8)
    np.save(d / "x.npy", x)
    return d / "x.npy"


def test_sample_and_likelihood_of_a_score_sde_checkpoint(images, tmp_path, capsys):
    ckpt, cfg = FIXTURES / "ncsnpp.pth", FIXTURES / "ncsnpp_ve.json"
    model = from_score_sde(ckpt, cfg)
    assert not model.centered and model.data_range == (0.0, 1.0)
    out = tmp_path / "s.npy"
    code, stdout, err = run(["sample", "--checkpoint", f"score_sde:{ckpt}", "--config", cfg, "--solver", "ddim",
                             "--steps", "3", "--num", "2", "--out", out, "--threads", "1", "--quiet"], capsys)
    assert code == 0, err
    assert np.load(out).shape == (2, *model.event_shape)
    code, stdout, err = run(["likelihood", "--checkpoint", f"score_sde:{ckpt}", "--config", cfg, "--data", images,
                             "--num", "2", "--method", "rk4", "--steps", "3", "--json", "--threads", "1", "--quiet"], capsys)
    assert code == 0, err
    s = json.loads(stdout.strip().splitlines()[-1])
    # their evaluation: data k/255 on [0, 1], dequantized as (255 x + u) / 256 (bins tiling [0, 1)), 8 bits offset
    x = torch.from_numpy(np.load(images)[:2])
    ref = scoresde.bits_per_dim(model.sde, model.score_fn, x.long(), levels=256, data_range=(0.0, 1.0),
                                generator=torch.Generator().manual_seed(0), method="rk4", steps=3, trace="hutchinson")
    assert s["levels"] == 256 and math.isclose(s["bits_per_dim"], ref.mean, rel_tol=1e-6), (s, ref.mean)


def test_a_score_sde_checkpoint_needs_its_config(capsys, tmp_path):
    code, _, err = run(["sample", "--checkpoint", f"score_sde:{FIXTURES / 'ncsnpp.pth'}", "--out", tmp_path / "s.npy"],
                       capsys)
    assert code == 1 and "--config" in err and len(err.strip().splitlines()) == 1
    code, _, err = run(["sample", "--checkpoint", tmp_path / "no-run", "--config", "vp/cifar10_ddpmpp_continuous",
                        "--out", tmp_path / "s.npy"], capsys)
    assert code == 1 and "--config applies to score_sde" in err


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("toy") / "run"
    assert main(["train", "--data", "gmm", "--n-train", "256", "--steps", "5", "--batch-size", "32", "--out", str(out),
                 "--sample-every", "-1", "--quiet", "--threads", "1"]) == 0
    return out


def test_export_to_safetensors_loads_back_into_the_same_score(toy_run, tmp_path, capsys):
    pytest.importorskip("safetensors")
    out = tmp_path / "m.safetensors"
    code, stdout, err = run(["export", toy_run, "--safetensors", out], capsys)
    assert code == 0 and out.is_file(), err
    a, b = load_model_spec(str(toy_run)), load_model_spec(f"safetensors:{out}")
    x, t = torch.randn(5, 2), torch.rand(5)
    torch.testing.assert_close(a.score_fn(x, t), b.score_fn(x, t), rtol=0, atol=0)
    code, _, err = run(["sample", "--checkpoint", f"safetensors:{out}", "--solver", "ddim", "--steps", "3", "--num", "4",
                        "--out", tmp_path / "s.npy", "--threads", "1"], capsys)
    assert code == 0, err
    code, _, err = run(["export", toy_run, "--safetensors", tmp_path / "m.bin"], capsys)
    assert code == 1 and ".safetensors" in err
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 40)
    with pytest.raises(scoresde.errors.CheckpointError, match="junk.safetensors"):
        load_model_spec(f"safetensors:{tmp_path / 'junk.safetensors'}")


def test_tensorboard_scalars_or_a_one_line_hint(tmp_path, capsys, monkeypatch):
    base = ["train", "--data", "gmm", "--n-train", "128", "--steps", "4", "--batch-size", "32", "--log-every", "2",
            "--sample-every", "-1", "--quiet", "--threads", "1"]
    try:
        import tensorboard  # noqa: F401
        have = True
    except ImportError:
        have = False
    if have:
        code, _, err = run([*base, "--out", tmp_path / "r", "--tensorboard", tmp_path / "tb"], capsys)
        assert code == 0, err
        assert list((tmp_path / "tb").glob("events.out.tfevents.*"))
    import builtins

    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name.startswith("torch.utils.tensorboard"):
            raise ImportError("no tensorboard")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    code, _, err = run([*base, "--out", tmp_path / "r2", "--tensorboard", tmp_path / "tb2"], capsys)
    assert code == 1 and "pip install tensorboard" in err and not (tmp_path / "r2" / "latest.pt").exists()


def test_image_folder_training_with_resize_and_flips(tmp_path, capsys):
    from PIL import Image

    rng = np.random.default_rng(1)
    for k in range(2):
        (tmp_path / "imgs" / f"c{k}").mkdir(parents=True)
        for i in range(6):
            size = (10, 12) if i % 2 else (12, 12)
            Image.fromarray(rng.integers(0, 255, size, dtype=np.uint8), "L").save(tmp_path / "imgs" / f"c{k}" / f"{i}.png")
    base = ["train", "--data", f"folder:{tmp_path / 'imgs'}", "--steps", "2", "--batch-size", "4", "--sample-every", "-1",
            "--quiet", "--threads", "1", "--net-arg", "channels=8"]
    code, _, err = run([*base, "--out", tmp_path / "r0"], capsys)
    assert code == 1 and "--image-size" in err  # mixed sizes
    code, _, err = run([*base, "--image-size", "8", "--random-flip", "--conditional", "--out", tmp_path / "r"], capsys)
    assert code == 0, err
    cfg = scoresde.checkpoint.read_config(tmp_path / "r")
    assert cfg.event_shape == [1, 8, 8] and cfg.random_flip and cfg.image_size == 8 and cfg.net_kwargs["num_classes"] == 2
    assert to_levels(torch.zeros(1), 256).item() == 128
