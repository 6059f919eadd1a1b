"""Every solver, fed the exact score, against closed-form answers.

Tolerances are statistical: a sample moment must lie within Z standard errors of its exact value,
with the standard errors computed from the sample size and the true distribution. The solver
settings are chosen so that the discretisation bias is below one standard error.
"""

import math

import pytest
import torch

import scoresde
from scoresde import SDE, SOLVERS, VESDE, VPSDE, SubVPSDE
from scoresde.exact import Gaussian, GaussianMixture

Z = 5.0  # standard errors allowed (fixed seeds; ~1e-6 false-alarm rate per statistic)

MEAN = torch.tensor([0.5, -0.3, 0.2])
_A = torch.tensor([[0.6, 0.0, 0.0], [0.3, 0.4, 0.0], [-0.2, 0.1, 0.3]])
COV = _A @ _A.T
GAUSS = Gaussian(MEAN, COV)

SDES = {"vp": VPSDE(), "subvp": SubVPSDE(), "ve": VESDE()}

#: (solver, options) pairs under test; each reaches the data distribution to well within the tolerance.
CONFIGS = {
    "euler_maruyama": ("euler_maruyama", dict(steps=400)),
    "reverse_diffusion": ("reverse_diffusion", dict(steps=400)),
    "ancestral": ("ancestral", dict(steps=400)),
    "langevin": ("langevin", dict(steps=400, corrector_steps=2, snr=0.16)),
    "pc": ("pc", dict(steps=200)),
    "pc_em_ancestral": ("pc", dict(steps=200, predictor="euler_maruyama")),
    "ode_dopri5": ("ode", dict()),
    "ode_rk4": ("ode", dict(method="rk4", steps=40)),
    "ode_heun": ("ode", dict(method="heun", steps=100)),
    "ddim": ("ddim", dict(steps=150)),
    "torchsde_euler": ("torchsde", dict(steps=400)),
    "torchsde_srk": ("torchsde", dict(steps=100, method="srk")),
}


def exact_prior_draw(data, sde: SDE, n: int, g: torch.Generator) -> torch.Tensor:
    """Draw from the exact marginal p_T (so the test checks the solver, not the prior mismatch)."""
    mT, cT = data.marginal(sde, torch.ones(1))
    return mT + torch.randn(n, data.dim, generator=g) @ torch.linalg.cholesky(cT[0]).T


def assert_gaussian_moments(x: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor, z: float = Z) -> None:
    """Sample mean and covariance within ``z`` standard errors of the exact values."""
    n = x.shape[0]
    var = torch.diag(cov)
    z_mean = (x.mean(0) - mean) / torch.sqrt(var / n)
    se_cov = torch.sqrt((var[:, None] * var[None, :] + cov**2) / n)  # Var of a Gaussian sample covariance
    z_cov = (torch.cov(x.T) - cov) / se_cov
    assert z_mean.abs().max() < z, f"mean off by {z_mean.tolist()} standard errors"
    assert z_cov.abs().max() < z, f"covariance off by {z_cov.tolist()} standard errors"


@pytest.mark.parametrize("sde_name", list(SDES))
@pytest.mark.parametrize("config", list(CONFIGS))
def test_solver_reproduces_gaussian(config, sde_name):
    sde = SDES[sde_name]
    solver, opts = CONFIGS[config]
    g = torch.Generator().manual_seed(1)
    n = 2000
    res = scoresde.solve(sde, GAUSS.score_fn(sde), (n, 3), solver=solver, generator=g,
                         x_init=exact_prior_draw(GAUSS, sde, n, g), **opts)
    assert res.samples.shape == (n, 3) and torch.isfinite(res.samples).all()
    assert_gaussian_moments(res.samples, MEAN, COV)


