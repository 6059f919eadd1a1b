"""Class-conditional training on labelled data, and the conditional command line."""

import numpy as np
import pytest
import torch

import scoresde
from scoresde import guidance as G
from scoresde.data import get_dataset, toy_gmm
from scoresde.errors import DataError
from scoresde.training import TrainConfig, Trainer, load_model
from scoresde.training.config import ConfigError


@pytest.fixture(scope="module")
def gmm_run(tmp_path_factory):
    """A class-conditional MLP trained briefly on the 8-component toy mixture (labels = components)."""
    out = tmp_path_factory.mktemp("cond") / "run"
    cfg = TrainConfig(data="gmm", conditional=True, p_uncond=0.1, steps=300, n_train=20000, out=str(out),
                      sample_every=-1, net_kwargs=dict(hidden=64, depth=2), device="cpu", lr=3e-3, warmup=50)
    Trainer(cfg, progress=False).train()
    return out


def test_class_conditional_mlp_puts_class_k_samples_in_component_k(gmm_run):
    """Measured: after 300 steps every class puts 98-100% of its samples in its own component."""
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
