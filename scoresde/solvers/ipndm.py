"""Improved PNDM (iPNDM; Zhang & Chen 2023, "Fast Sampling of Diffusion Models with Exponential Integrator").

Adams–Bashforth on the probability-flow ODE in EDM's frame: the scaled variable ``x~ = x / scale(t)``
against the noise level ``sigma = std(t) / scale(t)``, where it reads
``dx~/dsigma = eps(x~, sigma) = (x~ - D(x~, sigma)) / sigma`` (``D``: Tweedie's data prediction).
Written once for every SDE with a kernel.
"""

from __future__ import annotations

from typing import Any, List, Tuple

import torch
from torch import Tensor

from .._utils import append_dims
from .._validation import boolean, integer
from .base import SolveContext, StepSolver
from .edm import denoiser
from .registry import register

#: Adams–Bashforth weights for equal steps, newest slope first (orders 1 to 4).
AB_WEIGHTS = {
    1: (1.0,),
    2: (3 / 2, -1 / 2),
    3: (23 / 12, -16 / 12, 5 / 12),
    4: (55 / 24, -59 / 24, 37 / 24, -9 / 24),
}


def variable_ab_weights(sigmas: List[Tensor], sigma_next: Tensor) -> Tensor:
    """Adams–Bashforth weights ``[B, k]`` for unequal steps: the integral over ``[sigma_0, sigma_next]``
    of the polynomial through the slopes at ``sigmas = [sigma_0, sigma_{-1}, ...]`` (each ``[B]``), per unit step.

    They solve ``sum_j w_j rho_j^m = 1 / (m + 1)``, ``m = 0 .. k - 1``, with
    ``rho_j = (sigma_j - sigma_0) / (sigma_next - sigma_0)``; equal steps give :data:`AB_WEIGHTS`.
    """
    h = sigma_next - sigmas[0]
    rho = torch.stack([(s - sigmas[0]) / h for s in sigmas], dim=1)  # [B, k]
    k = rho.shape[1]
    V = torch.stack([rho**m for m in range(k)], dim=1)  # [B, k (m), k (j)]
    rhs = torch.stack([torch.full_like(h, 1.0 / (m + 1)) for m in range(k)], dim=1)
    return torch.linalg.solve(V, rhs)


@register
class IPNDM(StepSolver):
    """iPNDM: Adams–Bashforth up to ``max_order`` on ``dx~/dsigma``, warm-started at lower orders.

    Step ``i`` evaluates ``eps_i = (x~_i - D(x~_i, sigma_i)) / sigma_i`` once and takes::

        x~_{i+1} = x~_i + (sigma_{i+1} - sigma_i) sum_j w_j eps_{i-j},   j < k = min(max_order, i + 1)

    with the classic equal-step weights (``(3, -1)/2``, ``(23, -16, 5)/12``, ``(55, -59, 37, -9)/24``),
    as iPNDM does, or, with ``variable_step=True``, the weights of the unequal steps of the grid.

    Orders: the equal-step weights are fourth order on grids uniform in ``sigma`` but second
    order on other grids (their error on a step ``h_i != h_{i-1}`` is ``O(h (h_i - h_{i-1}))``);
    the variable-step weights are of order ``max_order`` on any smooth grid. (The warm start makes
    the formal order 2 in both cases; its error is that of Euler's method at the prior end, where
    the slope barely changes.)

    Args:
        max_order: 1 to 4 (default 4).
        variable_step: use the unequal-step weights (iPNDM_v).
    """

    name = "ipndm"
    stochastic = False
    requires_kernel = True
    default_steps = 20
    default_grid = "karras"
    denoise_default = False  # the docs' "How to choose a solver": the final denoising step

    def __init__(self, max_order: int = 4, variable_step: bool = False):
        self.max_order = integer(max_order, "max_order", minimum=1, maximum=4, need="an integer in 1..4")
        self.variable_step = boolean(variable_step, "variable_step")

    @property
    def order(self) -> float:  # type: ignore[override]
        """``max_order`` with variable-step weights; at most 2 with equal-step weights on a general grid."""
        return float(self.max_order if self.variable_step else min(self.max_order, 2))

    def init(self, ctx: SolveContext, x: Tensor, grid: Tensor) -> Any:
        return {"history": []}  # (sigma, eps) pairs, newest last

    def step(self, ctx: SolveContext, x: Tensor, t: Tensor, t_next: Tensor, state: Any) -> Tuple[Tensor, Any]:
        sde, nd = ctx.sde, x.ndim
        scale_i, std_i = sde.marginal_coeffs(t)
        scale_n, std_n = sde.marginal_coeffs(t_next)
        sigma_i, sigma_n = std_i / scale_i, std_n / scale_n
        x_i = x / append_dims(scale_i, nd)
        eps = (x_i - denoiser(ctx, x_i, t)) / append_dims(sigma_i, nd)
        history = (state["history"] + [(sigma_i, eps)])[-self.max_order:]
        slopes = [e for _, e in reversed(history)]  # newest first
        if self.variable_step:
            w = variable_ab_weights([s for s, _ in reversed(history)], sigma_n)
            slope = sum(append_dims(w[:, j], nd) * slopes[j] for j in range(len(slopes)))
        else:
            slope = sum(c * s for c, s in zip(AB_WEIGHTS[len(slopes)], slopes))
        x_next = x_i + append_dims(sigma_n - sigma_i, nd) * slope
        return append_dims(scale_n, nd) * x_next, {"history": history}
