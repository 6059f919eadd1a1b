"""Denoising score matching losses, checked against closed forms on Gaussian data.

Data: ``x0 ~ N(m, s^2 I)`` in ``D`` dimensions. Under an SDE with kernel ``x_t = c(t) x0 + std(t) eps``
the marginal is ``p_t = N(c m, v I)`` with ``v = c^2 s^2 + std^2``, so the exact score is
``-(x - c m) / v``. A "Gaussian score model" with parameters ``(m', s')`` predicts ``-(x - c m') / v'``
(``v' = c^2 s'^2 + std^2``): exact for ``(m', s') = (m, s)`` and deliberately wrong otherwise.

For such a model, with ``x_t - c m' = c (m - m') + c s z + std eps`` (``z, eps ~ N(0, I)``),

    E || std s_theta(x_t) + eps ||^2 = std^2 c^2 ||m - m'||^2 / v'^2 + D [ std^2 c^2 s^2 / v'^2 + (1 - std^2 / v')^2 ],

which for the exact score reduces to ``D c^2 s^2 / v``: the irreducible value of the DSM objective.
Time integrals of these closed forms are done by adaptive quadrature (scipy), independently of the
Monte-Carlo estimators under test; tolerances are a few standard errors of the estimates.
"""

import math

import pytest
import torch
from scipy import integrate
from torch import nn

from scoresde import VESDE, VPSDE, NetworkScore, SubVPSDE
from scoresde.errors import IncompatibleSDEError, ShapeError
from scoresde.losses import DSMLoss, ddpm_loss, dsm_loss, importance_sampler, ncsn_loss
from scoresde.nets import MLP
from scoresde.sde.base import SDE

D = 3
MEAN = torch.tensor([0.5, -1.0, 0.3], dtype=torch.float64)
STD = 0.6
WRONG_MEAN = MEAN + 1.0
WRONG_STD = 2 * STD
T_EPS = 1e-5
Z_SCORE = 4.5  # tolerance in standard errors


def _sdes():
    return [VPSDE(), SubVPSDE(), VESDE(sigma_min=0.01, sigma_max=50.0)]


class GaussianScoreNet(nn.Module):
    """The score ``-(x - c m') / (c^2 s'^2 + std^2)`` of Gaussian data ``N(m', s'^2 I)`` diffused by ``sde``."""

    def __init__(self, sde, mean, std):
        super().__init__()
        self.sde, self.mean, self.std = sde, mean, std

    def forward(self, x, t):
        c, sd = self.sde.marginal_coeffs(t)
        v = c**2 * self.std**2 + sd**2
        return -(x - c[:, None] * self.mean.to(x)) / v[:, None]


class AsEps(nn.Module):
    """The same model as a noise predictor: ``eps_hat = -std * score``."""

    def __init__(self, score_net):
        super().__init__()
        self.score_net = score_net

    def forward(self, x, t):
        _, sd = self.score_net.sde.marginal_coeffs(t)
        return -sd[:, None] * self.score_net(x, t)


class AsX0(nn.Module):
    """The same model as a data predictor (Tweedie): ``x0_hat = (x + std^2 score) / c``."""

    def __init__(self, score_net):
        super().__init__()
        self.score_net = score_net

    def forward(self, x, t):
        c, sd = self.score_net.sde.marginal_coeffs(t)
        return (x + sd[:, None] ** 2 * self.score_net(x, t)) / c[:, None]


def _score_model(sde, mean=MEAN, std=STD):
    return NetworkScore(GaussianScoreNet(sde, mean, std), sde, parameterization="score")


