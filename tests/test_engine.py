"""The sampling engine: time grids as data, per-solve state, wrappers, and the driver's input checks."""

import math

import numpy as np
import pytest
import torch

import scoresde
from scoresde import GRIDS, SOLVERS, VESDE, VPSDE, SubVPSDE
from scoresde.errors import IncompatibleSDEError, IntegrationError, ShapeError, TimeRangeError
from scoresde.exact import Gaussian
from scoresde.sde.base import SDE
from scoresde.solvers import Karras, StepSolver, WrapperSolver

SDES = {"vp": VPSDE(), "subvp": SubVPSDE(), "ve": VESDE()}
GAUSS = Gaussian(torch.tensor([0.5, -0.3], dtype=torch.float64),
                 torch.tensor([[0.4, 0.1], [0.1, 0.3]], dtype=torch.float64))


class NoKernel(SDE):
    """A VP-like SDE that gives only drift and diffusion."""

    prior_std = 1.0

    def drift(self, x, t):
        return -0.5 * scoresde.append_dims(0.1 + 19.9 * t, x.ndim) * x

    def diffusion(self, t):
        return (0.1 + 19.9 * t).sqrt()


def std_normal_score(x, t):
    return -x


# ---------------------------------------------------------------------------- kernel inverses
@pytest.mark.parametrize("name", list(SDES))
def test_closed_form_inverse_of_noise_to_signal_matches_bisection(name):
    sde = SDES[name]
    t = torch.linspace(1e-5, 1.0, 101, dtype=torch.float64)
    r = sde.noise_to_signal(t)
    torch.testing.assert_close(sde.time_at_noise_to_signal(r), t, rtol=0, atol=1e-12)
    torch.testing.assert_close(SDE.time_at_noise_to_signal(sde, r), t, rtol=0, atol=1e-12)  # the generic bisection
    torch.testing.assert_close(sde.time_at_log_snr(sde.log_snr(t)), t, rtol=0, atol=1e-12)


# ---------------------------------------------------------------------------- grids
@pytest.mark.parametrize("grid", list(GRIDS))
@pytest.mark.parametrize("name", list(SDES))
def test_every_grid_runs_from_T_to_eps_strictly_decreasing(grid, name):
    sde = SDES[name]
    times = GRIDS[grid]()(sde, 12, 1e-3)
    assert times.shape == (13,) and times.dtype == torch.float64
    assert float(times[0]) == sde.T and float(times[-1]) == 1e-3
    assert bool((times.diff() < 0).all())


def test_grids_follow_their_formulas():
    sde, eps, n = VPSDE(), 1e-3, 10
    lam = sde.log_snr(GRIDS["log_snr"]()(sde, n, eps))
    torch.testing.assert_close(lam.diff(), torch.full((n,), float(lam[1] - lam[0]), dtype=torch.float64), rtol=1e-9, atol=0)
    rho = 7.0
    sig = sde.noise_to_signal(Karras(rho)(sde, n, eps)) ** (1 / rho)
    torch.testing.assert_close(sig.diff(), torch.full((n,), float(sig[1] - sig[0]), dtype=torch.float64), rtol=1e-9, atol=0)
    u = ((GRIDS["quadratic"]()(sde, n, eps) - eps) / (sde.T - eps)).sqrt()
    torch.testing.assert_close(u, torch.linspace(1, 0, n + 1, dtype=torch.float64), rtol=0, atol=1e-12)
    # VE log-SNR grid = NCSN's geometric noise ladder
    ve = VESDE()
    s = ve.noise_to_signal(GRIDS["log_snr"]()(ve, n, eps))
    ratio = s[:-1] / s[1:]
    torch.testing.assert_close(ratio, torch.full_like(ratio, float(ratio[0])), rtol=1e-9, atol=0)


