"""Per-sample adaptive integration, the per-sample likelihood, and the log-density along the ODE sampler's path.

Closed forms: for Gaussian data the diffused density p_t is Gaussian at every t, and along a trajectory
of the probability-flow ODE with the exact score, log p_eps(x_eps) = log p_T(x_T) + int div v dt. The
solvers use the prior N(0, I) in place of p_T, so the comparisons add log p_T(x_T) - log prior(x_T) at
the trajectory's own end point x_T: what remains is the integration error alone.
"""

import pytest
import torch

import scoresde
from scoresde import VESDE, VPSDE, SubVPSDE
from scoresde.errors import IntegrationError
from scoresde.exact import Gaussian, GaussianMixture
from scoresde.flow import odeint_per_sample

#: These tests claim bit-for-bit results (CI also runs them on other CPU instruction sets).
pytestmark = pytest.mark.bitwise

SDE = VPSDE()
GAUSS = Gaussian(torch.tensor([0.5, -0.3], dtype=torch.float64),
                 torch.tensor([[0.5, 0.1], [0.1, 0.3]], dtype=torch.float64))


def hard_mixture(n_easy=8, n_hard=3):
    """Wide components plus a narrow one (std 0.01): the points drawn from it need many more steps."""
    means = torch.tensor([[-1.0, 0.0], [1.0, 0.0], [0.3, 0.0]], dtype=torch.float64)
    gm = GaussianMixture(torch.tensor([0.45, 0.45, 0.1]), means, torch.tensor([0.5, 0.5, 0.01], dtype=torch.float64))
    x, k = gm.sample(8 * (n_easy + n_hard), generator=torch.Generator().manual_seed(0), return_labels=True)
    return gm, torch.cat([x[k != 2][:n_easy], x[k == 2][:n_hard]])


def test_odeint_per_sample_solves_each_sample_to_its_tolerance_with_its_own_steps():
    lam = torch.tensor([0.1, 1.0, 10.0, 60.0], dtype=torch.float64)

    def f(t, y, idx):
        return (-lam[idx, None] * y[0],)

    tol = 1e-8
    res = odeint_per_sample(f, (torch.ones(4, 1, dtype=torch.float64),), 0.0, 1.0, rtol=tol, atol=tol)
    err = (res.y[0][:, 0] - torch.exp(-lam)).abs()
    assert (err < 100 * tol).all(), err  # a local tolerance of 1e-8 over at most ~100 steps
    assert (res.nfe.diff() > 0).all()  # stiffer samples take more evaluations, the easy ones fewer
    alone = odeint_per_sample(lambda t, y, idx: (-lam[2] * y[0],), (torch.ones(1, 1, dtype=torch.float64),), 0.0, 1.0,
                              rtol=tol, atol=tol)
    assert torch.equal(alone.y[0][0], res.y[0][2]) and int(alone.nfe[0]) == int(res.nfe[2])
    # backwards in time too: y' = lam y from y(1) = exp(lam) down to y(0) = 1 (decaying in the direction of travel)
    lam_b = lam[:3]
    back = odeint_per_sample(lambda t, y, idx: (lam_b[idx, None] * y[0],), (torch.exp(lam_b)[:, None],), 1.0, 0.0,
                             rtol=tol, atol=tol)
    assert ((back.y[0][:, 0] - 1).abs() < 100 * tol).all()
    with pytest.raises(IntegrationError, match="max_steps"):
        odeint_per_sample(f, (torch.ones(4, 1, dtype=torch.float64),), 0.0, 1.0, rtol=tol, atol=tol, max_steps=5)