@pytest.mark.parametrize("sde_name", ["vp", "ve"])
def test_annealed_langevin_reaches_its_last_level(sde_name):
    """NCSN's chain at the last level t_L = eps has the invariant law of unadjusted Langevin.

    For a Gaussian target N(mu, S) and step alpha, x <- x + alpha/2 score + sqrt(alpha) z keeps
    N(mu, S (I - alpha S^{-1} / 4)^{-1}) invariant. A large eps keeps the last level's noise
    comparable to the data scale, so that the chain mixes there within the steps given.
    """
    sde = SDES[sde_name]
    eps = 0.1 if sde_name == "vp" else 0.5
    ratio = 0.1
    g = torch.Generator().manual_seed(2)
    n = 2000
    x = scoresde.sample(sde, GAUSS.score_fn(sde), (n, 3), solver="annealed_langevin", steps=5,
                        steps_per_level=300, step_ratio=ratio, eps=eps, denoise=False, generator=g)
    t = torch.full((1,), eps)
    mean, cov = GAUSS.marginal(sde, t)
    alpha = ratio * float(sde.marginal_coeffs(t)[1]) ** 2
    invariant = cov[0] @ torch.linalg.inv(torch.eye(3) - alpha / 4 * torch.linalg.inv(cov[0]))
    assert_gaussian_moments(x, mean[0], invariant)


@pytest.mark.parametrize("sde_name,t", [("vp", 0.3), ("subvp", 0.5), ("ve", 0.6)])
def test_langevin_corrector_targets_marginal(sde_name, t):
    """Corrector steps alone, at a fixed t, move any start to p_t.

    At these times the noise dominates the data (a well-conditioned target), so 1000 steps mix;
    at snr = 0.1 the step is ~0.02 of the target's variance and the Langevin bias ~0.5%.
    """
    from scoresde.noise import GeneratorNoise
    from scoresde.solvers.base import CountedScore, SolveContext
    from scoresde.solvers.langevin import langevin_correct

    sde = SDES[sde_name]
    n = 2000
    tt = torch.full((n,), t)
    g = torch.Generator().manual_seed(3)
    ctx = SolveContext(sde, CountedScore(GAUSS.score_fn(sde)), GeneratorNoise(g))
    x = torch.randn(n, 3, generator=g) * sde.marginal_coeffs(tt[:1])[1] + 1.0
    x = langevin_correct(ctx, x, tt, torch.ones(n), snr=0.1, n_steps=1000)
    assert ctx.score.nfe == 1000
    mean, cov = GAUSS.marginal(sde, tt[:1])
    assert_gaussian_moments(x, mean[0], cov[0])


MIXTURE = GaussianMixture([0.25, 0.75], torch.tensor([[-1.5, 0.5], [1.0, -0.5]]), torch.tensor([0.3, 0.4]))


@pytest.mark.parametrize("config", ["euler_maruyama", "ancestral", "pc", "ode_dopri5", "ddim", "torchsde_euler"])
@pytest.mark.parametrize("sde_name", ["vp", "ve"])
def test_solver_reproduces_mixture_weights(config, sde_name):
    """Mixture weights: the share of samples assigned to each component (binomial standard error)."""
    sde = SDES[sde_name]
    solver, opts = CONFIGS[config]
    n = 2000
    x = scoresde.sample(sde, MIXTURE.score_fn(sde), (n, 2), solver=solver,
                        generator=torch.Generator().manual_seed(4), **opts)
    share = MIXTURE.responsibilities(x).argmax(1).eq(0).double().mean()
    w = float(MIXTURE.weights[0])
    assert abs(float(share) - w) < Z * math.sqrt(w * (1 - w) / n), f"share {float(share):.3f} vs weight {w}"
    # each component's own mean is right too
    k = MIXTURE.responsibilities(x).argmax(1)
    for j in range(2):
        xs = x[k == j]
        se = MIXTURE.stds[j] / math.sqrt(xs.shape[0])
        assert ((xs.mean(0) - MIXTURE.means[j]).abs() < Z * se).all()


def slope(steps, errors):
    """Least-squares slope of log(error) against log(step size)."""
    h = torch.log(1.0 / torch.tensor(steps, dtype=torch.float64))
    e = torch.log(torch.tensor(errors, dtype=torch.float64))
    hc = h - h.mean()
    return float((hc * (e - e.mean())).sum() / (hc * hc).sum())


