"""Class-conditional training on labelled data, and the conditional command line."""

import numpy as np
import pytest
import torch

import scoresde
from scoresde import guidance as G
from scoresde.cli import main
from scoresde.config import ConfigError
from scoresde.data import get_dataset, toy_gmm
from scoresde.errors import DataError
from scoresde.training import TrainConfig, Trainer, load_model


@pytest.fixture(scope="module")
def gmm_run(tmp_path_factory):
    """A class-conditional MLP trained briefly on the 8-component toy mixture (labels = components)."""
    out = tmp_path_factory.mktemp("cond") / "run"
    cfg = TrainConfig(data="gmm", conditional=True, p_uncond=0.1, steps=300, n_train=20000, out=str(out),
                      sample_every=-1, net_kwargs=dict(hidden=64, depth=2), device="cpu", lr=3e-3, warmup=50)
    Trainer(cfg, progress=False).train()
    return out


def test_class_conditional_mlp_puts_class_k_samples_in_component_k(gmm_run):
    """Measured while choosing the length: 85-98% per class after 150 steps, 100% for every class after 600."""
    sde, score, cfg = load_model(gmm_run)
    assert cfg.conditional and cfg.net_kwargs["num_classes"] == 8 and score.num_classes == 8
    gmm = toy_gmm()
    for k in range(8):
        x = scoresde.sample(sde, G.conditional(score, k), (200, 2), solver="ddim", steps=50,
                            generator=torch.Generator().manual_seed(k))
        frac = float((gmm.responsibilities(x).argmax(1) == k).float().mean())
        assert frac > 0.9, f"class {k}: only {frac:.2f} of the samples in component {k}"
    # the null label gives the whole mixture: every component gets samples
    x = scoresde.sample(sde, score, (800, 2), solver="ddim", steps=50, generator=torch.Generator().manual_seed(0))
    counts = torch.bincount(gmm.responsibilities(x).argmax(1), minlength=8)
    assert bool((counts > 40).all()), counts.tolist()


def test_conditional_training_needs_labels(tmp_path):
    with pytest.raises(DataError, match="no labels"):
        Trainer(TrainConfig(data="swiss_roll", conditional=True, steps=1, n_train=100, out=str(tmp_path / "r"),
                            device="cpu"), progress=False)
    with pytest.raises(ConfigError, match="conditional"):
        TrainConfig(data="gmm", net_kwargs={"num_classes": 8}).validate()
    with pytest.raises(ConfigError, match="p_uncond"):
        TrainConfig(data="gmm", conditional=True, p_uncond=1.5).validate()


def test_npz_labels(tmp_path):
    x = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(50) % 5)
    ds = get_dataset(str(tmp_path / "d.npz"))
    assert ds.labels.tolist() == (np.arange(50) % 5).tolist()
    np.savez(tmp_path / "bad.npz", x=x, y=np.arange(49))
    with pytest.raises(DataError, match="one label per example"):
        get_dataset(str(tmp_path / "bad.npz"))
    np.savez(tmp_path / "frac.npz", x=x, y=np.linspace(0, 1, 50))
    with pytest.raises(DataError, match="integers"):
        get_dataset(str(tmp_path / "frac.npz"))


# --------------------------------------------------------------------------- the command line
def test_cli_sample_with_class_and_guidance(gmm_run, tmp_path, capsys):
    out = tmp_path / "s.npy"
    assert main(["sample", "--checkpoint", str(gmm_run), "--class", "2", "--guidance", "1.5", "--solver", "ddim",
                 "--steps", "30", "--num", "100", "--out", str(out)]) == 0
    x = torch.from_numpy(np.load(out))
    assert float((toy_gmm().responsibilities(x).argmax(1) == 2).float().mean()) > 0.9
    assert "classifier-free guidance w = 1.5" in capsys.readouterr().out
    for argv, msg in (
        (["--class", "8"], r"\[0, 8\)"),
        (["--guidance", "2"], "needs --class"),
        (["--class", "1", "--classifier-scale", "2"], "--classifier PATH"),
    ):
        assert main(["sample", "--checkpoint", str(gmm_run), "--out", str(out), "--num", "4", *argv]) == 1
        assert msg.replace("\\", "") in capsys.readouterr().err or msg in capsys.readouterr().err