@pytest.mark.parametrize("solver,opts", [
    ("euler_maruyama", {}), ("reverse_diffusion", {}), ("ancestral", {}), ("ddim", {}), ("pc", {}),
    ("langevin", {}), ("torchsde", {}), ("ode", {"method": "rk4"}), ("annealed_langevin", {"steps_per_level": 1}),
])
@pytest.mark.parametrize("grid", ["uniform", "quadratic", "log_snr", "karras"])
def test_every_fixed_step_solver_runs_on_every_grid(solver, opts, grid):
    res = scoresde.solve(VPSDE(), std_normal_score, (4, 2), solver=solver, steps=6, grid=grid,
                         generator=torch.Generator().manual_seed(0), dtype=torch.float64, **opts)
    expected = GRIDS[grid]()(VPSDE(), 6, res.times[-1].item())
    torch.testing.assert_close(res.times, expected)
    assert torch.isfinite(res.samples).all()


def test_a_tensor_grid_is_used_as_given_and_equals_the_named_grid():
    sde = VPSDE()
    g = GRIDS["karras"]()(sde, 8, 1e-3)
    kw = dict(solver="ddim", generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    a = scoresde.solve(sde, GAUSS.score_fn(sde), (16, 2), grid=g, **kw)
    kw["generator"] = torch.Generator().manual_seed(1)
    b = scoresde.solve(sde, GAUSS.score_fn(sde), (16, 2), steps=8, grid="karras", **kw)
    assert torch.equal(a.samples, b.samples) and torch.equal(a.times, b.times)


def test_torchsde_on_a_non_uniform_grid_converges_like_on_the_uniform_one():
    """torchsde runs one step per interval on any grid: on Gaussian data both grids reach p_0."""
    sde = VPSDE()
    n = 3000
    x = scoresde.sample(sde, GAUSS.score_fn(sde), (n, 2), solver="torchsde", steps=200, grid="quadratic",
                        generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    se = torch.sqrt(torch.diag(GAUSS.cov) / n)
    assert ((x.mean(0) - GAUSS.mean).abs() / se).max() < 5


@pytest.mark.parametrize("grid,match", [
    ([1.0, 0.5, 0.6, 0.001], "strictly decreasing"),
    ([1.0, 0.5, 0.0], r"\(0, T\]"),
    ([1.5, 0.5, 0.01], r"\(0, T\]"),
    ([0.9, 0.5, 0.01], "start at T"),
    ([1.0, float("nan"), 0.01], "NaN"),
])
def test_bad_grids_get_clear_errors(grid, match):
    with pytest.raises(TimeRangeError, match=match):
        scoresde.sample(VPSDE(), std_normal_score, (2, 2), solver="ddim", grid=torch.tensor(grid))


def test_grid_length_steps_and_eps_must_agree():
    g = torch.tensor([1.0, 0.5, 0.1, 0.01])
    with pytest.raises(ShapeError, match="steps \\+ 1 = 6"):
        scoresde.sample(VPSDE(), std_normal_score, (2, 2), solver="ddim", grid=g, steps=5)
    with pytest.raises(TimeRangeError, match="differs from the grid's last time"):
        scoresde.sample(VPSDE(), std_normal_score, (2, 2), solver="ddim", grid=g, eps=0.02)
    with pytest.raises(ShapeError, match="1-D"):
        scoresde.sample(VPSDE(), std_normal_score, (2, 2), solver="ddim", grid=torch.ones(2, 2))
    with pytest.raises(ValueError, match="unknown grid 'cosine'"):
        scoresde.sample(VPSDE(), std_normal_score, (2, 2), solver="ddim", grid="cosine")


def test_a_grid_may_start_below_T_with_x_init():
    sde = VPSDE()
    g = torch.tensor([0.5, 0.2, 0.01], dtype=torch.float64)
    x = scoresde.sample(sde, std_normal_score, None, solver="ddim", grid=g, x_init=torch.zeros(3, 2, dtype=torch.float64))
    assert x.shape == (3, 2)


def test_noise_level_grids_need_a_kernel():
    with pytest.raises(IncompatibleSDEError, match="grid 'log_snr'"):
        scoresde.sample(NoKernel(), std_normal_score, (2, 2), solver="euler_maruyama", grid="log_snr", steps=3)
    x = scoresde.sample(NoKernel(), std_normal_score, (2, 2), solver="euler_maruyama", grid="quadratic", steps=3)
    assert x.shape == (2, 2)


def test_adaptive_ode_refuses_steps_and_grid_unless_recording():
    with pytest.raises(ValueError, match="chooses its own steps"):
        scoresde.sample(VPSDE(), std_normal_score, (2, 2), solver="ode", steps=10)
    with pytest.raises(ValueError, match="chooses its own steps"):
        scoresde.sample(VPSDE(), std_normal_score, (2, 2), solver="ode", grid="karras")
    res = scoresde.solve(VPSDE(), std_normal_score, (2, 2), solver="ode", steps=4, record_trajectory=True)
    assert res.trajectory.shape == (5, 2, 2)


def test_adaptive_ode_has_a_finite_default_step_cap_that_names_its_option():
    assert SOLVERS["ode"]().max_steps == 10_000
    with pytest.raises(IntegrationError, match="max_steps=3"):
        scoresde.sample(VPSDE(), std_normal_score, (2, 2), solver="ode", rtol=1e-10, atol=1e-10, max_steps=3)


# ---------------------------------------------------------------------------- state and wrappers
class CountingEuler(StepSolver):
    """Probability-flow Euler whose state counts its steps (to check that state is per solve)."""

    name = "counting_euler"
    stochastic = False

    def init(self, ctx, x, grid):
        return {"steps": 0, "n": grid.shape[0] - 1}

    def step(self, ctx, x, t, t_next, state):
        pf = ctx.sde.probability_flow(ctx.score)
        x = x + scoresde.append_dims(t_next - t, x.ndim) * pf.drift(x, t)
        return x, {"steps": state["steps"] + 1, "n": state["n"]}


def test_state_lives_in_the_solve_not_on_the_solver():
    solver = CountingEuler()
    seen = []

    class Spy(WrapperSolver):
        def step(self, ctx, x, t, t_next, state):
            x, state = self.inner.step(ctx, x, t, t_next, state)
            seen.append(state["steps"])
            return x, state

    spy = Spy(solver)
    x0 = torch.ones(3, 2, dtype=torch.float64)
    a = scoresde.solve(VPSDE(), std_normal_score, None, solver=spy, steps=4, x_init=x0, denoise=False).samples
    b = scoresde.solve(VPSDE(), std_normal_score, None, solver=spy, steps=4, x_init=x0, denoise=False).samples
    assert seen == [1, 2, 3, 4, 1, 2, 3, 4]  # the second solve starts afresh
    assert torch.equal(a, b) and vars(solver) == {}


def test_wrapper_forwards_capabilities():
    inner = SOLVERS["ddim"](eta=0.5)
    w = WrapperSolver(inner)
    assert (w.order, w.stochastic, w.requires_kernel, w.default_steps, w.default_grid) == (1.0, True, True, 50, "uniform")
    with pytest.raises(IncompatibleSDEError, match="closed-form Gaussian kernel"):
        w.check_sde(NoKernel())
    with pytest.raises(TypeError, match="wraps a step solver"):
        WrapperSolver(SOLVERS["ode"]())


def test_pc_takes_any_step_solver_as_predictor_and_keeps_its_state():
    pc = SOLVERS["pc"](predictor=CountingEuler(), corrector="none")
    x0 = torch.ones(3, 2, dtype=torch.float64)
    a = scoresde.solve(VPSDE(), std_normal_score, None, solver=pc, steps=5, x_init=x0, denoise=False).samples
    b = scoresde.solve(VPSDE(), std_normal_score, None, solver=CountingEuler(), steps=5, x_init=x0, denoise=False).samples
    assert torch.equal(a, b)
    assert not pc.stochastic


# ---------------------------------------------------------------------------- driver input checks
def test_no_op_and_truncating_solver_options_are_refused():
    with pytest.raises(ValueError, match="corrector_steps must be an integer >= 1"):
        SOLVERS["langevin"](corrector_steps=0)
    with pytest.raises(ValueError, match="corrector_steps"):
        SOLVERS["pc"](corrector_steps=1.7)
    with pytest.raises(ValueError, match="corrector='none'"):
        SOLVERS["pc"](corrector="none", snr=0.2)
    with pytest.raises(ValueError, match="snr must be a positive finite number"):
        SOLVERS["langevin"](snr=float("nan"))
    with pytest.raises(ValueError, match="steps_per_level"):
        SOLVERS["annealed_langevin"](steps_per_level=2.5)


@pytest.mark.parametrize("steps", [float("nan"), 2.5, True, "3", 0])
def test_steps_must_be_a_positive_integer(steps):
    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        scoresde.sample(VPSDE(), std_normal_score, (2, 2), solver="ddim", steps=steps)


def test_driver_argument_types_get_clear_errors():
    with pytest.raises(TypeError, match="generator must be a torch.Generator"):
        scoresde.sample(VPSDE(), std_normal_score, (2, 2), solver="ddim", generator=0)
    with pytest.raises(TypeError, match="dtype must be a floating-point torch.dtype"):
        scoresde.sample(VPSDE(), std_normal_score, (2, 2), solver="ddim", dtype="float32")
    with pytest.raises(TypeError, match="NumPy array"):
        scoresde.sample(VPSDE(), std_normal_score, None, solver="ddim", x_init=np.zeros((2, 2)))
    with pytest.raises(ShapeError, match="differ"):
        scoresde.sample(VPSDE(), std_normal_score, (3, 2), solver="ddim", x_init=torch.zeros(2, 2))
    with pytest.raises(ShapeError, match="shape"):
        scoresde.sample(VPSDE(), std_normal_score, None, solver="ddim")


def test_a_float64_score_does_not_change_the_sample_dtype():
    x = scoresde.sample(VPSDE(), lambda x, t: -x.double(), (2, 2), solver="ddim", steps=3)
    assert x.dtype == torch.float32


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_score_on_another_device_is_reported():
    with pytest.raises(ShapeError, match="on cuda"):
        scoresde.sample(VPSDE(), lambda x, t: (-x).cuda(), (2, 2), solver="ddim", steps=3)


def test_a_score_on_another_device_is_reported_without_cuda():
    meta = lambda x, t: torch.empty(x.shape, device="meta")
    with pytest.raises(ShapeError, match="returned a tensor on meta"):
        scoresde.sample(VPSDE(), meta, (2, 2), solver="ddim", steps=3)


# ---------------------------------------------------------------------------- annealed Langevin defaults
def test_annealed_langevin_sizes_its_ladder_to_the_data_dimension():
    """Song & Ermon (2020) Technique 2: more levels (a finer ladder) in higher dimension."""
    from scoresde.solvers.langevin import ladder_ratio, langevin_step_ratio

    sde, al = VESDE(), SOLVERS["annealed_langevin"]()
    levels = [al.steps_for(sde, torch.Size([1, d]), 1e-3) for d in (2, 64, 784)]
    assert levels[0] <= levels[1] < levels[2]
    g = ladder_ratio(784)
    a = math.sqrt(2 * 784) * (g - 1)
    from scipy.stats import norm
    assert abs(norm.cdf(a + 3 * g) - norm.cdf(a - 3 * g) - 0.5) < 1e-8
    # Technique 4 for a Gaussian: s_T / sigma^2 as close to 1 as the step can make it (the optimum beats its neighbours)
    u, T = langevin_step_ratio(1.2, 10), 10
    miss = lambda u: abs((1 - u) ** (2 * T) * (1.44 - 2 / (2 - u)) + 2 / (2 - u) - 1)
    assert miss(u) <= min(miss(0.9 * u), miss(1.1 * u))
