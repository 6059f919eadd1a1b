"""The SDE objects against their defining equations: moment ODEs, kernels, priors."""

import math

import pytest
import torch

import scoresde
from scoresde import SDE, VESDE, VPSDE, SubVPSDE
from scoresde.errors import ShapeError, TimeRangeError

SDES = [VPSDE(), SubVPSDE(), VESDE(), VPSDE(beta_min=0.5, beta_max=5.0), VESDE(sigma_min=0.1, sigma_max=3.0)]
IDS = ["vp", "subvp", "ve", "vp-mild", "ve-small"]


def linear_drift_coeff(sde: SDE, t: torch.Tensor) -> torch.Tensor:
    """a(t) with f(x, t) = a(t) x, read off the drift at x = 1."""
    return sde.drift(torch.ones(t.shape[0], 1, dtype=t.dtype), t)[:, 0]


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_marginal_obeys_moment_odes(sde):
    """For dx = a(t) x dt + g dw: d scale/dt = a scale and d var/dt = 2 a var + g^2 (central differences)."""
    t = torch.linspace(0.02, 0.98, 25, dtype=torch.float64)
    h = 1e-5
    scale, std = sde.marginal_coeffs(t)
    sp, stdp = sde.marginal_coeffs(t + h)
    sm, stdm = sde.marginal_coeffs(t - h)
    dscale = (sp - sm) / (2 * h)
    dvar = (stdp**2 - stdm**2) / (2 * h)
    a, g = linear_drift_coeff(sde, t), sde.diffusion(t)
    torch.testing.assert_close(dscale, a * scale, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(dvar, 2 * a * std**2 + g**2, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_kernel_starts_at_data(sde):
    scale, std = sde.marginal_coeffs(torch.zeros(3, dtype=torch.float64))
    assert torch.all(scale == 1) and torch.all(std == 0)


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_float32_accuracy_near_zero(sde):
    """std(t) in float32 keeps full relative precision for tiny t (expm1/log1p forms)."""
    t64 = torch.tensor([1e-7, 1e-6, 1e-5, 1e-4, 1e-3], dtype=torch.float64)
    s32, std32 = sde.marginal_coeffs(t64.float())
    s64, std64 = sde.marginal_coeffs(t64)
    torch.testing.assert_close(std32.double(), std64, rtol=1e-5, atol=0)
    torch.testing.assert_close(s32.double(), s64, rtol=1e-6, atol=0)


@pytest.mark.parametrize("sde", [VPSDE(), SubVPSDE(), VESDE()], ids=["vp", "subvp", "ve"])
def test_kernel_at_T_matches_prior(sde):
    """KL(p_T(. | x_0) || prior) per dimension is negligible for data in [-1, 1]."""
    scale, std = sde.marginal_coeffs(torch.tensor([1.0], dtype=torch.float64))
    p = sde.prior_std
    x0 = 1.0  # worst case over [-1, 1]
    kl = math.log(p / float(std)) + (float(std) ** 2 + float(scale) ** 2 * x0**2) / (2 * p**2) - 0.5
    assert 0 <= kl < 1e-3


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_transition_kernels_compose(sde):
    """Kernel 0 -> s followed by s -> t equals kernel 0 -> t."""
    s = torch.tensor([0.0, 1e-4, 0.1, 0.3, 0.5, 0.9], dtype=torch.float64)
    t = torch.tensor([0.2, 0.0002, 0.35, 0.31, 1.0, 0.95], dtype=torch.float64)
    a, v = sde.transition_coeffs(s, t)
    scale_s, std_s = sde.marginal_coeffs(s)
    scale_t, std_t = sde.marginal_coeffs(t)
    torch.testing.assert_close(a * scale_s, scale_t, rtol=1e-12, atol=0)
    torch.testing.assert_close(a**2 * std_s**2 + v**2, std_t**2, rtol=1e-10, atol=1e-15)
    # the generic base-class formula agrees with the closed-form override
    a0, v0 = SDE.transition_coeffs(sde, s, t)
    torch.testing.assert_close(a0, a, rtol=1e-12, atol=0)
    torch.testing.assert_close(v0, v, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_marginal_and_perturb_shapes_and_moments(sde):
    g = torch.Generator().manual_seed(0)
    x0 = torch.full((20000, 1, 2, 2), 0.7)
    t = torch.full((20000,), 0.4)
    mean, std = sde.marginal(x0, t)
    assert mean.shape == x0.shape and std.shape == (20000,)
    xt, noise, std2 = sde.perturb(x0, t, generator=g)
    torch.testing.assert_close(xt, mean + std2.view(-1, 1, 1, 1) * noise)
    n = xt.numel()
    s = float(std[0])
    assert abs(float(xt.mean()) - float(mean[0, 0, 0, 0])) < 4 * s / math.sqrt(n)
    assert abs(float(xt.std()) / s - 1) < 4 / math.sqrt(2 * n)


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_prior_log_prob_is_isotropic_gaussian(sde):
    z = torch.randn(5, 3, 4, 4, dtype=torch.float64) * sde.prior_std
    ref = torch.distributions.Normal(0.0, sde.prior_std).log_prob(z).sum(dim=(1, 2, 3))
    torch.testing.assert_close(sde.prior_log_prob(z), ref)


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_prior_sample_reproducible_and_scaled(sde):
    z1 = sde.prior_sample((4000, 8), generator=torch.Generator().manual_seed(3))
    z2 = sde.prior_sample((4000, 8), generator=torch.Generator().manual_seed(3))
    assert torch.equal(z1, z2)
    n = z1.numel()
    assert abs(float(z1.std()) / sde.prior_std - 1) < 4 / math.sqrt(2 * n)
    z3 = sde.prior_sample((2, 3, 5, 5), dtype=torch.float64)
    assert z3.shape == (2, 3, 5, 5) and z3.dtype == torch.float64


def test_reverse_and_probability_flow_drifts():
    sde = VPSDE()
    x = torch.randn(6, 3)
    t = torch.rand(6)

    def score(x, t):
        return -2.0 * x

    g2 = sde.diffusion(t)[:, None] ** 2
    f = sde.drift(x, t)
    torch.testing.assert_close(sde.reverse(score).drift(x, t), f - g2 * score(x, t))
    torch.testing.assert_close(sde.probability_flow(score).drift(x, t), f - 0.5 * g2 * score(x, t))
    assert torch.all(sde.probability_flow(score).diffusion(t) == 0)
    torch.testing.assert_close(sde.reverse(score).diffusion(t), sde.diffusion(t))


def test_time_at_noise_to_signal_inverts():
    for sde in SDES:
        t = torch.tensor([0.01, 0.2, 0.5, 0.99], dtype=torch.float64)
        r = sde.noise_to_signal(t)
        torch.testing.assert_close(sde.time_at_noise_to_signal(r), t, rtol=0, atol=1e-10)


def test_vp_subvp_relation():
    """sub-VP shares VP's mean and its variance is the square of VP's."""
    t = torch.linspace(0, 1, 11, dtype=torch.float64)
    s_vp, std_vp = VPSDE().marginal_coeffs(t)
    s_sub, std_sub = SubVPSDE().marginal_coeffs(t)
    torch.testing.assert_close(s_vp, s_sub)
    torch.testing.assert_close(std_sub, std_vp**2)


def test_bad_arguments():
    sde = VPSDE()
    with pytest.raises(TimeRangeError, match=r"\[0, T\]"):
        sde.marginal(torch.zeros(2, 3), torch.tensor([0.5, 1.5]))
    with pytest.raises(TimeRangeError):
        sde.marginal(torch.zeros(2, 3), -0.1)
    with pytest.raises(ShapeError, match="one time per sample"):
        sde.marginal(torch.zeros(2, 3), torch.tensor([0.5, 0.5, 0.5]))
    with pytest.raises(ShapeError):
        sde.prior_sample((0, 3))
    with pytest.raises(ShapeError):
        sde.prior_sample(("a", 3))
    with pytest.raises(ValueError, match="beta_min"):
        VPSDE(beta_min=-1.0)
    with pytest.raises(ValueError, match="sigma_min"):
        VESDE(sigma_min=5.0, sigma_max=1.0)


def test_repr_names_parameters():
    assert "beta_max=20.0" in repr(VPSDE()) and "sigma_max=50.0" in repr(VESDE())
    assert scoresde.VESDE(sigma_max=3.0).prior_std == 3.0
