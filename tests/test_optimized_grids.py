"""The GITS grid: its dynamic programme, its errors, and that it lowers a few-step sampler's error
against closed-form answers (Gaussian data, whose probability-flow map is known exactly)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

import scoresde
from scoresde.errors import IncompatibleSDEError, TimeRangeError
from scoresde.exact import Gaussian, GaussianMixture
from scoresde.solvers.optimized_grids import GITS

EPS = 1e-3


def _gaussian(dtype=torch.float64) -> Gaussian:
    stds = torch.tensor([0.05, 0.3, 1.5], dtype=dtype)  # narrow to wide: the schedule matters
    return Gaussian(torch.tensor([1.0, -0.5, 0.2], dtype=dtype), torch.diag(stds**2))


def exact_flow_then_denoise(sde, data: Gaussian, x_T):
    """The probability-flow map from ``T`` to ``EPS`` followed by the Tweedie step, in closed form.

    For ``N(m, diag(s^2))`` data, in the scaled variable ``y = x / scale`` with ``sigma = std / scale``
    the flow keeps ``(y - m) / sqrt(s^2 + sigma^2)`` constant, and Tweedie's mean is
    ``m + s^2 / (s^2 + sigma^2) (y - m)``.
    """
    t = torch.tensor([sde.T, EPS], dtype=torch.float64)
    scale, std = sde.marginal_coeffs(t)
    sig = std / scale
    m, s2 = data.mean, torch.diagonal(data.cov)
    y_T = x_T / scale[0]
    y_eps = m + (y_T - m) * ((s2 + sig[1] ** 2) / (s2 + sig[0] ** 2)).sqrt()
    return m + s2 / (s2 + sig[1] ** 2) * (y_eps - m)


@pytest.mark.parametrize("sde_name", ["vp", "ve"])
def test_gits_lowers_the_error_of_few_step_ddim_on_gaussian_data(sde_name):
    # At 5 NFE (4 DDIM steps + the final denoising step) the samples on the fitted grid are closer to the
    # closed-form answer from the same prior draw than on DDIM's default grid and on the log-SNR grid.
    # The comparison is paired (same x_T); the threshold is 5 standard errors of the mean squared-error
    # difference over the samples.
    sde = scoresde.VPSDE() if sde_name == "vp" else scoresde.VESDE()
    data = _gaussian()
    score = data.score_fn(sde)
    grid = GITS(fine_steps=64, samples=256).fit(sde, score, (3,), eps=EPS, generator=torch.Generator().manual_seed(1))
    n = 2000
    x_T = sde.prior_sample((n, 3), generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    exact = exact_flow_then_denoise(sde, data, x_T)

    def sq_err(g):
        res = scoresde.solve(sde, score, None, solver="ddim", steps=4, grid=g, eps=EPS, x_init=x_T)
        assert res.nfe == 5
        return (res.samples - exact).pow(2).sum(1)

    ours = sq_err(grid)
    for other in ("uniform", "log_snr", "karras"):
        d = sq_err(other) - ours
        se = d.std() / math.sqrt(n)
        assert d.mean() > 5 * se, (other, float(d.mean()), float(se))


def test_gits_lowers_the_distance_to_a_converged_solve_on_a_mixture():
    # Narrow, well separated mixture: at 5 and 8 NFE, DDIM on the fitted grid ends closer to the converged
    # probability-flow solution (RK4 on 200 log-SNR steps, from the same prior draw) than on its default grid.
    # (On this 2-D ring the log-SNR grid is about as good as the fitted one: the fit is not a universal win.)
    sde = scoresde.VPSDE()
    angles = torch.arange(6, dtype=torch.float64) * (2 * math.pi / 6)
    means = 2.0 * torch.stack([angles.cos(), angles.sin()], dim=1)
    data = GaussianMixture(torch.ones(6, dtype=torch.float64), means, torch.tensor(0.05, dtype=torch.float64))
    score = data.score_fn(sde)
    grid = GITS(fine_steps=64, samples=256).fit(sde, score, (2,), eps=EPS, generator=torch.Generator().manual_seed(3))
    n = 2000
    x_T = sde.prior_sample((n, 2), generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    ref = scoresde.solve(sde, score, None, solver="ode", method="rk4", steps=200, grid="log_snr", eps=EPS, x_init=x_T)
    for steps in (4, 7):
        errs = {}
        for name, g in (("gits", grid), ("default", None)):
            res = scoresde.solve(sde, score, None, solver="ddim", steps=steps, grid=g, eps=EPS, x_init=x_T)
            errs[name] = (res.samples - ref.samples).pow(2).sum(1)
        d = errs["default"] - errs["gits"]
        assert d.mean() > 5 * d.std() / math.sqrt(n), (steps, float(d.mean()))


def test_path_is_the_cheapest_path_with_that_many_steps():
    sde = scoresde.VPSDE()
    score = lambda x, t: -x  # noqa: E731  N(0, I) data
    grid = GITS(fine_steps=8, samples=16).fit(sde, score, (2,), generator=torch.Generator().manual_seed(0))
    C = grid.cost
    M = 8
    assert torch.isinf(C[torch.tril_indices(M + 1, M + 1)[0], torch.tril_indices(M + 1, M + 1)[1]]).all()
    for steps in (1, 3, 5, 8):
        best = min(
            (sum(float(C[a, b]) for a, b in zip((0,) + mid, mid + (M,))), (0,) + mid + (M,))
            for mid in itertools.combinations(range(1, M), steps - 1)
        )
        path = grid.path(steps)
        assert tuple(path.tolist()) == best[1]
        times = grid(sde, steps, 1e-3)
        assert times.shape == (steps + 1,) and times[0] == sde.T and times[-1] == 1e-3
        assert (times[1:] < times[:-1]).all()
        assert torch.equal(times[1:-1], grid.fine_times[path][1:-1])


def test_gits_errors():
    sde = scoresde.VPSDE()
    score = lambda x, t: -x  # noqa: E731
    with pytest.raises(RuntimeError, match="fit"):
        scoresde.solve(sde, score, (2, 2), solver="ddim", steps=3, grid=GITS())
    grid = GITS(fine_steps=4, samples=8).fit(sde, score, (2,))
    with pytest.raises(ValueError, match="fine_steps=4"):
        grid.path(5)
    with pytest.raises(IncompatibleSDEError, match="fitted for VPSDE"):
        scoresde.solve(scoresde.VESDE(), score, (2, 2), solver="ddim", steps=3, grid=grid)
    with pytest.raises(TimeRangeError, match="eps"):
        scoresde.solve(sde, score, (2, 2), solver="ddim", steps=3, grid=grid, eps=1e-2)
    with pytest.raises(TimeRangeError):
        GITS().fit(sde, score, (2,), eps=0.0)
    with pytest.raises(ValueError):
        GITS(fine_steps=0)
    # fits are per SDE: the same object refits for another one
    with pytest.raises(ValueError, match="cost_in"):
        GITS(cost_in="nope")
    grid.fit(scoresde.VESDE(), score, (2,))
    assert scoresde.solve(scoresde.VESDE(), score, (2, 2), solver="ddim", steps=3, grid=grid).nfe == 4
