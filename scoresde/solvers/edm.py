"""EDM's sampler (Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based Generative Models", Algorithm 2).

Heun's method on the probability-flow ODE in the scaled variable ``x~ = x / scale(t)`` against the
noise level ``sigma = std(t) / scale(t)``, where it reads ``dx~/dsigma = (x~ - D(x~, sigma)) / sigma``
with the denoiser ``D`` = Tweedie's data prediction. Written once for every SDE with a kernel.
"""

from __future__ import annotations

import math
from typing import Any, Tuple

import torch
from torch import Tensor

from .._utils import append_dims
from .._validation import finite_float
from ..errors import OptionError
from ..score import score_to_x0
from .base import SolveContext, StepSolver
from .registry import register


def denoiser(ctx: SolveContext, x_scaled: Tensor, t: Tensor) -> Tensor:
    """EDM's ``D(x~, sigma(t))``: the data prediction for ``x~ = x / scale(t)`` ``[B, *event]`` at times ``t`` ``[B]``.

    Evaluates the score at ``t`` and the state ``x = scale(t) x~``: one score evaluation. (A
    noise level ``sigma`` maps to its time by :meth:`scoresde.SDE.time_at_noise_to_signal`.)
    """
    sde = ctx.sde
    scale, _ = sde.marginal_coeffs(t)
    x = append_dims(scale, x_scaled.ndim) * x_scaled
    return score_to_x0(sde, x, ctx.score(x, t), t)


@register
class EDM(StepSolver):
    """Karras et al. (2022), Algorithm 2: Heun on the noise level with stochastic churn.

    At step ``i`` from ``sigma_i`` to ``sigma_{i+1}`` (``sigma = std / scale``, on the Karras grid by default)::

        gamma   = min(s_churn / N, sqrt(2) - 1) if s_tmin <= sigma_i <= s_tmax else 0
        sigma^  = sigma_i (1 + gamma)                          # raise the noise level...
        x^      = x_i + sqrt(sigma^2 - sigma_i^2) s_noise z    # ...by adding noise
        d       = (x^ - D(x^, sigma^)) / sigma^                # Euler step
        x_{i+1} = x^ + (sigma_{i+1} - sigma^) d
        d'      = (x_{i+1} - D(x_{i+1}, sigma_{i+1})) / sigma_{i+1}
        x_{i+1} = x^ + (sigma_{i+1} - sigma^) (d + d') / 2      # second-order correction

    in the scaled variable ``x = x_t / scale(t)``. The paper's grid ends with a last step to
    ``sigma = 0`` whose second-order correction is skipped: that Euler step,
    ``x_N = D(x_{N-1}, sigma_{N-1})``, is the driver's final denoising step (on by default), so
    ``steps`` Heun steps plus denoising cost ``2 steps + 1`` evaluations, EDM's ``2N - 1`` with
    ``N = steps + 1``. ``sigma^`` is capped at the grid's ``sigma(T)``. ``N`` in ``gamma`` is the
    number of steps of the grid.

    ``steps = 1`` is refused: one Heun step from ``sigma_max`` to ``sigma_min`` (EDM's ``N = 2``) averages the
    slope at ``sigma_max`` with one near zero and returns samples at about ``sigma_max / 2`` in scale (std ~76
    on VP against a data std of 1), whatever the score. Few steps stay coarse (at 2-4 steps the spread is
    still several times the data's); EDM uses 18.

    Args:
        s_churn: total churn ``S_churn`` (0: the deterministic Heun sampler).
        s_tmin, s_tmax: the noise-level window ``[S_tmin, S_tmax]`` where churn is applied.
        s_noise: ``S_noise``, the scale of the added noise (slightly above 1 offsets a denoiser's
            tendency to remove too much noise).
    """

    name = "edm"
    requires_kernel = True
    order = 2.0
    default_steps = 17
    default_grid = "karras"
    denoise_default = True

    def __init__(self, s_churn: float = 0.0, s_tmin: float = 0.0, s_tmax: float = math.inf, s_noise: float = 1.0):
        self.s_churn = finite_float(s_churn, "s_churn", minimum=0.0)
        self.s_tmin = finite_float(s_tmin, "s_tmin", minimum=0.0)
        unbounded = isinstance(s_tmax, (int, float)) and not isinstance(s_tmax, bool) and s_tmax == math.inf
        self.s_tmax = math.inf if unbounded else finite_float(s_tmax, "s_tmax (or math.inf)")
        if not self.s_tmin <= self.s_tmax:
            raise OptionError(f"need s_tmin <= s_tmax, got s_tmin={s_tmin}, s_tmax={s_tmax}")
        self.s_noise = finite_float(s_noise, "s_noise", positive=True)

    @property
    def stochastic(self) -> bool:  # type: ignore[override]
        return self.s_churn > 0

    def init(self, ctx: SolveContext, x: Tensor, grid: Tensor) -> Any:
        if grid.shape[0] == 2:
            s0, s1 = (float(s) for s in ctx.sde.noise_to_signal(grid.to(torch.float64)))
            raise OptionError(
                f"solver 'edm' needs steps >= 2: its one Heun step would run from sigma = {s0:.3g} to {s1:.3g}, and the "
                "trapezoid rule over the whole noise range averages the slope at the start with one near zero, which "
                f"leaves the samples at about half the starting noise level (std ~ {s0 / 2:.3g}) instead of the data's; "
                "use steps >= 2 (EDM uses 18), or for one step 'ddim' (its step returns the denoised mean)"
            )
        return {"n": grid.shape[0] - 1, "sigma_max": ctx.sde.noise_to_signal(grid[:1])}

    def step(self, ctx: SolveContext, x: Tensor, t: Tensor, t_next: Tensor, state: Any) -> Tuple[Tensor, Any]:
        sde, nd = ctx.sde, x.ndim
        scale_i, std_i = sde.marginal_coeffs(t)
        scale_n, std_n = sde.marginal_coeffs(t_next)
        sigma_i, sigma_n = std_i / scale_i, std_n / scale_n
        x_i = x / append_dims(scale_i, nd)
        if self.s_churn > 0:
            in_window = (sigma_i >= self.s_tmin) & (sigma_i <= self.s_tmax)
            gamma = torch.where(in_window, min(self.s_churn / state["n"], math.sqrt(2) - 1), 0.0)
            sigma_hat = torch.minimum(sigma_i * (1 + gamma), state["sigma_max"])
            noise = append_dims((sigma_hat**2 - sigma_i**2).clamp_min(0).sqrt(), nd) * self.s_noise * ctx.randn_like(x)
            x_hat = x_i + noise
            t_hat = torch.where(sigma_hat > sigma_i, sde.time_at_noise_to_signal(sigma_hat), t)
        else:
            sigma_hat, x_hat, t_hat = sigma_i, x_i, t
        h = append_dims(sigma_n - sigma_hat, nd)
        d = (x_hat - denoiser(ctx, x_hat, t_hat)) / append_dims(sigma_hat, nd)
        x_next = x_hat + h * d
        d_prime = (x_next - denoiser(ctx, x_next, t_next)) / append_dims(sigma_n, nd)
        x_next = x_hat + h * 0.5 * (d + d_prime)
        return append_dims(scale_n, nd) * x_next, state
