"""Stochastic predictors on the reverse-time SDE: Euler–Maruyama, reverse diffusion and ancestral."""

from __future__ import annotations

from typing import Any, Tuple

from torch import Tensor

from .._utils import append_dims
from ..sde.base import reverse_drift
from .base import SolveContext, StepSolver
from .registry import register


@register
class EulerMaruyama(StepSolver):
    """Euler–Maruyama on the reverse-time SDE (weak order 1).

    With ``dt = t_next - t < 0`` and ``z ~ N(0, I)``::

        x <- x + [f(x, t) - g(t)^2 score(x, t)] dt + g(t) sqrt(-dt) z
    """

    name = "euler_maruyama"
    stochastic = True
    order = 1.0

    def step(self, ctx: SolveContext, x: Tensor, t: Tensor, t_next: Tensor, state: Any) -> Tuple[Tensor, Any]:
        dt = append_dims(t_next - t, x.ndim)
        g = append_dims(ctx.sde.diffusion(t), x.ndim)
        drift = reverse_drift(ctx.sde, x, t, ctx.score(x, t))
        return x + drift * dt + g * (-dt).sqrt() * ctx.randn_like(x), state


@register
class ReverseDiffusion(StepSolver):
    """Reverse-diffusion predictor (Song et al. 2021, Algorithm 2's predictor).

    Discretise the forward SDE with its exact one-step kernel ``x_t = a x_s + v z`` (so
    ``f_i = (a - 1) x`` and ``G_i = v``) and run that discretisation backwards::

        x <- x - f_i + G_i^2 score(x, t) + G_i z

    For VE this is SMLD's ``G_i^2 = sigma_i^2 - sigma_{i-1}^2``; for VP it is DDPM's ``beta_i``.
    """

    name = "reverse_diffusion"
    stochastic = True
    order = 1.0
    requires_kernel = True

    def step(self, ctx: SolveContext, x: Tensor, t: Tensor, t_next: Tensor, state: Any) -> Tuple[Tensor, Any]:
        a, v = ctx.sde.transition_coeffs(t_next, t)
        a, G2 = append_dims(a, x.ndim), append_dims(v * v, x.ndim)
        f = (a - 1) * x
        return x - f + G2 * ctx.score(x, t) + G2.sqrt() * ctx.randn_like(x), state


@register
class Ancestral(StepSolver):
    """Ancestral sampling: draw ``x_s ~ q(x_s | x_t, x_0 = E[x_0 | x_t])`` (DDPM / SMLD step).

    With the one-step kernel ``x_t | x_s ~ N(a x_s, v^2 I)``, Tweedie's ``x_0`` estimate gives the
    posterior::

        mean = (x + v^2 score(x, t)) / a
        var  = v^2 std(s)^2 / std(t)^2

    For VP this is DDPM's ``(x + beta_t score) / sqrt(1 - beta_t)`` with the posterior variance
    ``beta~_t``; for VE it is SMLD's ``x + (sigma_t^2 - sigma_s^2) score`` with variance
    ``(sigma_t^2 - sigma_s^2) sigma_s^2 / sigma_t^2``.
    """

    name = "ancestral"
    stochastic = True
    order = 1.0
    requires_kernel = True

    def step(self, ctx: SolveContext, x: Tensor, t: Tensor, t_next: Tensor, state: Any) -> Tuple[Tensor, Any]:
        a, v = ctx.sde.transition_coeffs(t_next, t)
        _, std_t = ctx.sde.marginal_coeffs(t)
        _, std_s = ctx.sde.marginal_coeffs(t_next)
        v2 = append_dims(v * v, x.ndim)
        mean = (x + v2 * ctx.score(x, t)) / append_dims(a, x.ndim)
        sd = append_dims(v * std_s / std_t, x.ndim)
        return mean + sd * ctx.randn_like(x), state