def _gauss1d_score(sde, m, s):
    def score(x, t):
        scale, std = sde.marginal_coeffs(t)
        scale, std = scale[:, None], std[:, None]
        return -(x - scale * m) / (scale**2 * s**2 + std**2)

    return score


@pytest.mark.parametrize("solver,opts", [("euler_maruyama", {}), ("torchsde", {}), ("reverse_diffusion", {})])
@pytest.mark.parametrize("sde_name", ["vp", "subvp"])
def test_weak_order_one(solver, opts, sde_name):
    """Weak error of E[x] for N(m, s^2) data halves with the step (declared order 1).

    A large data mean makes the deterministic weak error dominate the Monte-Carlo error
    (standard error s / sqrt(B D) ~ 1e-3, errors 5e-2 .. 5e-1).
    """
    torch.set_default_dtype(torch.float64)
    try:
        sde = SDES[sde_name]
        m, s, eps = 20.0, 0.3, 1e-3
        scale_T, std_T = sde.marginal_coeffs(torch.ones(1))
        g = torch.Generator().manual_seed(5)
        x_T = scale_T * m + torch.sqrt(scale_T**2 * s**2 + std_T**2) * torch.randn(10000, 10, generator=g)
        true_mean = float(sde.marginal_coeffs(torch.tensor([eps]))[0]) * m
        steps = [16, 32, 64, 128]
        errors = []
        for n in steps:
            x = scoresde.sample(sde, _gauss1d_score(sde, m, s), x_T.shape, solver=solver, steps=n, eps=eps,
                                x_init=x_T, denoise=False, generator=torch.Generator().manual_seed(6), **opts)
            errors.append(abs(float(x.mean()) - true_mean))
        assert min(errors) > 20 * s / math.sqrt(x_T.numel())  # the bias is resolved above the noise
        assert SOLVERS[solver](**opts).order == 1.0
        assert abs(slope(steps, errors) - 1.0) < 0.2, errors
    finally:
        torch.set_default_dtype(torch.float32)


@pytest.mark.parametrize("method,order", [("euler", 1), ("midpoint", 2), ("heun", 2), ("rk4", 4), ("ddim", 1)])
@pytest.mark.parametrize("sde_name", ["vp", "ve"])
def test_deterministic_convergence_order(method, order, sde_name):
    """Pathwise error of the probability-flow ODE against its closed-form flow map for Gaussian data:
    x_eps = scale_eps m + sqrt(C_eps / C_T) (x_T - scale_T m) with C_t = scale_t^2 s^2 + std_t^2."""
    sde = VPSDE() if sde_name == "vp" else VESDE(sigma_max=10.0)
    m, s, eps = 0.5, 0.3, 1e-2
    x_T = torch.linspace(-2, 2, 7, dtype=torch.float64)[:, None] * 3.0

    def moments(t):
        scale, std = sde.marginal_coeffs(torch.tensor([t], dtype=torch.float64))
        return scale, scale**2 * s**2 + std**2

    (scale_T, C_T), (scale_e, C_e) = moments(1.0), moments(eps)
    exact = scale_e * m + torch.sqrt(C_e / C_T) * (x_T - scale_T * m)
    steps = [16, 32, 64, 128]
    errors = []
    for n in steps:
        kw = dict(solver="ddim") if method == "ddim" else dict(solver="ode", method=method)
        solver = scoresde.SOLVERS[kw.pop("solver")](**kw)
        assert solver.order == order and not solver.stochastic
        x = scoresde.sample(sde, _gauss1d_score(sde, m, s), x_T.shape, solver=solver, steps=n, eps=eps,
                            x_init=x_T, denoise=False)
        errors.append(float((x - exact).abs().max()))
    assert abs(slope(steps[1:], errors[1:]) - order) < 0.3, errors


