"""Hardening, class 1: no silent wrong results.

A number that looks fine and is not is the worst failure: each case here used to return one.
"""

from __future__ import annotations

import math

import pytest
import torch

import scoresde
from scoresde._utils import as_time, resolve_shape
from scoresde._validation import finite_float, integer, positive_int, seed_int
from scoresde.errors import DataError, OptionError, ShapeError, TimeRangeError
from scoresde.likelihood import log_likelihood
from scoresde.nets import MLP, UNet, build_network
from scoresde.training import TrainConfig, Trainer


def _std_normal_log_prob(x: torch.Tensor) -> torch.Tensor:
    d = x[0].numel()
    return -0.5 * d * math.log(2 * math.pi) - 0.5 * (x * x).reshape(x.shape[0], -1).sum(1)


# ---------------------------------------------------------------------- likelihood of non-differentiable scores
def _no_grad_score(x, t):
    with torch.no_grad():
        return -x


def _inference_score(x, t):
    with torch.inference_mode():
        return -x


@pytest.mark.parametrize("score", [_no_grad_score, _inference_score, lambda x, t: (-x).detach()],
                         ids=["no_grad", "inference_mode", "detach"])
def test_likelihood_refuses_a_score_that_is_not_differentiable_in_x(score):
    # The probe: VP SDE, N(0, I) data, whose exact score is -x at every t. Computed without a
    # graph, the divergence used to be dropped (-11.9 nats instead of -1.84 for this point).
    sde = scoresde.VPSDE()
    x = torch.tensor([[0.3, -0.2]], dtype=torch.float64)
    with pytest.raises(OptionError, match="not differentiable in x"):
        log_likelihood(sde, score, x)
    with pytest.raises(OptionError, match="not differentiable in x"):
        log_likelihood(sde, score, x, trace="hutchinson", generator=torch.Generator().manual_seed(0))