def test_per_sample_likelihood_meets_the_tolerance_at_every_point_with_fewer_evaluations():
    gm, x = hard_mixture()
    score = gm.score_fn(SDE)
    ref = scoresde.log_likelihood(SDE, score, x, rtol=1e-9, atol=1e-9, max_steps=None).log_prob  # shared, float64
    tol = 1e-6
    shared = scoresde.log_likelihood(SDE, score, x, rtol=tol, atol=tol)
    per = scoresde.log_likelihood(SDE, score, x, rtol=tol, atol=tol, step_control="per_sample")
    err_shared, err_per = (shared.log_prob - ref).abs(), (per.log_prob - ref).abs()
    # The local tolerance bounds each step's error; over the ~20-40 accepted steps the global error
    # stays within two orders of magnitude of it, for every point.
    assert (err_per < 100 * tol).all(), err_per
    assert float(err_per.max()) <= 10 * max(float(err_shared.max()), tol)  # comparable accuracy ...
    nfe = per.nfe_per_sample.double()
    assert float(nfe.mean()) < shared.nfe  # ... for fewer evaluations: each point pays for its own steps, not the hardest point's
    assert float(nfe[-3:].mean()) > float(nfe[:-3].mean())  # the hard points take more


@pytest.mark.parametrize("sde", [VPSDE(), SubVPSDE(), VESDE()], ids=["vp", "subvp", "ve"])
@pytest.mark.parametrize("time_variable", ["t", "log_sigma"])
def test_per_sample_likelihood_equals_the_closed_form(sde, time_variable):
    x = GAUSS.sample(6, generator=torch.Generator().manual_seed(1))
    eps = 1e-3
    res = scoresde.log_likelihood(sde, GAUSS.score_fn(sde), x, eps=eps, rtol=1e-7, atol=1e-7, seeds=range(6),
                                  time_variable=time_variable)
    T = float(sde.T)
    corrected = res.log_prob - sde.prior_log_prob(res.z) + GAUSS.log_prob(res.z, sde, T)
    assert torch.allclose(corrected, GAUSS.log_prob(x, sde, eps), atol=1e-4, rtol=0)


@pytest.mark.parametrize("step_control", ["shared", "per_sample"])
def test_return_log_prob_equals_the_closed_form_and_the_likelihood(step_control):
    xT = torch.randn(8, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    score = GAUSS.score_fn(SDE)
    res = scoresde.solve(SDE, score, None, "ode", x_init=xT, return_log_prob=True, rtol=1e-7, atol=1e-7,
                         step_control=step_control)
    assert res.log_prob.shape == (8,)
    eps = float(res.times[-1])
    corrected = res.log_prob - SDE.prior_log_prob(xT) + GAUSS.log_prob(xT, SDE, 1.0)
    assert torch.allclose(corrected, GAUSS.log_prob(res.samples, SDE, eps), atol=1e-4, rtol=0)
    # the same density, computed the other way: forward from the returned samples
    ll = scoresde.log_likelihood(SDE, score, res.samples, eps=eps, rtol=1e-7, atol=1e-7).log_prob
    assert torch.allclose(res.log_prob, ll, atol=1e-4, rtol=0)


def test_return_log_prob_with_seeds_is_batch_invariant_and_checks_its_arguments():
    score = GAUSS.score_fn(SDE)
    full = scoresde.solve(SDE, score, (16, 2), "ode", seeds=range(16), return_log_prob=True, dtype=torch.float64,
                          trace="hutchinson")
    part = scoresde.solve(SDE, score, (3, 2), "ode", seeds=range(4, 7), return_log_prob=True, dtype=torch.float64,
                          trace="hutchinson")
    assert torch.equal(part.samples, full.samples[4:7]) and torch.equal(part.log_prob, full.log_prob[4:7])
    plain = scoresde.solve(SDE, score, (4, 2), "ode", seeds=range(4))
    assert plain.log_prob is None
    with pytest.raises(ValueError, match="solver='ode'"):
        scoresde.solve(SDE, score, (4, 2), "ddim", steps=4, return_log_prob=True)
    with pytest.raises(ValueError, match="denoise"):
        scoresde.solve(SDE, score, (4, 2), "ode", return_log_prob=True, denoise=True)
    with pytest.raises(ValueError, match="step_control"):
        scoresde.log_likelihood(SDE, score, torch.zeros(2, 2), step_control="sometimes")
    with pytest.raises(ValueError, match="dopri5"):
        scoresde.log_likelihood(SDE, score, torch.zeros(2, 2), step_control="per_sample", method="bosh3")
