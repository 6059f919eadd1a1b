"""Latent score SDEs: the likelihood bound against a closed form, and a latent run end to end through the CLI.

Closed form: Gaussian data ``x ~ N(b, W W^T + s^2 I)`` in D dimensions is the marginal of the linear-Gaussian
model ``z ~ N(0, I_k)``, ``x | z ~ N(W z + b, s^2 I)``. With the exact score of ``N(0, I)`` codes (which the VP
SDE leaves unchanged, so ``p_SDE`` is the true prior) and the exact posterior as encoder, the bound is tight:
``-log p(x)`` exactly, with zero variance; with another encoder it is the closed-form ELBO.
"""

import math

import numpy as np
import pytest
import torch

import scoresde
import scoresde.baselines
from scoresde.cli import main
from scoresde.latent import LatentSpace, latent_bound, load_autoencoder

F64 = torch.float64


def _linear_gaussian(D=3, k=2, s=0.3, seed=0):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(D, k, generator=g, dtype=F64)
    b = torch.randn(D, generator=g, dtype=F64)
    cov_x = W @ W.T + s**2 * torch.eye(D, dtype=F64)
    # exact posterior q(z|x) = N(A (x - b), S): S = (I + W^T W / s^2)^-1, A = S W^T / s^2
    S = torch.linalg.inv(torch.eye(k, dtype=F64) + W.T @ W / s**2)
    A = S @ W.T / s**2
    return W, b, s, cov_x, A, S


def _log_px_given_z(W, b, s):
    def f(x, z):
        mean = z @ W.T + b
        return torch.distributions.Normal(mean, s).log_prob(x).sum(1)
    return f


def test_the_bound_is_tight_with_the_exact_posterior_and_the_true_prior():
    W, b, s, cov_x, A, S = _linear_gaussian()
    x = torch.distributions.MultivariateNormal(b, cov_x).sample((5,))
    # the exact posterior is full-covariance; rotate the latent so that it is diagonal: z = U y, S = U diag U^T
    lam, U = torch.linalg.eigh(S)
    W_rot = W @ U
    mu = (x - b) @ A.T @ U                       # y's posterior mean
    log_std = 0.5 * torch.log(lam).expand(5, -1)
    sde = scoresde.VPSDE()
    res = latent_bound(x, mu, log_std, _log_px_given_z(W_rot, b, s), sde, lambda u, t: -u, dims=3, n_samples=3,
                       generator=torch.Generator().manual_seed(1), rtol=1e-8, atol=1e-8)
    exact = torch.distributions.MultivariateNormal(b, cov_x).log_prob(x)
    bits = -exact / (3 * math.log(2))
    torch.testing.assert_close(res.bits_per_dim, bits, rtol=0, atol=2e-5)
    assert float(res.stderr.max()) < 1e-5  # every draw gives log p(x): zero variance