def test_adaptive_ode_meets_tolerance():
    sde = VPSDE()
    m, s = 0.5, 0.3
    x_T = torch.linspace(-2, 2, 9, dtype=torch.float64)[:, None]
    scale_T, std_T = sde.marginal_coeffs(torch.ones(1, dtype=torch.float64))
    scale_e, std_e = sde.marginal_coeffs(torch.full((1,), 1e-3, dtype=torch.float64))
    C_T, C_e = scale_T**2 * s**2 + std_T**2, scale_e**2 * s**2 + std_e**2
    exact = scale_e * m + torch.sqrt(C_e / C_T) * (x_T - scale_T * m)
    errs = []
    for tol in [1e-4, 1e-7, 1e-10]:
        x = scoresde.sample(sde, _gauss1d_score(sde, m, s), x_T.shape, solver="ode", rtol=tol, atol=tol,
                            x_init=x_T, denoise=False)
        errs.append(float((x - exact).abs().max()))
    assert errs[2] < 1e-8 and errs[0] > errs[2]


# ----------------------------------------------------------------------------- equivalences

def test_pc_without_corrector_is_its_predictor():
    sde, score = VPSDE(), GAUSS.score_fn(VPSDE())
    for pred in ["euler_maruyama", "reverse_diffusion", "ancestral", "ddim"]:
        a = scoresde.sample(sde, score, (50, 3), solver="pc", predictor=pred, corrector="none", steps=20,
                            generator=torch.Generator().manual_seed(7))
        b = scoresde.sample(sde, score, (50, 3), solver=pred, steps=20, generator=torch.Generator().manual_seed(7))
        assert torch.equal(a, b), pred


@pytest.mark.parametrize("sde_name", list(SDES))
def test_ddim_with_eta_one_is_ancestral(sde_name):
    sde = SDES[sde_name]
    score = GAUSS.score_fn(sde)
    kw = dict(steps=30, dtype=torch.float64)
    a = scoresde.sample(sde, score, (40, 3), solver="ddim", eta=1.0, generator=torch.Generator().manual_seed(8), **kw)
    b = scoresde.sample(sde, score, (40, 3), solver="ancestral", generator=torch.Generator().manual_seed(8), **kw)
    torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def test_ancestral_and_reverse_diffusion_agree_at_small_steps():
    """Both discretise the same reverse SDE: with the same noise their paths converge as steps grow."""
    sde = VPSDE()
    score = GAUSS.score_fn(sde)
    diffs = []
    for n in [50, 200, 800]:
        kw = dict(steps=n, dtype=torch.float64)
        a = scoresde.sample(sde, score, (200, 3), solver="ancestral", generator=torch.Generator().manual_seed(9), **kw)
        b = scoresde.sample(sde, score, (200, 3), solver="reverse_diffusion",
                            generator=torch.Generator().manual_seed(9), **kw)
        diffs.append(float((a - b).abs().max()))
    assert diffs[0] > diffs[1] > diffs[2] and diffs[2] < 0.2 * diffs[0]


# ----------------------------------------------------------------------------- bookkeeping

