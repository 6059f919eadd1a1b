"""Inpainting against the exact conditional of a correlated Gaussian.

For Gaussian data ``N(m, C)`` the unknown entries given the known ones are Gaussian with the Schur
complement moments (:meth:`scoresde.exact.Gaussian.conditional`). With the exact score:

* every solver keeps the known entries exactly;
* the replacement method (``resample=1``) is biased: far outside the sampling error;
* RePaint resampling brings the mean and covariance to within the sampling error;
* sequential Monte Carlo (:func:`scoresde.smc_inpaint`) converges as the number of particles grows,
  and its evidence estimate is unbiased.
"""

import math

import pytest
import torch

import scoresde
from scoresde import VPSDE
from scoresde.errors import IncompatibleSDEError, MaskError, ShapeError
from scoresde.exact import Gaussian, GaussianMixture
from scoresde.inpainting import Inpaint
from scoresde.nets import MLP
from scoresde.solvers import StepSolver

Z = 5.0
SDE = VPSDE()
COV = torch.tensor([[1.0, 0.9, 0.5], [0.9, 1.0, 0.7], [0.5, 0.7, 1.0]], dtype=torch.float64)
GAUSS = Gaussian(torch.tensor([0.5, -0.5, 0.0], dtype=torch.float64), COV)
MASK = torch.tensor([1, 0, 0])  # the first entry is known
Y0 = 1.5


def known_batch(n: int) -> torch.Tensor:
    x = torch.full((n, 3), float("nan"), dtype=torch.float64)
    x[:, 0] = Y0
    return x


def exact_conditional(t=None):
    mean, cov = GAUSS.conditional(known_batch(1), MASK, SDE if t else None, t or 0.0)
    return mean[0, 1:], cov[0, 1:, 1:]


def z_scores(u: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor):
    """Standard-error multiples of the sample mean and covariance errors."""
    n = u.shape[0]
    var = torch.diag(cov)
    z_mean = (u.mean(0) - mean) / torch.sqrt(var / n)
    z_cov = (torch.cov(u.T) - cov) / torch.sqrt((var[:, None] * var[None, :] + cov**2) / n)
    return z_mean, z_cov


#: Every step solver of the registry (the wrapper serves them all), and a few options.
STEP_SOLVERS = {name: {} for name, cls in scoresde.SOLVERS.items() if issubclass(cls, StepSolver)}
STEP_SOLVERS.update({"ddim_eta": {"eta": 1.0}, "pc_ancestral": {"predictor": "ancestral"},
                     "ancestral_log_snr": {"grid": "log_snr"}})


@pytest.mark.parametrize("name", list(STEP_SOLVERS))
def test_every_step_solver_keeps_the_known_entries_exactly(name):
    solver = name.split("_eta")[0].split("_ancestral")[0].split("_log_snr")[0]
    x = scoresde.inpaint(SDE, GAUSS.score_fn(SDE), known_batch(64), MASK, solver=solver, steps=20, resample=2,
                         generator=torch.Generator().manual_seed(0), **STEP_SOLVERS[name])
    assert x.shape == (64, 3) and bool(torch.isfinite(x).all())
    assert bool((x[:, 0] == Y0).all())


def test_the_wrapper_runs_in_the_driver_and_reuses():
    """Inpaint is an ordinary step solver: solve() runs it, and one object serves two solves alike."""
    wrapper = Inpaint("ancestral", known_batch(16), MASK, resample=2)
    assert wrapper.order == wrapper.inner.order and wrapper.requires_kernel and wrapper.default_steps == 1000
    runs = [scoresde.solve(SDE, GAUSS.score_fn(SDE), (16, 3), solver=wrapper, steps=10, generator=torch.Generator().manual_seed(3),
                           dtype=torch.float64) for _ in range(2)]
    assert torch.equal(runs[0].samples, runs[1].samples)
    assert runs[0].nfe == 2 * 10 + 1  # two passes per step, and the final denoising step