def _data(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return MEAN + STD * torch.randn(n, D, generator=g, dtype=torch.float64)


def _coeffs(sde, t):
    tt = torch.tensor([t], dtype=torch.float64)
    c, sd = sde.marginal_coeffs(tt)
    return float(c), float(sd), float(sde.diffusion(tt))


def _expected_sq_error(sde, t, mean_p, std_p):
    """``E || std s_theta(x_t) + eps ||^2`` for the Gaussian score model ``(mean_p, std_p)`` (module docstring)."""
    c, sd, _ = _coeffs(sde, t)
    vp = c**2 * std_p**2 + sd**2
    dm2 = float(((MEAN - mean_p) ** 2).sum())
    return sd**2 * c**2 * dm2 / vp**2 + D * (sd**2 * c**2 * STD**2 / vp**2 + (1 - sd**2 / vp) ** 2)


def _snr_fraction(sde, t):
    """``c^2 s^2 / (c^2 s^2 + std^2)``: the per-dimension irreducible value ``E||std grad log p_t + eps||^2 / D``."""
    c, sd, _ = _coeffs(sde, t)
    return c**2 * STD**2 / (c**2 * STD**2 + sd**2)


def _g2_over_std2(sde, t):
    _, sd, g = _coeffs(sde, t)
    return g**2 / sd**2


def _time_average(fn, eps, T=1.0):
    """``1/(T - eps) int_eps^T fn(t) dt``, integrated in ``log t`` (robust to ``1/t`` integrands)."""
    val, _ = integrate.quad(lambda u: fn(math.exp(u)) * math.exp(u), math.log(eps), math.log(T), limit=400, epsabs=0, epsrel=1e-10)
    return val / (T - eps)


def _mean_se(x):
    x = x.detach().double()
    return float(x.mean()), float(x.std() / math.sqrt(x.numel()))


# --------------------------------------------------------------------------- irreducible value
@pytest.mark.parametrize("sde", _sdes(), ids=["vp", "subvp", "ve"])
def test_std2_loss_attains_closed_form_minimum_and_wrong_score_is_higher(sde):
    """``weighting="std2"``: E_t E||std s + eps||^2 / D equals its closed form for the exact and a wrong score."""
    n = 40000
    x0 = _data(n)
    g = torch.Generator().manual_seed(1)
    t = T_EPS + (1 - T_EPS) * torch.rand(n, generator=g, dtype=torch.float64)
    z = torch.randn(n, D, generator=g, dtype=torch.float64)
    exact = dsm_loss(sde, _score_model(sde), x0, t=t, noise=z, eps=T_EPS, reduction="none") / D
    wrong = dsm_loss(sde, _score_model(sde, WRONG_MEAN, WRONG_STD), x0, t=t, noise=z, eps=T_EPS, reduction="none") / D

    want_exact = _time_average(lambda s: _expected_sq_error(sde, s, MEAN, STD) / D, T_EPS)
    # the exact score attains E_t[c^2 s^2 / (c^2 s^2 + std^2)], the irreducible value
    want_min = _time_average(lambda s: _snr_fraction(sde, s), T_EPS)
    assert want_exact == pytest.approx(want_min, rel=1e-8)
    want_wrong = _time_average(lambda s: _expected_sq_error(sde, s, WRONG_MEAN, WRONG_STD) / D, T_EPS)

    m, se = _mean_se(exact)
    assert abs(m - want_min) < Z_SCORE * se, (m, want_min, se)
    m, se = _mean_se(wrong)
    assert abs(m - want_wrong) < Z_SCORE * se, (m, want_wrong, se)
    diff_m, diff_se = _mean_se(wrong - exact)  # common random numbers: the excess over the minimum
    assert abs(diff_m - (want_wrong - want_min)) < Z_SCORE * diff_se
    assert diff_m > Z_SCORE * diff_se  # the wrong score is measurably worse
    # "mean" reduction is the per-dimension average of the same per-sample values
    torch.testing.assert_close(
        dsm_loss(sde, _score_model(sde), x0, t=t, noise=z, eps=T_EPS, reduction="mean"), exact.mean()
    )


# --------------------------------------------------------------------------- likelihood bound
def _entropy(var):
    return 0.5 * D * math.log(2 * math.pi * math.e * var)


@pytest.mark.parametrize("sde", _sdes(), ids=["vp", "subvp", "ve"])
def test_likelihood_weighted_loss_gives_the_nll_bound(sde):
    r"""Song, Durkan, Murray & Ermon (2021), Theorem 1, checked in closed form on Gaussian data.

    Theorem 1 (data ``p``, prior ``pi``, reverse SDE with score ``s_theta`` giving ``p_theta``) reads
    ``KL(p || p_theta) <= J_SM(theta; g^2) + KL(p_T || pi)``, ``J_SM = 1/2 int E_{p_t} g^2 ||s_theta - grad log p_t||^2 dt``.
    Applied on ``[eps, T]`` (data ``p_eps``) and combined with the denoising identity
    ``J_SM = 1/2 int E g^2 ||s_theta - grad log p_{0t}(x_t|x_0)||^2 dt - 1/2 int E g^2 (||grad log p_{0t}||^2 - ||grad log p_t||^2) dt``
    and the entropy flow ``dH(p_t)/dt = E[div f] + g^2/2 E||grad log p_t||^2``, it gives the bound (their eq. for L^DSM):

        -E_{p_eps} log p_theta(x) <= B(theta) := -E_{p_T} log pi(x_T)
              + 1/2 int_eps^T E[ g^2 ||s_theta(x_t, t) - grad log p_{0t}(x_t | x_0)||^2 ] dt
              - 1/2 int_eps^T E[ g^2 ||grad log p_{0t}(x_t | x_0)||^2 + 2 div f(x_t, t) ] dt,

    and, exactly, ``B(theta) = H(p_eps) + KL(p_T || pi) + J_SM(theta)``.

    In terms of the loss: the middle term is ``(T - eps)/2 * dsm_loss(weighting="likelihood", reduction="sum")``
    in expectation. For linear drift ``f = a(t) x`` the kernel variance obeys ``d std^2/dt = 2 a std^2 + g^2``,
    and ``||grad log p_{0t}||^2 = ||eps||^2 / std^2``, so the last term is ``-D/2 log(std(T)^2 / std(eps)^2)``.

    Checked consequences, with ``p_eps = N(c m, v_eps I)``, ``p_T``, ``pi`` Gaussian (entropies, cross-entropy
    and ``J_SM`` in closed form): (i) for the exact score ``B = H(p_eps) + KL(p_T || pi)``, i.e. the bound is
    tight up to the prior mismatch; (ii) for a wrong linear score ``B = H(p_eps) + KL + J_SM(theta)``, and
    in particular ``B > H(p_eps) <= -E log p_theta``: the likelihood-weighted loss bounds the NLL from above.
    """
    n = 200000
    x0 = _data(n)
    T = sde.T
    c_T, sd_T, _ = _coeffs(sde, T)
    c_e, sd_e, _ = _coeffs(sde, T_EPS)
    m2 = float((MEAN**2).sum())
    var_T, var_e = c_T**2 * STD**2 + sd_T**2, c_e**2 * STD**2 + sd_e**2
    prior_var = sde.prior_std**2
    prior_ce = 0.5 * D * math.log(2 * math.pi * prior_var) + (c_T**2 * m2 + D * var_T) / (2 * prior_var)  # -E_{p_T} log pi
    kl_prior = prior_ce - _entropy(var_T)
    correction = 0.5 * D * math.log(sd_T**2 / sd_e**2)

    def bound_terms(model, seed):
        per_sample = dsm_loss(
            sde, model, x0, weighting="likelihood", importance_sampling=True, eps=T_EPS, reduction="none",
            generator=torch.Generator().manual_seed(seed),
        )
        return prior_ce + 0.5 * (T - T_EPS) * per_sample - correction  # [n], mean = B(theta)

    def j_sm(mean_p, std_p):
        dm2 = float(((MEAN - mean_p) ** 2).sum())

        def integrand(t):
            c, sd, g = _coeffs(sde, t)
            v, vp = c**2 * STD**2 + sd**2, c**2 * std_p**2 + sd**2
            return 0.5 * g**2 * (D * v * (1 / v - 1 / vp) ** 2 + c**2 * dm2 / vp**2)

        return _time_average(integrand, T_EPS) * (T - T_EPS)

    b_exact = bound_terms(_score_model(sde), seed=3)
    b_wrong = bound_terms(_score_model(sde, WRONG_MEAN, WRONG_STD), seed=3)  # same t and noise
    h = _entropy(var_e)  # = -E_{p_eps} log p_eps <= -E_{p_eps} log p_theta for every model

    m, se = _mean_se(b_exact)
    assert abs(m - (h + kl_prior)) < Z_SCORE * se, (m, h + kl_prior, se)
    assert se < 0.05 * abs(h)  # the check above is sharp (the DSM term alone is ~ 5x larger than h)

    gap = j_sm(WRONG_MEAN, WRONG_STD)
    m, se = _mean_se(b_wrong)
    assert abs(m - (h + kl_prior + gap)) < Z_SCORE * se, (m, h + kl_prior + gap, se)
    assert m - h > Z_SCORE * se  # the bound lies above the entropy, hence above nothing smaller than the NLL
    d, dse = _mean_se(b_wrong - b_exact)
    assert abs(d - gap) < Z_SCORE * dse and gap > 10 * dse


# --------------------------------------------------------------------------- importance sampling
def _vp_is_cdf(sde, t, eps):
    """Closed-form CDF of q(t) ~ beta/(1 - exp(-B)) on [eps, 1] for the VP SDE: log expm1(B(t)) differences."""
    F = lambda s: math.log(math.expm1(sde.integrated_beta(torch.tensor(s, dtype=torch.float64)).item()))
    return (F(t) - F(eps)) / (F(1.0) - F(eps))


def test_importance_sampler_draws_from_g2_over_std2_with_correct_weights():
    sde = VPSDE()
    n = 200000
    sampler = importance_sampler(sde, T_EPS)
    assert importance_sampler(sde, T_EPS) is sampler  # cached per (sde, eps)
    t, w = sampler.sample(n, torch.Generator().manual_seed(0), dtype=torch.float64)
    assert float(t.min()) >= T_EPS and float(t.max()) <= 1.0
    for q in (1e-4, 1e-3, 1e-2, 0.1, 0.3, 0.6, 0.9):
        F = _vp_is_cdf(sde, q, T_EPS)
        emp = float((t <= q).double().mean())
        assert abs(emp - F) < Z_SCORE * math.sqrt(F * (1 - F) / n), (q, emp, F)
    # w = f(t) / ((T - eps) q(t)) ~ Z / (T - eps), Z = int g^2/std^2 = log expm1(B(1)) - log expm1(B(eps));
    # nearly constant: q is exact up to the variation of f(t) t across one grid cell in log t (~1e-3 / 1.4)
    B1, Be = float(sde.integrated_beta(torch.tensor(1.0))), float(sde.integrated_beta(torch.tensor(T_EPS)))
    Z = math.log(math.expm1(B1)) - math.log(math.expm1(Be))
    torch.testing.assert_close(w, torch.full_like(w, Z / (1 - T_EPS)), rtol=1e-3, atol=0)


@pytest.mark.parametrize("sde", [VPSDE(), SubVPSDE(), VESDE(sigma_max=20.0)], ids=["vp", "subvp", "ve"])
def test_importance_weights_are_unbiased_for_any_time_function(sde):
    """E_q[w(t) h(t)] = 1/(T - eps) int_eps^T g^2/std^2 h(t) dt for test functions h that probe every part of [eps, T]."""
    n = 200000
    t, w = importance_sampler(sde, T_EPS).sample(n, torch.Generator().manual_seed(4), dtype=torch.float64)
    tests = {
        "1": (lambda s: 1.0, lambda s: torch.ones_like(s)),
        "t^2": (lambda s: s * s, lambda s: s * s),
        "t>0.5": (lambda s: float(s > 0.5), lambda s: (s > 0.5).double()),
        "t<1e-3": (lambda s: float(s < 1e-3), lambda s: (s < 1e-3).double()),
    }
    for name, (h, h_torch) in tests.items():
        if name == "t>0.5":
            want = integrate.quad(lambda s: _g2_over_std2(sde, s), 0.5, 1.0, epsrel=1e-10)[0] / (1 - T_EPS)
        elif name == "t<1e-3":
            want = _time_average(lambda s: _g2_over_std2(sde, s), T_EPS, 1e-3) * (1e-3 - T_EPS) / (1 - T_EPS)
        else:
            want = _time_average(lambda s: _g2_over_std2(sde, s) * h(s), T_EPS)
        m, se = _mean_se(w * h_torch(t))
        assert abs(m - want) < Z_SCORE * se + 1e-12, (name, m, want, se)


@pytest.mark.parametrize("sde", [VPSDE(), VESDE(sigma_max=20.0)], ids=["vp", "ve"])
def test_importance_sampling_is_unbiased(sde):
    """The IS estimator and the uniform-t estimator of the likelihood-weighted loss have the same mean (and it is
    the closed-form value). eps = 1e-2 keeps the uniform estimator's variance (which grows like 1/eps) moderate."""
    eps, n = 1e-2, 100000
    x0 = _data(n, seed=5)
    model = _score_model(sde, WRONG_MEAN, WRONG_STD)
    kw = dict(weighting="likelihood", eps=eps, reduction="none")
    uni = dsm_loss(sde, model, x0, generator=torch.Generator().manual_seed(6), **kw)
    imp = dsm_loss(sde, model, x0, importance_sampling=True, generator=torch.Generator().manual_seed(7), **kw)
    mu, su = _mean_se(uni)
    mi, si = _mean_se(imp)
    assert abs(mu - mi) < Z_SCORE * math.hypot(su, si), (mu, mi, su, si)
    want = _time_average(lambda s: _g2_over_std2(sde, s) * _expected_sq_error(sde, s, WRONG_MEAN, WRONG_STD), eps)
    assert abs(mi - want) < Z_SCORE * si, (mi, want, si)
    assert abs(mu - want) < Z_SCORE * su
    assert si < su  # and importance sampling makes the estimate more precise (much more so as eps -> 0)


@pytest.mark.parametrize("importance", [False, True], ids=["uniform", "importance"])
def test_stratified_times_keep_the_expectation_and_lower_the_variance(importance):
    """Stratified times: one ``u`` per stratum; the batch-mean loss keeps its closed-form expectation, and its
    spread over batches is smaller than with independent times (same batches, same model)."""
    sde = VPSDE()
    from scoresde.noise import rand

    # the stratification itself: the i-th of n draws lies in [i/n, (i+1)/n)
    u = rand((64,), torch.Generator().manual_seed(0), torch.device("cpu"), torch.float64, stratified=True)
    assert bool(((u * 64).floor() == torch.arange(64, dtype=torch.float64)).all())

    batches, b = 1000, 64
    model = _score_model(sde, WRONG_MEAN, WRONG_STD)
    kw = dict(eps=1e-3, reduction="mean")
    if importance:
        kw.update(weighting="likelihood", importance_sampling=True)
    means = {}
    for mode in ("uniform", "stratified"):
        g = torch.Generator().manual_seed(8)
        means[mode] = torch.stack([dsm_loss(sde, model, _data(b, seed=100 + i), generator=g, time_sampling=mode, **kw)
                                   for i in range(batches)])
    if importance:
        want = _time_average(lambda s: _g2_over_std2(sde, s) * _expected_sq_error(sde, s, WRONG_MEAN, WRONG_STD), 1e-3) / D
    else:
        want = _time_average(lambda s: _expected_sq_error(sde, s, WRONG_MEAN, WRONG_STD), 1e-3) / D
    for mode, v in means.items():
        m, se = _mean_se(v)
        assert abs(m - want) < Z_SCORE * se, (mode, m, want, se)
    # Test of equal variances: log of a ratio of two sample variances of n normal values has standard deviation
    # about sqrt(4 / (n - 1)); the stratified batch means must be less spread out by Z_SCORE of those.
    ratio = float(means["stratified"].var() / means["uniform"].var())
    assert ratio < math.exp(-Z_SCORE * math.sqrt(4 / (batches - 1))), ratio
    with pytest.raises(ValueError, match="time_sampling"):
        dsm_loss(sde, model, _data(4), time_sampling="sobol")


# --------------------------------------------------------------------------- special cases
def test_parameterisations_give_the_same_loss():
    """eps-, score- and x0-parameterised wrappers of one model give the same loss (value and weighting)."""
    sde = VPSDE()
    net = GaussianScoreNet(sde, WRONG_MEAN, WRONG_STD)
    models = [NetworkScore(net, sde, "score"), NetworkScore(AsEps(net), sde, "eps"), NetworkScore(AsX0(net), sde, "x0")]
    x0 = _data(256)
    for weighting in ("std2", "likelihood"):
        vals = [
            dsm_loss(sde, m, x0, weighting=weighting, eps=1e-3, generator=torch.Generator().manual_seed(2)) for m in models
        ]
        for v in vals[1:]:
            torch.testing.assert_close(v, vals[0], rtol=1e-9, atol=0)
    # a bare score function works like the score-parameterised wrapper
    torch.testing.assert_close(
        dsm_loss(sde, net, x0, generator=torch.Generator().manual_seed(2)),
        dsm_loss(sde, models[0], x0, generator=torch.Generator().manual_seed(2)),
    )


def test_ddpm_loss_is_the_eps_mse():
    sde = VPSDE(beta_min=0.1, beta_max=20.0)
    torch.manual_seed(0)
    net = MLP(D, hidden=16, depth=1, embed_dim=8).double()
    model = NetworkScore(net, sde, "eps")
    x0 = _data(64)
    t = torch.linspace(0.01, 1.0, 64, dtype=torch.float64)
    z = torch.randn(64, D, dtype=torch.float64)
    B = 0.1 * t + 0.5 * 19.9 * t**2  # int_0^t beta
    x_t = torch.exp(-B / 2)[:, None] * x0 + torch.sqrt(1 - torch.exp(-B))[:, None] * z
    with torch.no_grad():
        want = ((net(x_t, t) - z) ** 2).mean()
        torch.testing.assert_close(ddpm_loss(sde, model, x0, t=t, noise=z), want)
        torch.testing.assert_close(ddpm_loss(sde, model, x0, t=t, noise=z, reduction="sum"), want * D)
        torch.testing.assert_close(dsm_loss(sde, model, x0, t=t, noise=z), want)
    with pytest.raises(ValueError, match="eps"):
        ddpm_loss(sde, NetworkScore(net, sde, "score"), x0)
    with pytest.raises(ValueError):
        ddpm_loss(sde, model, x0, weighting="likelihood")


@pytest.mark.parametrize("sde", _sdes(), ids=lambda s: type(s).__name__)
def test_min_snr_weighting_is_the_noise_loss_times_min_snr_gamma_over_snr(sde):
    """At fixed ``t`` and noise the Min-SNR-5 loss is the per-sample noise error times ``min(SNR, 5) / SNR``."""
    from scoresde.losses import MIN_SNR_GAMMA

    model = _score_model(sde, WRONG_MEAN, WRONG_STD)
    x0 = _data(64)
    t = torch.linspace(1e-3, 1.0, 64, dtype=torch.float64)
    z = torch.randn(64, D, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    per_sample = dsm_loss(sde, model, x0, t=t, noise=z, reduction="none")  # ||eps_hat - eps||^2, [B]
    c, sd = sde.marginal_coeffs(t)
    snr = (c / sd) ** 2
    want = torch.minimum(snr, torch.full_like(snr, MIN_SNR_GAMMA)) / snr * per_sample
    got = dsm_loss(sde, model, x0, t=t, noise=z, reduction="none", weighting="min_snr")
    torch.testing.assert_close(got, want)
    assert bool((snr > MIN_SNR_GAMMA).any()) and bool((snr < MIN_SNR_GAMMA).any())  # both branches are exercised
    # at t = 0 (SNR = inf for VP-type kernels) the weight is 0, not NaN
    zero = dsm_loss(sde, model, x0[:2], t=torch.zeros(2, dtype=torch.float64), noise=z[:2], reduction="none", weighting="min_snr")
    assert bool(torch.isfinite(zero).all())


def test_ncsn_loss_is_sigma2_weighted_dsm():
    sde = VESDE(sigma_min=0.01, sigma_max=50.0)
    torch.manual_seed(0)
    net = MLP(D, hidden=16, depth=1, embed_dim=8).double()
    model = NetworkScore(net, sde, "score")
    x0 = _data(64)
    t = torch.linspace(0.0, 1.0, 66, dtype=torch.float64)[1:-1]
    z = torch.randn(64, D, dtype=torch.float64)
    sigma2 = 0.01**2 * torch.expm1(2 * t * math.log(50.0 / 0.01))  # std(t)^2 of the VE kernel
    x_t = x0 + sigma2.sqrt()[:, None] * z
    with torch.no_grad():
        want = (sigma2 * ((net(x_t, t) + (x_t - x0) / sigma2[:, None]) ** 2).sum(1)).mean()
        torch.testing.assert_close(ncsn_loss(sde, model, x0, t=t, noise=z, reduction="sum"), want)
    with pytest.raises(ValueError, match="score"):
        ncsn_loss(sde, NetworkScore(net, sde, "eps"), x0)


# --------------------------------------------------------------------------- the callable and validation
def test_dsmloss_matches_function_and_is_deterministic():
    sde = VPSDE()
    model = _score_model(sde, WRONG_MEAN, WRONG_STD)
    x0 = _data(128)
    fn = DSMLoss(sde, weighting="likelihood", importance_sampling=True, eps=1e-5, reduction="sum")
    a = fn(model, x0, torch.Generator().manual_seed(9))
    b = fn(model, x0, torch.Generator().manual_seed(9))
    c = dsm_loss(sde, model, x0, weighting="likelihood", importance_sampling=True, eps=1e-5, reduction="sum",
                 generator=torch.Generator().manual_seed(9))
    assert torch.equal(a, b) and torch.equal(a, c) and a.ndim == 0
    assert fn.config == dict(weighting="likelihood", importance_sampling=True, eps=1e-5, reduction="sum")
    assert not torch.equal(a, fn(model, x0, torch.Generator().manual_seed(10)))


def test_loss_gradients_reach_the_network():
    sde = VPSDE()
    net = MLP(2, hidden=16, depth=1, embed_dim=8)
    loss = DSMLoss(sde)(NetworkScore(net, sde, "eps"), torch.randn(32, 2), torch.Generator().manual_seed(0))
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())
    assert net.output.weight.grad.abs().sum() > 0


def test_option_validation():
    sde = VPSDE()
    model = _score_model(sde)
    x0 = _data(4)
    with pytest.raises(ValueError, match="weighting"):
        dsm_loss(sde, model, x0, weighting="snr")
    with pytest.raises(ValueError, match="reduction"):
        DSMLoss(sde, reduction="max")
    with pytest.raises(ValueError, match="importance_sampling"):
        DSMLoss(sde, importance_sampling=True)  # needs likelihood weighting
    with pytest.raises(ValueError, match="eps"):
        DSMLoss(sde, weighting="likelihood", eps=0.0)
    with pytest.raises(ValueError, match="eps"):
        DSMLoss(sde, eps=1.5)
    with pytest.raises(ValueError, match="importance_sampling"):
        dsm_loss(sde, model, x0, weighting="likelihood", importance_sampling=True, t=torch.full((4,), 0.5))
    with pytest.raises(ShapeError):
        dsm_loss(sde, model, x0, noise=torch.zeros(4, D + 1))
    with pytest.raises(ShapeError):
        dsm_loss(sde, model, x0, t=torch.full((3,), 0.5))
    with pytest.raises(ValueError):
        dsm_loss(sde, model, x0, t=torch.full((4,), 1.5))

    class NoKernel(VPSDE):
        marginal_coeffs = SDE.marginal_coeffs  # the abstract base's (unimplemented) method

    with pytest.raises(IncompatibleSDEError):
        DSMLoss(NoKernel())


def test_loss_stays_finite_at_tiny_times():
    """At t = eps = 1e-5 (std ~ 1e-3) the eps-form never divides by std twice: float32 losses are finite."""
    sde = VPSDE()
    net = MLP(2, hidden=16, depth=1, embed_dim=8)
    x0 = torch.randn(16, 2)
    t = torch.full((16,), 1e-5)
    for par in ("eps", "score", "x0"):
        for weighting in ("std2", "likelihood"):
            val = dsm_loss(sde, NetworkScore(net, sde, par), x0, t=t, weighting=weighting)
            assert torch.isfinite(val), (par, weighting)


def test_dsm_loss_rejects_bad_data_and_times_that_would_divide_by_zero():
    from scoresde.errors import DataError

    sde = VPSDE()
    x0_model = NetworkScore(MLP(2, hidden=8), sde, "x0")
    with pytest.raises(DataError, match="floating-point"):
        dsm_loss(sde, x0_model, torch.ones(4, 2, dtype=torch.long))
    with pytest.raises(ShapeError, match="event dim"):
        dsm_loss(sde, x0_model, torch.ones(4))
    with pytest.raises(ValueError, match="eps > 0"):
        dsm_loss(sde, x0_model, torch.ones(4, 2), eps=0.0)
    with pytest.raises(ValueError, match="t > 0"):
        dsm_loss(sde, x0_model, torch.ones(4, 2), t=torch.zeros(4))
    # an eps-parameterised model is finite at t = 0
    eps_model = NetworkScore(MLP(2, hidden=8), sde, "eps")
    assert torch.isfinite(dsm_loss(sde, eps_model, torch.ones(4, 2), t=torch.zeros(4)))