def test_likelihood_of_the_differentiable_score_is_exact():
    sde = scoresde.VPSDE()
    x = torch.tensor([[0.3, -0.2], [1.0, 0.5]], dtype=torch.float64)
    res = log_likelihood(sde, lambda x, t: -x, x, rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(res.log_prob, _std_normal_log_prob(x), rtol=0, atol=1e-5)


def test_likelihood_accepts_a_score_constant_in_x():
    # score = 0: v = -beta(t) x / 2, so z = x exp(-B/2) with B = int_eps^T beta, and div v = -D beta / 2.
    # A constant carries no graph, like a no_grad score, but its divergence really is zero: it must work.
    sde = scoresde.VPSDE()
    eps = 1e-3
    x = torch.tensor([[0.3, -0.2], [1.0, 0.5]], dtype=torch.float64)
    res = log_likelihood(sde, lambda x, t: torch.zeros_like(x), x, eps=eps, rtol=1e-9, atol=1e-9)
    b0, b1 = sde.beta_min, sde.beta_max
    B = b0 * (1 - eps) + 0.5 * (b1 - b0) * (1 - eps**2)
    z = x * math.exp(-B / 2)
    expected = sde.prior_log_prob(z) - x.shape[1] * B / 2
    torch.testing.assert_close(res.log_prob, expected, rtol=0, atol=1e-6)


# ---------------------------------------------------------------------- times
@pytest.mark.parametrize("t", [float("nan"), torch.tensor(float("nan")), torch.tensor([0.5, float("nan")])])
def test_nan_times_are_refused(t):
    x = torch.zeros(2, 3)
    with pytest.raises(TimeRangeError, match="NaN"):
        as_time(t, x)
    with pytest.raises(TimeRangeError, match="NaN"):
        scoresde.VPSDE().marginal(x, t)


def test_integer_data_never_truncates_time():
    sde = scoresde.VPSDE()
    x0 = torch.ones(2, 3, dtype=torch.long)
    # as_time keeps t floating even for integer x: t = 0.5 used to become 0 (std 0).
    t = as_time(0.5, x0)
    assert t.is_floating_point() and bool((t == 0.5).all())
    with pytest.raises(DataError, match="floating-point"):
        sde.marginal(x0, 0.5)
    with pytest.raises(DataError, match="floating-point"):
        sde.perturb(x0, torch.full((2,), 0.5))
    mean, std = sde.marginal(x0.float(), 0.5)
    assert float(std[0]) > 0.5


# ---------------------------------------------------------------------- shapes and sizes are never truncated
@pytest.mark.parametrize("shape", ["42", b"42", (2, 2.5), (2.5, 2), (2, float("nan")), (True, 2), 7])
def test_bad_shapes_are_refused_not_reinterpreted(shape):
    with pytest.raises(ShapeError):
        resolve_shape(shape)
    with pytest.raises(ShapeError):
        scoresde.VPSDE().prior_sample(shape)


def test_integral_shapes_are_accepted():
    assert resolve_shape((4, 2.0)) == torch.Size([4, 2])
    assert resolve_shape([torch.tensor(3), 2]) == torch.Size([3, 2])


@pytest.mark.parametrize("value", [1.7, 2.5, True, float("nan"), float("inf"), "3", None])
def test_positive_int_refuses_what_it_would_truncate(value):
    with pytest.raises(OptionError):
        positive_int(value, "n")


def test_validators_accept_and_convert():
    assert positive_int(3, "n") == 3 and positive_int(3.0, "n") == 3 and positive_int(1e8, "n") == 10**8
    assert integer(0, "n", minimum=0) == 0
    assert seed_int(2**63 - 1) == 2**63 - 1
    with pytest.raises(OptionError, match=r"<= 9223372036854775807"):
        seed_int(2**63)
    assert finite_float(2, "x") == 2.0
    for bad in (float("nan"), float("inf"), True, "1"):
        with pytest.raises(OptionError):
            finite_float(bad, "x")
    with pytest.raises(OptionError, match="positive"):
        finite_float(0.0, "x", positive=True)


@pytest.mark.parametrize("kwargs", [dict(hidden=2.5), dict(depth=1.5), dict(embed_dim=True), dict(hidden=float("nan"))])
def test_mlp_sizes_are_not_truncated(kwargs):
    with pytest.raises(OptionError):
        MLP(2, **kwargs)
    with pytest.raises(ValueError):
        build_network("mlp", (2,), **kwargs)


@pytest.mark.parametrize("kwargs", [dict(channels=8.5), dict(channel_mults=(1, 2.5)), dict(num_res_blocks=1.2),
                                    dict(attn_resolutions=(7.5,)), dict(channel_mults="12")])
def test_unet_sizes_are_not_truncated(kwargs):
    with pytest.raises(OptionError):
        UNet(**{"channels": 8, "num_groups": 4, **kwargs})


def test_training_config_with_a_fractional_width_is_refused(tmp_path):
    cfg = TrainConfig(data="gmm", n_train=64, steps=1, batch_size=16, net_kwargs={"hidden": 2.5}, out=str(tmp_path / "r"),
                      device="cpu", sample_every=-1)
    with pytest.raises(ValueError, match="hidden must be an integer"):
        Trainer(cfg)


# ---------------------------------------------------------------------- options that looked valid and were not
@pytest.mark.parametrize("changes", [dict(compile="yes"), dict(importance_sampling="no", weighting="likelihood"),
                                     dict(out=""), dict(out=3), dict(data_dir=3), dict(sde_kwargs={"beta_max": "20"})])
def test_training_options_of_the_wrong_type_are_refused(changes):
    # compile="yes" and importance_sampling="no" are truthy: both used to switch the option on silently.
    with pytest.raises(ValueError):
        TrainConfig(**changes).validate()


@pytest.mark.parametrize("make", [lambda: scoresde.VPSDE(beta_min=True), lambda: scoresde.VESDE(0.01, True),
                                  lambda: scoresde.VPSDE(beta_max="20")])
def test_sde_parameters_must_be_real_numbers(make):
    with pytest.raises(OptionError):
        make()


def test_counts_in_data_helpers_are_not_truncated():
    from scoresde.data import get_dataset, to_model_range, toy_data

    with pytest.raises(OptionError):
        toy_data("moons", True)  # was one point
    with pytest.raises(OptionError):
        get_dataset("moons", n=True)
    with pytest.raises(OptionError):
        to_model_range(torch.tensor([0, 1]), levels=2.5)  # was 2 levels


def test_mixture_parameters_are_validated():
    from scoresde.exact import GaussianMixture

    for weights, stds in (([-1.0, 2.0], 1.0), ([0.0, 0.0], 1.0), ([0.5, 0.5], -1.0), ([0.5, float("nan")], 1.0)):
        with pytest.raises(ValueError):
            GaussianMixture(torch.tensor(weights), torch.zeros(2, 1), stds)