def test_images_with_a_mask_shared_by_the_batch():
    """Any event shape: a [1, 4, 4] mask broadcast over a batch of [B, 1, 4, 4] images."""
    means = torch.stack([torch.full((1, 4, 4), -0.5), torch.full((1, 4, 4), 0.5)]).double()
    mix = GaussianMixture([0.5, 0.5], means, 0.2)
    x_known = mix.sample(8, generator=torch.Generator().manual_seed(0))
    mask = torch.zeros(1, 4, 4)
    mask[:, :2] = 1  # the top half is given
    x = scoresde.inpaint(SDE, mix.score_fn(SDE), x_known, mask, steps=50, resample=2,
                         generator=torch.Generator().manual_seed(1))
    assert torch.equal(x[:, :, :2], x_known[:, :, :2])
    # the bottom half follows the component that the top half reveals
    assert torch.equal(x[:, :, 2:].mean((1, 2, 3)) > 0, x_known[:, :, :2].mean((1, 2, 3)) > 0)


def test_replacement_is_biased_and_resampling_removes_the_bias():
    """Measured (n = 2000, Euler-Maruyama, 100 steps; exact mean (0.40, 0.50), variances (0.19, 0.75)):
    resample=1 gives a mean near (0.12, 0.17) and variances near (0.32, 0.90), tens of standard errors
    off; resample=8 comes to (0.37, 0.43) and (0.19, 0.75), within 5 standard errors at n = 4000
    (benchmarks/results/conditional.md)."""
    n = 2000
    mean, cov = exact_conditional()
    kw = dict(solver="euler_maruyama", steps=100, generator=torch.Generator().manual_seed(0))
    x1 = scoresde.inpaint(SDE, GAUSS.score_fn(SDE), known_batch(n), MASK, resample=1, **kw)
    z_mean, _ = z_scores(x1[:, 1:], mean, cov)
    assert z_mean.abs().max() > 4 * Z, f"replacement should be biased; mean off by {z_mean.tolist()} SE only"
    kw["generator"] = torch.Generator().manual_seed(1)
    x8 = scoresde.inpaint(SDE, GAUSS.score_fn(SDE), known_batch(n), MASK, resample=8, **kw)
    z_mean, z_cov = z_scores(x8[:, 1:], mean, cov)
    assert z_mean.abs().max() < Z and z_cov.abs().max() < Z, (z_mean.tolist(), z_cov.tolist())
    assert bool((x8[:, 0] == Y0).all())


def test_smc_error_shrinks_with_the_number_of_particles():
    """The weighted-particle estimate of the conditional mean: its mean squared error over R problems
    falls with P (measured, benchmarks/results/conditional.md: 0.75 at P = 4, 0.42 at 16, 0.10 at 64,
    0.029 at 256), its average lies within
    the sampling error of the exact mean, and the evidence estimate exp(log Z) is unbiased."""
    R, eps = 200, 1e-3
    mean, _ = exact_conditional(t=eps)
    mse = {}
    for P in (4, 64):
        res = scoresde.smc_inpaint(SDE, GAUSS.score_fn(SDE), known_batch(R), MASK, num_particles=P, steps=100,
                                   generator=torch.Generator().manual_seed(P), eps=eps)
        assert bool((res.particles[..., 0] == Y0).all()) and res.samples.shape == (R, 3)
        err = ((res.mean()[:, 1:] - mean) ** 2).sum(1)  # [R]
        mse[P] = (float(err.mean()), float(err.std()) / math.sqrt(R))
    (m4, s4), (m64, s64) = mse[4], mse[64]
    assert m64 + Z * s64 < 0.5 * (m4 - Z * s4), mse
    est = res.mean()[:, 1:]
    z = (est.mean(0) - mean) / (est.std(0) / math.sqrt(R))
    assert z.abs().max() < Z, z.tolist()
    # evidence: p(x_eps[0] = Y0) under the exact diffused marginal
    scale, std = SDE.marginal_coeffs(torch.tensor([eps], dtype=torch.float64))
    v0 = scale**2 * COV[0, 0] + std**2
    z_exact = torch.exp(-0.5 * (Y0 - scale * 0.5) ** 2 / v0) / torch.sqrt(2 * math.pi * v0)
    zhat = res.log_evidence.exp()
    assert abs(float(zhat.mean() - z_exact)) < Z * float(zhat.std()) / math.sqrt(R) + 0.01 * float(z_exact)


