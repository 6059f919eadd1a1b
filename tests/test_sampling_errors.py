"""Every user error in sampling gets a clear exception that says what was wrong."""

import pytest
import torch

import scoresde
from scoresde import VESDE, VPSDE
from scoresde.errors import (
    IncompatibleSDEError,
    IntegrationError,
    NonFiniteError,
    ScoreSDEError,
    ShapeError,
    TimeRangeError,
    UnknownSolverError,
)


def good_score(x, t):
    return -x


def test_unknown_solver_lists_valid_names():
    with pytest.raises(UnknownSolverError) as e:
        scoresde.sample(VPSDE(), good_score, (2, 2), solver="eulr")
    msg = str(e.value)
    assert "'eulr'" in msg
    for name in scoresde.SOLVERS:
        assert name in msg
    assert isinstance(e.value, ScoreSDEError) and isinstance(e.value, KeyError)


def test_solver_of_the_wrong_type():
    with pytest.raises(UnknownSolverError, match="valid names"):
        scoresde.sample(VPSDE(), good_score, (2, 2), solver=42)


def test_unknown_solver_option_lists_accepted_ones():
    with pytest.raises(TypeError, match="snrr.*accepts: snr, corrector_steps"):
        scoresde.sample(VPSDE(), good_score, (2, 2), solver="langevin", snrr=0.1)
    with pytest.raises(TypeError, match="solver object"):
        scoresde.sample(VPSDE(), good_score, (2, 2), solver=scoresde.SOLVERS["ode"](), method="rk4")


@pytest.mark.parametrize("shape", [(), (3,), (0, 2), (2, -1), "ab", (2.5, "x")])
def test_bad_shape(shape):
    with pytest.raises(ShapeError, match="shape"):
        scoresde.sample(VPSDE(), good_score, shape, solver="euler_maruyama", steps=2)


def test_score_returning_wrong_shape():
    with pytest.raises(ShapeError, match=r"shaped like x \(4, 3\), got \(4, 1\)"):
        scoresde.sample(VPSDE(), lambda x, t: x[:, :1], (4, 3), steps=2)
    with pytest.raises(ShapeError, match="got float"):
        scoresde.sample(VPSDE(), lambda x, t: 1.0, (4, 3), steps=2)


def test_score_not_callable():
    with pytest.raises(TypeError, match="callable"):
        scoresde.sample(VPSDE(), "score", (4, 3), steps=2)


@pytest.mark.parametrize("eps", [0.0, -1e-3, 1.0, 2.0])
def test_eps_outside_time_range(eps):
    with pytest.raises(TimeRangeError, match=r"eps must lie in \(0, T\)"):
        scoresde.sample(VPSDE(), good_score, (2, 2), eps=eps, steps=2)


def test_bad_steps_and_options():
    with pytest.raises(ValueError, match="steps"):
        scoresde.sample(VPSDE(), good_score, (2, 2), steps=0)
    with pytest.raises(ValueError, match="unknown ODE method 'rk5'"):
        scoresde.SOLVERS["ode"](method="rk5")
    with pytest.raises(ValueError, match="unknown predictor"):
        scoresde.SOLVERS["pc"](predictor="ode")
    with pytest.raises(ValueError, match="unknown corrector"):
        scoresde.SOLVERS["pc"](corrector="hmc")
    with pytest.raises(ValueError, match="snr"):
        scoresde.SOLVERS["langevin"](snr=0)
    with pytest.raises(ValueError, match="eta"):
        scoresde.SOLVERS["ddim"](eta=2)
    with pytest.raises(ValueError, match="torchsde method"):
        scoresde.SOLVERS["torchsde"](method="heun")
    with pytest.raises(TypeError, match="floating-point"):
        scoresde.sample(VPSDE(), good_score, (2, 2), steps=2, dtype=torch.int64)
    with pytest.raises(ShapeError, match="shape"):
        scoresde.sample(VPSDE(), good_score, (2, 2), steps=2, x_init=torch.zeros(0, 2))


def test_sde_that_is_not_an_sde():
    with pytest.raises(TypeError, match="scoresde.SDE"):
        scoresde.sample(object(), good_score, (2, 2), steps=2)


@pytest.mark.parametrize("name", [n for n in scoresde.SOLVERS if n != "ode"])
def test_non_finite_values_name_step_and_time(name):
    """A score that turns NaN below t = 0.5: the error names the first bad step and its time."""

    def score(x, t):
        return torch.where((t < 0.5)[:, None], torch.full_like(x, float("nan")), -x)

    with pytest.raises(NonFiniteError, match=r"non-finite values") as e:
        scoresde.sample(VPSDE(), score, (4, 2), solver=name, steps=10)
    msg = str(e.value)
    assert "t = " in msg
    if name not in ("torchsde",):
        assert "step " in msg


def test_non_finite_values_in_the_ode():
    def score(x, t):
        return torch.where((t < 0.5)[:, None], torch.full_like(x, float("inf")), -x)

    # rk4 (the 3/8 rule) has a stage at 0.5005 - 0.0999/3 = 0.4672; dopri5's first stage below 0.5 depends on its step control
    for method, pattern in [("rk4", r"t = 0\.4672"), ("dopri5", r"t = 0\.[0-4]")]:
        with pytest.raises(NonFiniteError, match=r"non-finite velocity at " + pattern):
            scoresde.sample(VPSDE(), score, (4, 2), solver="ode", method=method, steps=10 if method == "rk4" else None)


def test_ode_max_steps_exhaustion():
    sde = VESDE()
    with pytest.raises(IntegrationError, match="max_steps=3"):
        scoresde.sample(sde, lambda x, t: -x / (1 + sde.marginal_coeffs(t)[1][:, None] ** 2), (4, 2), solver="ode",
                        rtol=1e-9, atol=1e-9, max_steps=3)


def test_solver_refuses_sde_without_kernel():
    class OnlyDynamics(scoresde.SDE):
        def drift(self, x, t):
            return -x

        def diffusion(self, t):
            return torch.ones_like(t)

        @property
        def prior_std(self):
            return 1.0

    with pytest.raises(IncompatibleSDEError, match="'ddim' needs an SDE with a closed-form Gaussian kernel"):
        scoresde.sample(OnlyDynamics(), good_score, (2, 2), solver="ddim")
    # and the kernel-free solvers serve it (no denoising step by default)
    x = scoresde.sample(OnlyDynamics(), good_score, (2, 2), solver="euler_maruyama", steps=3)
    assert x.shape == (2, 2)


@pytest.mark.parametrize("steps", [2.5, True, -1, "3"])
def test_steps_must_be_a_positive_integer(steps):
    with pytest.raises((ValueError, TypeError), match="positive integer|steps"):
        scoresde.sample(VPSDE(), good_score, (2, 2), steps=steps)


def test_annealed_langevin_grid_starts_at_T_even_with_one_level():
    for levels in [1, 2, 5]:
        res = scoresde.solve(VESDE(), good_score, (2, 2), solver="annealed_langevin", steps=levels, steps_per_level=1,
                             dtype=torch.float64)
        grid = res.times
        assert grid.shape == (levels + 1,)
        assert float(grid[0]) == 1.0 and abs(float(grid[-1]) - 1e-3) < 1e-15
        assert torch.all(grid[:-1] > grid[1:])