@pytest.mark.parametrize("name", list(SOLVERS))
def test_same_seed_same_samples(name):
    sde = VPSDE()
    score = GAUSS.score_fn(sde)
    opts = dict(steps=5) if not scoresde.solvers.make_solver(name).adaptive else {}
    a = scoresde.sample(sde, score, (16, 3), solver=name, generator=torch.Generator().manual_seed(10), **opts)
    b = scoresde.sample(sde, score, (16, 3), solver=name, generator=torch.Generator().manual_seed(10), **opts)
    c = scoresde.sample(sde, score, (16, 3), solver=name, generator=torch.Generator().manual_seed(11), **opts)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("name", list(SOLVERS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtypes_and_image_shapes(name, dtype):
    """Isotropic N(m, s^2) data on [B, 1, 4, 4] images: the pooled pixel moments are right."""
    sde = VESDE(sigma_max=10.0)
    m, s = 0.3, 0.5
    score = _gauss1d_score_img(sde, m, s)
    n = 400
    steps = {"annealed_langevin": 10, "ode": None, "ddim": 100}.get(name, 200)  # the adaptive ODE picks its own
    opts = {"annealed_langevin": dict(steps_per_level=30), "langevin": dict(corrector_steps=3)}.get(name, {})
    x = scoresde.sample(sde, score, (n, 1, 4, 4), solver=name, steps=steps, dtype=dtype,
                        generator=torch.Generator().manual_seed(12), **opts)
    assert x.shape == (n, 1, 4, 4) and x.dtype == dtype
    N = x.numel()
    assert abs(float(x.mean()) - m) < Z * s / math.sqrt(N)
    if name != "annealed_langevin":  # NCSN's variance bias at its default steps is larger than this check's SE
        assert abs(float(x.var()) / s**2 - 1) < Z * math.sqrt(2 / N) + 0.02


def _gauss1d_score_img(sde, m, s):
    from scoresde._utils import append_dims

    def score(x, t):
        scale, std = sde.marginal_coeffs(t)
        scale, std = append_dims(scale, x.ndim), append_dims(std, x.ndim)
        return -(x - scale * m) / (scale**2 * s**2 + std**2)

    return score


@pytest.mark.parametrize("name,expected", [
    ("euler_maruyama", lambda n: n + 1),
    ("reverse_diffusion", lambda n: n + 1),
    ("ancestral", lambda n: n + 1),
    ("ddim", lambda n: n + 1),
    ("pc", lambda n: 2 * n + 1),
    ("langevin", lambda n: n + 1),
    ("torchsde", lambda n: n + 2),  # torchsde evaluates the drift once more to check its shape
])
def test_nfe_counts(name, expected):
    calls = []

    def score(x, t):
        calls.append(1)
        return -x

    solver = SOLVERS[name]()
    res = scoresde.solve(VPSDE(), score, (4, 2), solver=solver, steps=10)
    assert res.nfe == len(calls) == expected(10)


def test_nfe_counts_ode_and_annealed():
    calls = []

    def score(x, t):
        calls.append(1)
        return -x

    res = scoresde.solve(VPSDE(), score, (4, 2), solver="annealed_langevin", steps=3, steps_per_level=7)
    assert res.nfe == len(calls) == 3 * 7 + 1
    calls.clear()
    res = scoresde.solve(VPSDE(), score, (4, 2), solver="ode", method="rk4", steps=10, denoise=False)
    assert res.nfe == len(calls) == 40
    calls.clear()
    res = scoresde.solve(VPSDE(), score, (4, 2), solver="ode")
    assert res.nfe == len(calls) > 0


@pytest.mark.parametrize("name", list(SOLVERS))
def test_trajectory_and_callback(name):
    seen = []
    res = scoresde.solve(VPSDE(), lambda x, t: -x, (4, 2), solver=name, steps=6, record_trajectory=True,
                         callback=lambda i, t, x: seen.append((i, float(t))), denoise=False)
    L = res.times.shape[0]
    assert res.trajectory.shape == (L, 4, 2)
    assert torch.equal(res.trajectory[-1], res.samples)
    assert float(res.times[0]) == 1.0 and abs(float(res.times[-1]) - 1e-3) < 1e-7
    assert [i for i, _ in seen] == list(range(L - 1))


def test_every_solver_declares_itself():
    for name, cls in SOLVERS.items():
        s = cls()
        assert s.name == name
        assert isinstance(s.stochastic, bool) and s.order >= 1
        assert s.default_steps >= 1 and 0 < s.default_eps < 1
    assert not SOLVERS["ode"]().stochastic and not SOLVERS["ddim"]().stochastic
    assert SOLVERS["ddim"](eta=0.5).stochastic


# ----------------------------------------------------------------------------- user-defined SDEs

class ConstantRateOU(SDE):
    """dx = -b x / 2 dt + sqrt(b) dw with constant b: a user SDE with its own closed-form kernel."""

    def __init__(self, b: float = 3.0):
        self.b = b

    def drift(self, x, t):
        return -0.5 * self.b * x

    def diffusion(self, t):
        return torch.full_like(t, math.sqrt(self.b))

    def marginal_coeffs(self, t):
        return torch.exp(-0.5 * self.b * t), torch.sqrt(-torch.expm1(-self.b * t))

    @property
    def prior_std(self):
        return 1.0


class NoKernelVP(VPSDE):
    """VP dynamics without a declared kernel: only drift and diffusion are known to the solvers."""

    marginal_coeffs = SDE.marginal_coeffs


@pytest.mark.parametrize("config", ["euler_maruyama", "ancestral", "pc", "ode_dopri5", "ddim", "torchsde_euler"])
def test_user_defined_sde_plugs_into_every_solver(config):
    sde = ConstantRateOU()
    solver, opts = CONFIGS[config]
    g = torch.Generator().manual_seed(13)
    n = 2000
    x = scoresde.sample(sde, GAUSS.score_fn(sde), (n, 3), solver=solver, generator=g,
                        x_init=exact_prior_draw(GAUSS, sde, n, g), **opts)
    assert_gaussian_moments(x, MEAN, COV)
    # the generic two-time kernel of the base class is consistent with the marginals
    a, v = sde.transition_coeffs(torch.tensor([0.2]), torch.tensor([0.7]))
    torch.testing.assert_close(a, torch.exp(torch.tensor([-0.5 * 3.0 * 0.5])))


def test_sde_without_kernel_serves_kernel_free_solvers_and_refuses_others():
    sde, ref = NoKernelVP(), VPSDE()
    assert not sde.has_kernel and ref.has_kernel
    score = GAUSS.score_fn(ref)
    g = torch.Generator().manual_seed(14)
    for solver, opts in [("euler_maruyama", dict(steps=400)), ("ode", {}), ("torchsde", dict(steps=400))]:
        x = scoresde.sample(sde, score, (2000, 3), solver=solver, generator=g,
                            x_init=exact_prior_draw(GAUSS, ref, 2000, g), **opts)
        # no Tweedie step without a kernel: the output is p_eps, which at eps = 1e-3 is within the SE of p_0
        assert_gaussian_moments(x, MEAN, COV)
    for solver in ["ancestral", "reverse_diffusion", "ddim", "annealed_langevin"]:
        with pytest.raises(scoresde.IncompatibleSDEError, match="closed-form Gaussian kernel"):
            scoresde.sample(sde, score, (4, 3), solver=solver)
    with pytest.raises(scoresde.IncompatibleSDEError, match="pc predictor"):
        scoresde.sample(sde, score, (4, 3), solver="pc", predictor="ancestral")
    with pytest.raises(scoresde.IncompatibleSDEError, match="denoise"):
        scoresde.sample(sde, score, (4, 3), solver="euler_maruyama", denoise=True)


def test_custom_solver_class_plugs_in():
    class Heun(scoresde.StepSolver):
        """Heun's method on the probability-flow ODE, written as a user would."""

        name = "my_heun"
        stochastic = False
        order = 2.0

        def step(self, ctx, x, t, t_next, state):
            flow = ctx.sde.probability_flow(ctx.score)
            dt = (t_next - t)[:, None]
            d1 = flow.drift(x, t)
            d2 = flow.drift(x + dt * d1, t_next)
            return x + 0.5 * dt * (d1 + d2), state

    sde = VPSDE()
    a = scoresde.sample(sde, GAUSS.score_fn(sde), (8, 3), solver=Heun(), steps=20, x_init=torch.ones(8, 3))
    b = scoresde.sample(sde, GAUSS.score_fn(sde), (8, 3), solver="ode", method="heun", steps=20,
                        x_init=torch.ones(8, 3))
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", list(SOLVERS))
def test_cuda_sampling(name):
    sde = VPSDE()
    score = _gauss1d_score_img(sde, 0.3, 0.5)
    g = torch.Generator(device="cuda").manual_seed(0)
    x = scoresde.sample(sde, score, (256, 1, 4, 4), solver=name, steps=50, device="cuda", generator=g)
    assert x.device.type == "cuda" and torch.isfinite(x).all()
    assert abs(float(x.mean()) - 0.3) < 0.05