def test_the_bound_equals_the_closed_form_elbo_for_another_encoder_and_scale():
    W, b, s, cov_x, A, S = _linear_gaussian(seed=2)
    x = torch.distributions.MultivariateNormal(b, cov_x).sample((4,))
    mu = 0.7 * (x - b) @ A.T                     # a poorer (diagonal) encoder
    log_std = torch.full((4, 2), -0.8, dtype=F64)
    n, scale = 4000, 2.5
    sde = scoresde.VPSDE()
    # codes u = scale z of z ~ N(0, I) are N(0, scale^2 I): the exact score under the VP SDE
    from scoresde.exact import Gaussian

    codes = Gaussian(torch.zeros(2, dtype=F64), scale**2 * torch.eye(2, dtype=F64))
    res = latent_bound(x, mu, log_std, _log_px_given_z(W, b, s), sde, codes.score_fn(sde), scale=scale, dims=3,
                       n_samples=n, generator=torch.Generator().manual_seed(3), method="rk4", steps=40)
    # closed form: E_q log N(x; W z + b, s^2) - KL(q || N(0, I)), q = N(mu, diag(sd^2))
    sd2 = torch.exp(2 * log_std)
    r = x - (mu @ W.T + b)
    recon = (-0.5 * 3 * math.log(2 * math.pi * s**2) - 0.5 * (r.square().sum(1) + (W.square() @ sd2.T).T.sum(1)) / s**2)
    kl = 0.5 * (mu.square() + sd2 - 1 - 2 * log_std).sum(1)
    bits = -(recon - kl) / (3 * math.log(2))
    assert bool(((res.bits_per_dim - bits).abs() < 4 * res.stderr + 1e-3).all()), (res.bits_per_dim, bits, res.stderr)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Tiny 8-bit image sets: 96 images of 1 x 8 x 8 with labels (two classes: bright left or bright right)."""
    d = tmp_path_factory.mktemp("img")
    g = np.random.default_rng(0)
    y = g.integers(0, 2, 96)
    x = g.integers(0, 60, (96, 1, 8, 8)).astype(np.uint8)
    x[y == 0, :, :, :4] += 180
    x[y == 1, :, :, 4:] += 180
    np.savez(d / "img.npz", x=x, y=y)
    np.save(d / "other.npy", g.integers(0, 255, (16, 1, 12, 12)).astype(np.uint8))
    return d


def _run(argv):
    return main([str(a) for a in argv])


def test_a_latent_run_end_to_end(images, tmp_path, capsys):
    ae = tmp_path / "ae.pt"
    common = ["--threads", "1", "--quiet"]
    assert _run(["train-autoencoder", "--data", images / "img.npz", "--out", ae, "--steps", "3", "--batch-size", "16",
                 "--hidden", "8", "--latent-channels", "2", *common]) == 0, capsys.readouterr().err
    space, meta = load_autoencoder(ae)
    assert space.event_shape == (2, 2, 2) and space.image_shape == (1, 8, 8) and meta["steps"] == 3
    run = tmp_path / "run"
    assert _run(["train", "--latent", ae, "--data", images / "img.npz", "--steps", "4", "--batch-size", "16",
                 "--out", run, "--sample-every", "-1", "--conditional", "--net-arg", "channels=8", *common]) == 0, \
        capsys.readouterr().err
    assert (run / "autoencoder.pt").is_file()
    out = tmp_path / "s.npy"
    assert _run(["sample", "--checkpoint", run, "--solver", "ddim", "--steps", "3", "--num", "6", "--out", out,
                 "--class", "1", "--guidance", "1", *common]) == 0, capsys.readouterr().err
    x = np.load(out)
    assert x.shape == (6, 1, 8, 8) and np.isfinite(x).all() and x.min() >= -1 and x.max() <= 1
    code = _run(["likelihood", "--checkpoint", run, "--data", images / "img.npz", "--num", "3", "--json",
                 "--method", "rk4", "--steps", "4", *common])
    out_text = capsys.readouterr().out
    assert code == 0, out_text
    s = __import__("json").loads(out_text.strip().splitlines()[-1])
    assert s["bpd_kind"] == "bound" and math.isfinite(s["bits_per_dim"]) and s["bits_per_dim"] > 0


def test_latent_runs_refuse_what_does_not_apply(images, tmp_path, capsys):
    ae = tmp_path / "ae.pt"
    assert _run(["train-autoencoder", "--data", images / "img.npz", "--out", ae, "--steps", "1", "--batch-size", "8",
                 "--hidden", "8", "--threads", "1", "--quiet"]) == 0
    capsys.readouterr()
    code = _run(["train", "--latent", ae, "--data", images / "img.npz", "--random-flip", "--steps", "1",
                 "--out", tmp_path / "r", "--threads", "1"])
    err = capsys.readouterr().err
    assert code == 1 and "act on pixels" in err and len(err.strip().splitlines()) == 1
    code = _run(["train", "--latent", ae, "--data", images / "other.npy", "--steps", "1", "--out", tmp_path / "r2",
                 "--threads", "1"])
    err = capsys.readouterr().err
    assert code == 1 and "autoencoder" in err and "(1, 8, 8)" in err and not (tmp_path / "r2" / "latest.pt").exists()
    code = _run(["train-autoencoder", "--data", images / "img.npz", "--out", tmp_path / "x.pt", "--threads", "1"])
    assert code == 1 and "--steps" in capsys.readouterr().err


def test_latent_space_checks_its_inputs():
    vae = scoresde.baselines.ConvVAE((1, 8, 8), latent_channels=2, hidden=4)
    with pytest.raises(scoresde.OptionError, match="scale"):
        LatentSpace(vae, scale=float("nan"))
    with pytest.raises(scoresde.OptionError, match="use"):
        LatentSpace(vae, use="median")
    space = LatentSpace(vae)
    with pytest.raises(scoresde.ShapeError, match="codes"):
        space.decode(torch.zeros(2, 3, 2, 2))