def test_cli_per_seed_sampling_honours_class_and_guidance(gmm_run, tmp_path, capsys):
    """``--seeds`` (the sharded path) applies --class/--guidance, and its shard folder remembers them."""
    out = tmp_path / "s.npy"
    argv = ["sample", "--checkpoint", str(gmm_run), "--solver", "ddim", "--steps", "30", "--seeds", "0-99",
            "--out", str(out)]
    assert main(argv + ["--class", "5", "--guidance", "1"]) == 0
    x = torch.from_numpy(np.load(out))
    assert float((toy_gmm().responsibilities(x).argmax(1) == 5).float().mean()) > 0.9
    assert "class 5, classifier-free guidance w = 1" in capsys.readouterr().out
    # the same folder with another class: refused rather than returning class-5 chunks
    assert main(argv + ["--class", "3"]) == 1
    assert "another job" in capsys.readouterr().err
    # a model without classes: the same error as without --seeds
    plain = tmp_path / "plain"
    assert main(["train", "--data", "gmm", "--steps", "2", "--out", str(plain), "--quiet", "--device", "cpu"]) == 0
    capsys.readouterr()
    assert main(["sample", "--checkpoint", str(plain), "--seeds", "0-3", "--class", "1", "--out", str(tmp_path / "p.npy")]) == 1
    assert "no classes" in capsys.readouterr().err


def test_cli_sample_every_class_in_turn(gmm_run, tmp_path, capsys):
    """``--class all``: sample i (or the sample of seed i) is of class i mod K, with or without --seeds."""
    gmm = toy_gmm()
    base = ["sample", "--checkpoint", str(gmm_run), "--class", "all", "--guidance", "1", "--solver", "ddim",
            "--steps", "30", "--quiet"]
    assert main(base + ["--num", "83", "--batch-size", "16", "--out", str(tmp_path / "a.npy")]) == 0
    x = torch.from_numpy(np.load(tmp_path / "a.npy"))
    assert x.shape == (83, 2)
    hit = gmm.responsibilities(x).argmax(1) == torch.arange(83) % 8
    assert float(hit.float().mean()) > 0.9
    assert "classes 0-7 in turn, classifier-free guidance w = 1" in capsys.readouterr().out
    assert main(base + ["--seeds", "5-44", "--out", str(tmp_path / "b.npy")]) == 0
    x = torch.from_numpy(np.load(tmp_path / "b.npy"))
    hit = gmm.responsibilities(x).argmax(1) == torch.arange(5, 45) % 8
    assert x.shape == (40, 2) and float(hit.float().mean()) > 0.9
    # without classes to go through: the usual error
    assert main(["sample", "--checkpoint", str(gmm_run), "--guidance", "1", "--out", str(tmp_path / "c.npy")]) == 1
    assert "needs --class K" in capsys.readouterr().err


def test_draw_class_samples_interleaves_the_classes():
    """Class k's data is N(10 k, 1e-4): the exact score puts sample i at 10 (i mod 3)."""
    from scoresde.evaluate import draw_class_samples

    sde, var0 = scoresde.VPSDE(), 1e-4

    def score_of_class(k):
        def score(x, t):
            scale, std = (c[:, None] for c in sde.marginal_coeffs(t))
            return (scale * 10.0 * k - x) / (scale**2 * var0 + std**2)
        return score

    got = draw_class_samples(sde, score_of_class, 7, 3, (1,), solver="ddim", steps=20,
                             generator=torch.Generator().manual_seed(0), progress=False)
    assert got.samples.shape == (7, 1) and got.nfe > 0
    assert torch.allclose(got.samples[:, 0], 10.0 * (torch.arange(7) % 3), atol=0.1)


def test_model_digest_tells_weights_apart():
    from scoresde.nets import MLP
    from scoresde.shard import model_digest

    torch.manual_seed(0)
    a, b = MLP(2, hidden=8, depth=1), MLP(2, hidden=8, depth=1)
    b.load_state_dict(a.state_dict())
    assert model_digest(a) == model_digest(b)
    with torch.no_grad():
        next(b.parameters()).view(-1)[0] += 1e-7
    assert model_digest(a) != model_digest(b)


def test_cli_classifier_guidance(gmm_run, tmp_path, capsys):
    clf = tmp_path / "clf.pt"
    assert main(["train-classifier", "--data", "gmm", "--checkpoint", str(gmm_run), "--steps", "150",
                 "--net-arg", "hidden=64", "--out", str(clf), "--quiet", "--device", "cpu"]) == 0
    out = tmp_path / "s.npy"
    assert main(["sample", "--checkpoint", str(gmm_run), "--class", "6", "--classifier", str(clf),
                 "--classifier-scale", "2", "--solver", "ddim", "--steps", "30", "--num", "100", "--out", str(out)]) == 0
    x = torch.from_numpy(np.load(out))
    assert float((toy_gmm().responsibilities(x).argmax(1) == 6).float().mean()) > 0.8
    # a classifier for another SDE is refused
    other = tmp_path / "other.pt"
    assert main(["train-classifier", "--data", "gmm", "--sde", "ve", "--steps", "2", "--out", str(other), "--quiet",
                 "--device", "cpu"]) == 0
    capsys.readouterr()
    assert main(["sample", "--checkpoint", str(gmm_run), "--class", "1", "--classifier", str(other), "--out", str(out)]) == 1
    assert "SDE" in capsys.readouterr().err