# --------------------------------------------------------------------------- bad input
def test_mask_errors():
    score = GAUSS.score_fn(SDE)
    with pytest.raises(MaskError, match="broadcast"):
        scoresde.inpaint(SDE, score, known_batch(4), torch.ones(2), steps=2)
    with pytest.raises(MaskError, match="0 and 1"):
        scoresde.inpaint(SDE, score, known_batch(4), torch.tensor([1.0, 0.5, 0.0]), steps=2)
    with pytest.raises(ShapeError, match="NaN"):
        scoresde.inpaint(SDE, score, known_batch(4), torch.tensor([1, 1, 0]), steps=2)
    with pytest.raises(ShapeError, match=r"\[B, \*event\]"):
        scoresde.inpaint(SDE, score, torch.zeros(3), MASK, steps=2)
    with pytest.raises(ValueError, match="resample"):
        scoresde.inpaint(SDE, score, known_batch(4), MASK, steps=2, resample=0)
    with pytest.raises(MaskError):
        scoresde.smc_inpaint(SDE, score, known_batch(4), torch.ones(4, 2), steps=2)


def test_solver_and_model_errors():
    score = GAUSS.score_fn(SDE)
    with pytest.raises(TypeError, match="step solvers"):
        scoresde.inpaint(SDE, score, known_batch(4), MASK, solver="ode", steps=2)

    class NoKernel(VPSDE):
        has_kernel = False

    with pytest.raises(IncompatibleSDEError):
        scoresde.inpaint(NoKernel(), score, known_batch(4), MASK, steps=2)
    net = scoresde.NetworkScore(MLP(2, hidden=8, depth=1), SDE)
    with pytest.raises(ShapeError, match="x_known"):
        scoresde.inpaint(SDE, net, torch.zeros(4, 3), MASK, steps=2)


def test_exact_gaussian_conditional_formula():
    """Two dimensions by hand: x1 | x0 ~ N(m1 + c / v0 (x0 - m0), v1 - c^2 / v0); at time t the same for C_t."""
    g = Gaussian(torch.tensor([1.0, -2.0], dtype=torch.float64), torch.tensor([[2.0, 0.6], [0.6, 0.5]], dtype=torch.float64))
    x = torch.tensor([[3.0, float("nan")], [0.0, float("nan")]], dtype=torch.float64)
    mean, cov = g.conditional(x, torch.tensor([1, 0]))
    torch.testing.assert_close(mean[:, 1], -2.0 + 0.6 / 2.0 * (x[:, 0] - 1.0))
    torch.testing.assert_close(mean[:, 0], x[:, 0])
    torch.testing.assert_close(cov[:, 1, 1], torch.full((2,), 0.5 - 0.36 / 2.0, dtype=torch.float64))
    assert float(cov[:, 0].abs().max()) == 0.0
    t = torch.tensor([0.4], dtype=torch.float64)
    (scale,), (std,) = SDE.marginal_coeffs(t)
    v0, v1, c = scale**2 * 2.0 + std**2, scale**2 * 0.5 + std**2, scale**2 * 0.6
    mean_t, cov_t = g.conditional(x, torch.tensor([1, 0]), SDE, 0.4)
    torch.testing.assert_close(mean_t[:, 1], scale * -2.0 + c / v0 * (x[:, 0] - scale * 1.0))
    torch.testing.assert_close(cov_t[0, 1, 1], v1 - c**2 / v0)


@pytest.mark.bitwise
def test_inpainting_with_per_sample_seeds_is_batch_invariant():
    """With seeds, sample i depends only on its seed and its known entries, not on the batch."""
    sde = scoresde.VPSDE()
    score = lambda x, t: -x  # elementwise: batch-invariant to the bit
    x_known = torch.tensor([[0.5, 0.0], [-1.0, 0.0], [2.0, 0.0]], dtype=torch.float64)
    mask = torch.tensor([1.0, 0.0], dtype=torch.float64)
    full = scoresde.inpaint(sde, score, x_known, mask, steps=20, resample=2, seeds=[7, 8, 9])
    one = scoresde.inpaint(sde, score, x_known[1:2], mask, steps=20, resample=2, seeds=[8])
    assert torch.equal(full[1], one[0])
    assert torch.equal(full[:, 0], x_known[:, 0])
