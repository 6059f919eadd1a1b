"""Log-likelihoods through the probability-flow ODE, checked against closed-form answers.

Closed form used throughout (Gaussian data with the exact score): for data ``N(m, Q diag(lam) Q^T)``
the diffused marginal is ``p_t = N(a_t m, Q diag(c_t) Q^T)`` with ``c_t = a_t^2 lam + s_t^2``
(``a_t, s_t`` the kernel's scale and std). Write the SDE drift as ``f = phi(t) x``. In the
eigenbasis, ``y = Q^T (x - a_t m)``, the probability-flow ODE is diagonal,

    y_i' = (phi + g^2 / (2 c_i)) y_i,

and the marginal variance of the SDE obeys ``c_i' = 2 phi c_i + g^2``, so ``(log y_i)' = c_i'/(2 c_i)``
and ``y_i(t) = sqrt(c_i(t) / c_i(eps)) y_i(eps)``. The flow map from ``eps`` to ``T`` is therefore

    z = a_T m + Q diag(sqrt(c_T / c_eps)) Q^T (x - a_eps m),    log|det dz/dx| = 1/2 sum_i log(c_T,i / c_eps,i),

and the model density is ``log p(x) = log N(z; 0, prior_std^2 I) + log|det dz/dx|`` (the prior, not
``p_T``, sits at ``T``). The integrated Jacobian of the velocity is ``A = Q diag(1/2 log(c_T / c_eps)) Q^T``
(the ``J(t)`` commute), so a Hutchinson probe ``e`` integrates to exactly ``e^T A e``.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

import scoresde
from scoresde.errors import DataError, IntegrationError, NonFiniteError, ShapeError, TimeRangeError
from scoresde.exact import Gaussian, GaussianMixture
from scoresde.flow import Divergence
from scoresde.likelihood import bits_per_dim, log_likelihood
from scoresde.noise import rademacher

F64 = torch.float64
EPS = 1e-5
TIGHT = 1e-8  # float64 solver tolerance of the closed-form checks: errors ~1e-6 nats, 100x below 1e-4
SDES = {
    "vp": lambda: scoresde.VPSDE(),
    "subvp": lambda: scoresde.SubVPSDE(),
    "ve": lambda: scoresde.VESDE(sigma_min=0.01, sigma_max=50.0),
}


def _coeffs(sde, t: float):
    a, s = sde.marginal_coeffs(torch.tensor([t], dtype=F64))
    return a[0], s[0]


def linear_flow(sde, mean, lam, Q, eps=EPS):
    """Closed-form flow map pieces for Gaussian data N(mean, Q diag(lam) Q^T) (see the module docstring).

    ``mean`` and ``lam`` are shaped like one event; ``Q`` is ``[D, D]`` or ``None`` (identity).
    Returns a function ``x -> (log_prob, z)`` and the per-eigendirection ``1/2 log(c_T/c_eps)``.
    """
    a_e, s_e = _coeffs(sde, eps)
    a_T, s_T = _coeffs(sde, sde.T)
    c_e = a_e**2 * lam + s_e**2
    c_T = a_T**2 * lam + s_T**2
    half_log_ratio = 0.5 * torch.log(c_T / c_e)

    def flow(x):
        y = x - a_e * mean
        if Q is None:
            zc = torch.exp(half_log_ratio) * y
        else:
            zc = ((y @ Q) * torch.exp(half_log_ratio)) @ Q.T
        z = a_T * mean + zc
        return sde.prior_log_prob(z) + half_log_ratio.sum(), z

    return flow, half_log_ratio


def diag_gaussian(event, seed=0):
    g = torch.Generator().manual_seed(seed)
    mean = 0.5 * torch.randn(event, generator=g, dtype=F64)
    std = 0.1 + 0.5 * torch.rand(event, generator=g, dtype=F64)
    return mean, std, GaussianMixture([1.0], mean.unsqueeze(0), std.unsqueeze(0))


def full_gaussian(D, seed=0):
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(D, D, generator=g, dtype=F64))
    lam = torch.linspace(0.05, 1.5, D, dtype=F64)
    mean = 0.3 * torch.randn(D, generator=g, dtype=F64)
    return mean, lam, Q, Gaussian(mean, Q @ torch.diag(lam) @ Q.T)


# --------------------------------------------------------------------------- exact trace, closed form
@pytest.mark.parametrize("event", [(1,), (3,), (2, 3), (2, 4, 4)], ids=lambda e: "x".join(map(str, e)))
@pytest.mark.parametrize("name", list(SDES))
def test_exact_trace_matches_gaussian_closed_form(name, event):
    sde = SDES[name]()
    mean, std, data = diag_gaussian(event)
    x = data.sample(3, torch.Generator().manual_seed(1))
    res = log_likelihood(sde, data.score_fn(sde), x, rtol=TIGHT, atol=TIGHT)
    flow, _ = linear_flow(sde, mean, std**2, None)
    ref, z = flow(x)
    assert res.log_prob.shape == (3,) and res.log_prob.dtype == F64
    assert torch.allclose(res.log_prob, ref, rtol=0, atol=1e-4), (res.log_prob - ref).abs().max()
    assert torch.allclose(res.z, z, rtol=0, atol=1e-5 * max(1.0, sde.prior_std))
    assert torch.allclose(res.prior_log_prob + res.delta_log_prob, res.log_prob)
    assert torch.equal(res.stderr, torch.zeros(3, dtype=F64))


@pytest.mark.parametrize("name", ["vp", "ve"])
def test_exact_trace_full_covariance(name):
    sde = SDES[name]()
    mean, lam, Q, data = full_gaussian(5)
    x = data.sample(4, torch.Generator().manual_seed(2))
    res = log_likelihood(sde, data.score_fn(sde), x, rtol=TIGHT, atol=TIGHT)
    ref, _ = linear_flow(sde, mean, lam, Q)[0](x)
    assert torch.allclose(res.log_prob, ref, rtol=0, atol=1e-4), (res.log_prob - ref).abs().max()


def test_float32_path_and_chunking():
    sde = scoresde.VPSDE()
    mean, std, data = diag_gaussian((2, 4, 4), seed=3)
    x = data.sample(2, torch.Generator().manual_seed(4))
    ref, _ = linear_flow(sde, mean, std**2, None)[0](x)
    data32 = GaussianMixture([1.0], mean.float().unsqueeze(0), std.float().unsqueeze(0))
    res = log_likelihood(sde, data32.score_fn(sde), x.float())  # default rtol = atol = 1e-5
    assert res.log_prob.dtype == torch.float32 and res.z.dtype == torch.float32
    # dopri5's local error control at rtol 1e-5 on |log p| ~ 10 and float32 rounding: a few 1e-4 nats.
    assert (res.log_prob.double() - ref).abs().max() < 5e-3
    # Chunking the exact trace changes only the order of work, not the result.
    full = log_likelihood(sde, data.score_fn(sde), x)
    chunked = log_likelihood(sde, data.score_fn(sde), x, chunk_size=5)
    one = log_likelihood(sde, data.score_fn(sde), x, chunk_size=1)
    assert torch.allclose(full.log_prob, chunked.log_prob, rtol=0, atol=1e-9)
    assert torch.allclose(full.log_prob, one.log_prob, rtol=0, atol=1e-9)


def test_divergence_vectorised_and_looped_agree():
    torch.manual_seed(0)
    W = torch.randn(6, 6, dtype=F64)
    x = torch.randn(3, 2, 3, dtype=F64, requires_grad=True)
    fn = lambda y: torch.tanh(y.reshape(3, 6) @ W).reshape(3, 2, 3)  # noqa: E731
    jac = torch.autograd.functional.jacobian(fn, x.detach())
    J = torch.stack([jac[b, :, :, b].reshape(6, 6) for b in range(3)])  # [B, out, in]: samples are independent
    exact_ref = J.diagonal(dim1=1, dim2=2).sum(1)
    probes = torch.randn(4, 3, 2, 3, dtype=F64)
    results = []
    for vectorize in (True, False):
        ex = Divergence("exact", None, chunk_size=4, vectorize=vectorize)
        hu = Divergence("hutchinson", probes, vectorize=vectorize)
        results.append((ex(fn(x), x), hu(fn(x), x)))  # each call consumes its graph
    assert torch.allclose(results[0][0][0], exact_ref) and torch.allclose(results[1][0][0], exact_ref)
    hutch_ref = torch.einsum("nbi,bij,nbj->nb", probes.reshape(4, 3, 6), J, probes.reshape(4, 3, 6))
    assert torch.allclose(results[0][1], hutch_ref) and torch.allclose(results[1][1], hutch_ref)


class _NegateNoVmap(torch.autograd.Function):
    """``-x`` whose backward reads a value back (``float``), which vmap cannot batch."""

    @staticmethod
    def forward(ctx, x):
        return -x

    @staticmethod
    def backward(ctx, g):
        return -g if float(g.abs().max()) >= 0 else g


def test_score_without_batching_rule_falls_back_to_a_loop():
    """N(0, 1/4 I) data, exact score -x / c_t written with an op vmap cannot batch."""
    sde = scoresde.VPSDE()
    lam = torch.full((4,), 0.25, dtype=F64)

    def score(x, t):
        a, s = sde.marginal_coeffs(t)
        return _NegateNoVmap.apply(x) / (a**2 * 0.25 + s**2).unsqueeze(1)

    x = 0.5 * torch.randn(3, 4, generator=torch.Generator().manual_seed(0), dtype=F64)
    ref, _ = linear_flow(sde, torch.zeros(4, dtype=F64), lam, None)[0](x)
    for kw in (dict(trace="exact"), dict(trace="hutchinson", n_probes=3, probe="rademacher")):
        res = scoresde.log_likelihood(sde, score, x, rtol=TIGHT, atol=TIGHT, **kw)
        assert torch.allclose(res.log_prob, ref, rtol=0, atol=1e-4)


def test_nfe_counts_score_calls_and_times_stay_in_range():
    sde = scoresde.VESDE()
    data = full_gaussian(3)[3]
    calls = []
    score = data.score_fn(sde)

    def counted(x, t):
        calls.append(t.clone())
        return score(x, t)

    x = data.sample(2, torch.Generator().manual_seed(0))
    for trace in ("exact", "hutchinson"):
        calls.clear()
        res = scoresde.log_likelihood(sde, counted, x, trace=trace, n_probes=1 if trace == "exact" else 3, eps=1e-3)
        assert res.nfe == len(calls) > 0  # one forward pass per evaluation
        t = torch.cat(calls)
        assert float(t.min()) >= 1e-3 and float(t.max()) <= sde.T  # never outside [eps, T]


def test_docstring_example():
    import doctest

    import scoresde.likelihood as mod

    assert doctest.testmod(mod, verbose=False).failed == 0


def test_classic_loop_in_the_benchmark_computes_the_same_estimator():
    """The benchmark's re-implementation of the scipy loop agrees with ours on the same probe."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "likelihood_bench.py"
    spec = importlib.util.spec_from_file_location("likelihood_bench", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    sde, score, x = bench.make_problem(4, 8)
    gen = torch.Generator().manual_seed(3)
    ours = scoresde.log_likelihood(sde, score, x.double(), trace="hutchinson", generator=gen, rtol=1e-8, atol=1e-8)
    # The classic loop is fed the probe ours drew: replay the draw from the same seed.
    probe = rademacher((1, *x.shape), torch.Generator().manual_seed(3), x.device, torch.float32)[0]
    with torch.no_grad():
        classic, nfe = bench.classic_log_likelihood(sde, score, x, probe, rtol=1e-8, atol=1e-8)
    assert nfe > 0
    # float32 model evaluations in both; the difference is ODE and float32 rounding error.
    assert torch.allclose(classic.double(), ours.log_prob, rtol=0, atol=1e-4)
    exact = scoresde.log_likelihood(sde, score, x.double(), rtol=1e-8, atol=1e-8)
    assert torch.allclose(exact.log_prob, score.exact_log_prob(x), rtol=0, atol=1e-3)


# --------------------------------------------------------------------------- Hutchinson statistics
def _quadratic_form_moments(A: torch.Tensor, probe: str):
    """Mean, variance and 4th central moment of e^T A e (A symmetric) for one probe, exactly.

    Rademacher: enumerate all 2^D sign vectors. Gaussian: cumulants k_r = 2^(r-1) (r-1)! sum(l^r)
    of the eigenvalues l of A, and mu4 = k4 + 3 k2^2.
    """
    if probe == "rademacher":
        D = A.shape[0]
        e = torch.tensor(list(itertools.product([-1.0, 1.0], repeat=D)), dtype=F64)
        q = torch.einsum("ki,ij,kj->k", e, A, e)
        m = q.mean()
        return m, ((q - m) ** 2).mean(), ((q - m) ** 4).mean()
    lam = torch.linalg.eigvalsh(A)
    k2, k4 = 2 * (lam**2).sum(), 48 * (lam**4).sum()
    return lam.sum(), k2, k4 + 3 * k2**2


@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
def test_hutchinson_unbiased_and_variance_falls_as_one_over_n(probe):
    """R copies of one point get independent probes: the batch gives R draws of the estimator."""
    sde = scoresde.VPSDE()
    mean, lam, Q, data = full_gaussian(4, seed=5)
    _, half_log_ratio = linear_flow(sde, mean, lam, Q)
    A = Q @ torch.diag(half_log_ratio) @ Q.T  # int_eps^T J dt: each probe integrates to e^T A e
    mu, var1, mu4 = _quadratic_form_moments(A, probe)
    assert torch.allclose(mu, torch.trace(A))
    R = 400
    x = data.sample(1, torch.Generator().manual_seed(6)).expand(R, -1).contiguous()
    exact = log_likelihood(sde, data.score_fn(sde), x[:1], rtol=TIGHT, atol=TIGHT)
    assert abs(float(exact.delta_log_prob[0] - mu)) < 1e-6
    gen = torch.Generator().manual_seed(7)
    for n in (1, 8):
        res = log_likelihood(
            sde, data.score_fn(sde), x, trace="hutchinson", probe=probe, n_probes=n, generator=gen,
            rtol=TIGHT, atol=TIGHT,
        )
        per_probe = res.probe_delta_log_prob  # [n, R], each exactly e^T A e up to ODE error
        assert per_probe.shape == (n, R)
        est = res.delta_log_prob  # mean over n probes: variance var1 / n
        # Unbiased: the mean of R * n probe draws is within 4 standard errors of tr A.
        assert abs(float(est.mean() - mu)) < 4 * math.sqrt(var1 / (n * R))
        # Variance falls as 1/n: the sample variance of the R estimates against var1 / n, with the
        # standard error of a sample variance, sqrt((mu4_n - var_n^2) / R) for a mean of n draws.
        var_n = var1 / n
        mu4_n = (mu4 - 3 * var1**2) / n**3 + 3 * var_n**2
        se_var = math.sqrt(float(mu4_n - var_n**2) / R)
        assert abs(float(est.var()) - float(var_n)) < 4 * se_var
        if n > 1:
            # stderr^2 = s^2 / n with s^2 the sample variance of the n probe integrals: unbiased for
            # var1 / n, and Var(s^2) = mu4 / n - var1^2 (n - 3) / (n (n - 1)); averaged over R samples.
            var_s2 = mu4 / n - var1**2 * (n - 3) / (n * (n - 1))
            se_stderr2 = math.sqrt(float(var_s2) / R) / n
            assert abs(float((res.stderr**2).mean()) - float(var_n)) < 4 * se_stderr2
        else:
            assert torch.isnan(res.stderr).all()
        assert torch.allclose(res.log_prob, res.prior_log_prob + est)


def test_hutchinson_same_seed_same_bits():
    sde = scoresde.VPSDE()
    _, _, _, data = full_gaussian(3)
    x = data.sample(3, torch.Generator().manual_seed(0))
    runs = [
        log_likelihood(sde, data.score_fn(sde), x, trace="hutchinson", probe="gaussian", n_probes=2,
                       generator=torch.Generator().manual_seed(11))
        for _ in range(2)
    ]
    assert torch.equal(runs[0].log_prob, runs[1].log_prob)


# --------------------------------------------------------------------------- mixture vs an independent reference
def _np_schedule(name, t):
    """(phi, g^2, scale, std^2) of the SDE at time t, written out independently in numpy."""
    if name == "vp":
        b0, b1 = 0.1, 20.0
        beta, B = b0 + t * (b1 - b0), b0 * t + 0.5 * (b1 - b0) * t * t
        return -0.5 * beta, beta, math.exp(-0.5 * B), -math.expm1(-B)
    smin, smax = 0.01, 50.0
    sigma = smin * (smax / smin) ** t
    return 0.0, sigma**2 * 2 * math.log(smax / smin), 1.0, sigma**2 - smin**2


def _np_mixture_log_prob(name, w, mu, sd, x0, eps, prior_std):
    """log p_eps(x0) by integrating [x, delta] with scipy DOP853 at rtol = atol = 1e-12.

    Score and divergence in closed form: with responsibilities r_k and component scores
    s_k = -(x - a mu_k) / v_k, score = sum_k r_k s_k and
    div score = sum_k r_k (sum_i -1/v_ki + |s_k|^2) - |score|^2.
    """
    D = x0.shape[0]

    def rhs(t, y):
        x = y[:D]
        phi, g2, a, s2 = _np_schedule(name, t)
        var = a * a * sd**2 + s2  # [K, D]
        diff = x[None] - a * mu
        logc = np.log(w) - 0.5 * (diff**2 / var + np.log(2 * np.pi * var)).sum(1)
        r = np.exp(logc - logc.max())
        r /= r.sum()
        sk = -diff / var
        score = (r[:, None] * sk).sum(0)
        div_score = (r * ((-1.0 / var).sum(1) + (sk**2).sum(1))).sum() - (score**2).sum()
        v = phi * x - 0.5 * g2 * score
        return np.concatenate([v, [phi * D - 0.5 * g2 * div_score]])

    sol = solve_ivp(rhs, (eps, 1.0), np.concatenate([x0, [0.0]]), method="DOP853", rtol=1e-12, atol=1e-12)
    assert sol.success
    z, delta = sol.y[:D, -1], sol.y[D, -1]
    prior = -0.5 * D * math.log(2 * math.pi * prior_std**2) - 0.5 * (z**2).sum() / prior_std**2
    return prior + delta


@pytest.mark.parametrize("name", ["vp", "ve"])
def test_gaussian_mixture_against_independent_reference(name):
    sde = SDES[name]()
    w = np.array([0.5, 0.3, 0.2])
    mu = np.array([[-1.0, 0.5], [1.0, 1.0], [0.3, -1.2]])
    sd = np.array([[0.3, 0.2], [0.25, 0.4], [0.2, 0.2]])
    mix = GaussianMixture(torch.tensor(w), torch.tensor(mu), torch.tensor(sd))
    x = mix.sample(3, torch.Generator().manual_seed(8))
    res = log_likelihood(sde, mix.score_fn(sde), x, rtol=TIGHT, atol=TIGHT)
    ref = [_np_mixture_log_prob(name, w, mu, sd, xi.numpy(), EPS, sde.prior_std) for xi in x]
    assert np.allclose(res.log_prob.numpy(), ref, rtol=0, atol=1e-4), res.log_prob.numpy() - ref


# --------------------------------------------------------------------------- other paths
def test_fixed_step_and_low_precision_score():
    sde = scoresde.VPSDE()
    mean, std, data = diag_gaussian((4,), seed=9)
    x = data.sample(3, torch.Generator().manual_seed(10))
    ref, _ = linear_flow(sde, mean, std**2, None)[0](x)
    res = log_likelihood(sde, data.score_fn(sde), x, method="rk4", steps=100)
    assert res.nfe == 400 and (res.log_prob - ref).abs().max() < 1e-3

    seen = []
    bf = GaussianMixture([1.0], mean.unsqueeze(0).bfloat16(), std.unsqueeze(0).bfloat16()).score_fn(sde)

    def score_bf16(x, t):
        seen.append((x.dtype, t.dtype))
        return bf(x, t)

    res = log_likelihood(sde, score_bf16, x.float(), score_dtype=torch.bfloat16, method="rk4", steps=50)
    assert set(seen) == {(torch.bfloat16, torch.bfloat16)}
    assert res.log_prob.dtype == torch.float32 and res.z.dtype == torch.float32
    # bfloat16 keeps 8 mantissa bits (relative error 2^-9 per entry); |log p| ~ 5 here.
    assert (res.log_prob.double() - ref).abs().max() < 0.1


# --------------------------------------------------------------------------- bits per dimension
@pytest.mark.parametrize("levels,data_range", [(256, (-1.0, 1.0)), (17, (0.0, 1.0))])
def test_bits_per_dim_matches_hand_computation(levels, data_range):
    """Gaussian model: E_u[log p(x(u))] in closed form, since log p is quadratic in x = lo + d (k + u)."""
    sde = scoresde.VPSDE()
    lo, hi = data_range
    event = (1, 4, 4)
    mean0, std0, _ = diag_gaussian(event, seed=12)
    # model spreads of 1/8 to 1/4 of the range
    mean, std = lo + (hi - lo) * (0.5 + 0.1 * mean0), (hi - lo) * (0.1 + 0.25 * std0)
    data = GaussianMixture([1.0], mean.unsqueeze(0), std.unsqueeze(0))
    g = torch.Generator().manual_seed(13)
    k = ((data.sample(5, g) - lo) / (hi - lo) * levels).floor().clamp(0, levels - 1).to(torch.uint8)
    R = 2
    res = bits_per_dim(sde, data.score_fn(sde), k, levels=levels, data_range=data_range, repeats=R,
                       generator=g, dtype=F64, rtol=TIGHT, atol=TIGHT)

    # Hand computation. The model is Gaussian per coordinate (module docstring):
    # log p(x) = sum_i [-1/2 log(2 pi P^2) + log r_i - (a_T m_i + r_i (x_i - a_eps m_i))^2 / (2 P^2)].
    D, d, P2 = 16, (hi - lo) / levels, sde.prior_std**2
    a_e, s_e = _coeffs(sde, EPS)
    a_T, s_T = _coeffs(sde, 1.0)
    r = torch.sqrt((a_T**2 * std**2 + s_T**2) / (a_e**2 * std**2 + s_e**2))
    c = a_T * mean + r * (lo + d * k.double() - a_e * mean)  # value of the square's base at u = 0
    b = r * d  # its slope in u
    Ew = c**2 + c * b + b**2 / 3  # E (c + b u)^2, u ~ U[0, 1)
    Ew2 = ((c + b) ** 5 - c**5) / (5 * b)  # E (c + b u)^4
    E_logp = (-0.5 * math.log(2 * math.pi * P2) + torch.log(r) - Ew / (2 * P2)).reshape(5, -1).sum(1)
    hand = -(E_logp + D * math.log(d)) / (D * math.log(2))
    var_logp = ((Ew2 - Ew**2) / (4 * P2**2)).reshape(5, -1).sum(1)  # one draw's variance of log p
    se = torch.sqrt(var_logp / R) / (D * math.log(2))
    assert res.bits_per_dim.shape == (5,) and res.per_repeat.shape == (R, 5)
    assert ((res.bits_per_dim - hand).abs() < 4 * se + 1e-6).all(), (res.bits_per_dim - hand, se)
    assert res.nfe > 0 and math.isclose(res.mean, float(res.bits_per_dim.mean()))
    assert torch.isfinite(res.stderr).all()


def test_bits_per_dim_8bit_offset_is_seven_bits():
    """N(0, I) data is a fixed point of the VP flow (score -x): bpd = E_u[-log N(x; 0, I)] / (D ln 2) + 7."""
    sde = scoresde.VPSDE()
    k = torch.randint(0, 256, (4, 3), generator=torch.Generator().manual_seed(0))

    def score(x, t):
        return -x

    R = 2
    res = bits_per_dim(sde, score, k, repeats=R, generator=torch.Generator().manual_seed(1), dtype=F64)
    c, b = -1 + 2 * k.double() / 256, 2 / 256  # x = c + b u
    Ex2 = c**2 + c * b + b**2 / 3
    Ex4 = ((c + b) ** 5 - c**5) / (5 * b)
    nll = (0.5 * Ex2 + 0.5 * math.log(2 * math.pi)).sum(1)
    se = torch.sqrt((0.25 * (Ex4 - Ex2**2)).sum(1) / R) / (3 * math.log(2))
    assert ((res.bits_per_dim - (nll / (3 * math.log(2)) + 7)).abs() < 4 * se + 1e-6).all()
    single = bits_per_dim(sde, score, k, generator=torch.Generator().manual_seed(1), dtype=F64)
    assert torch.isnan(single.stderr).all() and single.per_repeat.shape == (1, 4)


# --------------------------------------------------------------------------- errors
def test_integration_failures_raise():
    sde = scoresde.VPSDE()
    _, _, _, data = full_gaussian(3)
    x = data.sample(2, torch.Generator().manual_seed(0))
    with pytest.raises(IntegrationError, match="max_steps=2"):
        log_likelihood(sde, data.score_fn(sde), x, max_steps=2)
    with pytest.raises(IntegrationError, match="underflow"):
        log_likelihood(sde, data.score_fn(sde), x, rtol=1e-300, atol=1e-300)

    def nan_late(x, t):
        return torch.where((t > 0.5).reshape(-1, 1), torch.full_like(x, float("nan")), -x)

    with pytest.raises(NonFiniteError, match="non-finite"):
        log_likelihood(sde, nan_late, x)
    with pytest.raises(NonFiniteError):
        log_likelihood(sde, nan_late, x, method="euler", steps=10)


def test_bad_inputs_raise_clear_errors():
    sde = scoresde.VPSDE()

    def score(x, t):
        return -x

    x = torch.zeros(2, 3)
    bad_calls = [
        (ShapeError, dict(x=torch.zeros(3))),
        (DataError, dict(x=torch.zeros(2, 3, dtype=torch.long))),
        (DataError, dict(x=torch.zeros(2, 3, dtype=torch.float16))),
        (DataError, dict(x=torch.tensor([[0.0, float("nan")]]))),
        (TimeRangeError, dict(eps=0.0)),
        (TimeRangeError, dict(eps=1.0)),
        (ValueError, dict(method="rk45")),
        (ValueError, dict(trace="skilling")),
        (ValueError, dict(probe="uniform", trace="hutchinson")),
        (ValueError, dict(trace="hutchinson", n_probes=0)),
        (ValueError, dict(n_probes=2)),
        (ValueError, dict(rtol=0.0)),
        (ValueError, dict(steps=10)),
        (ValueError, dict(chunk_size=0)),
        (ValueError, dict(score_dtype=torch.int32)),
    ]
    for err, kw in bad_calls:
        args = {"x": x, **kw}
        with pytest.raises(err):
            log_likelihood(sde, score, args.pop("x"), **args)
    with pytest.raises(ShapeError, match="shaped like x"):
        log_likelihood(sde, lambda x, t: x[:, :1], x)

    k = torch.zeros(2, 3, dtype=torch.long)
    bad_bpd = [
        (DataError, dict(x_int=torch.zeros(2, 3))),
        (DataError, dict(x_int=torch.zeros(2, 3, dtype=torch.bool))),
        (DataError, dict(x_int=torch.full((2, 3), 256))),
        (DataError, dict(x_int=torch.full((2, 3), -1))),
        (DataError, dict(x_int=torch.full((2, 3), 17), levels=17)),
        (ShapeError, dict(x_int=torch.zeros(3, dtype=torch.long))),
        (ValueError, dict(levels=1)),
        (ValueError, dict(levels=2.5)),
        (ValueError, dict(data_range=(1.0, -1.0))),
        (ValueError, dict(data_range=(0.0, math.inf))),
        (ValueError, dict(data_range=(0.0,))),
        (ValueError, dict(repeats=0)),
    ]
    for err, kw in bad_bpd:
        args = {"x_int": k, **kw}
        with pytest.raises(err):
            bits_per_dim(sde, score, args.pop("x_int"), **args)