def test_cli_inpaint_vectors(gmm_run, tmp_path, capsys):
    x = np.full((6, 2), np.nan, dtype=np.float32)
    x[:, 0] = 1.4
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "m.npy", np.array([1, 0]))
    out = tmp_path / "o.npy"
    assert main(["inpaint", "--checkpoint", str(gmm_run), "--input", str(tmp_path / "x.npy"), "--mask",
                 str(tmp_path / "m.npy"), "--out", str(out), "--steps", "50", "--num", "2"]) == 0
    y = np.load(out)
    assert y.shape == (12, 2) and np.all(y[:, 0] == np.float32(1.4)) and np.all(np.isfinite(y))
    np.save(tmp_path / "bad.npy", np.array([1, 0, 1]))
    np.save(tmp_path / "x3.npy", np.zeros((2, 3), dtype=np.float32))
    capsys.readouterr()
    assert main(["inpaint", "--checkpoint", str(gmm_run), "--input", str(tmp_path / "x.npy"), "--mask",
                 str(tmp_path / "bad.npy"), "--out", str(out)]) == 1
    assert "--mask" in capsys.readouterr().err
    assert main(["inpaint", "--checkpoint", str(gmm_run), "--input", str(tmp_path / "x3.npy"), "--mask",
                 str(tmp_path / "m.npy"), "--out", str(out)]) == 1
    assert "--input" in capsys.readouterr().err


def test_cli_conditional_images_png_in_and_out(tmp_path):
    """A tiny class-conditional U-Net on 8x8 images from an .npz (x uint8, y), then PNG inpainting."""
    import matplotlib.image as mpimg

    rng = np.random.default_rng(0)
    y = np.arange(40) % 2
    imgs = np.where(y[:, None, None, None] == 1, 200, 40).astype(np.uint8) + rng.integers(0, 20, (40, 1, 8, 8)).astype(np.uint8)
    np.savez(tmp_path / "imgs.npz", x=imgs, y=y)
    run = tmp_path / "run"
    assert main(["train", "--data", str(tmp_path / "imgs.npz"), "--conditional", "--steps", "2", "--batch-size", "8",
                 "--net-arg", "channels=8", "--net-arg", "channel_mults=[1, 2]", "--out", str(run), "--sample-every", "-1",
                 "--quiet", "--device", "cpu"]) == 0
    assert main(["sample", "--checkpoint", str(run), "--class", "1", "--guidance", "1", "--solver", "ddim", "--steps", "5",
                 "--num", "4", "--out", str(tmp_path / "s.png")]) == 0
    mpimg.imsave(tmp_path / "in.png", imgs[0, 0] / 255.0, cmap="gray", vmin=0, vmax=1)
    mask = np.zeros((8, 8))
    mask[:4] = 1
    mpimg.imsave(tmp_path / "m.png", mask, cmap="gray", vmin=0, vmax=1)
    assert main(["inpaint", "--checkpoint", str(run), "--input", str(tmp_path / "in.png"), "--mask", str(tmp_path / "m.png"),
                 "--out", str(tmp_path / "o.npy"), "--steps", "5", "--num", "3", "--solver", "ddim"]) == 0
    o = np.load(tmp_path / "o.npy")
    read = np.asarray(mpimg.imread(tmp_path / "in.png"), dtype=np.float32)[..., :3].mean(-1)  # grey in [0, 1]
    given = np.float32(-1) + np.float32(2) * read[:4]
    assert o.shape == (3, 1, 8, 8) and np.array_equal(o[:, 0, :4], np.broadcast_to(given, (3, 4, 8)))
    assert main(["inpaint", "--checkpoint", str(run), "--input", str(tmp_path / "in.png"), "--mask", str(tmp_path / "m.png"),
                 "--out", str(tmp_path / "o.png"), "--steps", "5", "--solver", "ddim"]) == 0
    assert (tmp_path / "o.png").stat().st_size > 1000
