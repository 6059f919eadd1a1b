"""DPM-Solver++ (Lu et al. 2022, "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion Probabilistic Models").

Multistep exponential integrators in the half log-SNR ``lambda = log(alpha / sigma)`` of the
kernel ``x_t = alpha_t x_0 + sigma_t eps`` (``alpha = scale(t)``, ``sigma = std(t)``), driven by the
data prediction ``x0(x, t) = (x + sigma_t^2 score) / alpha_t`` (Tweedie). Written once for every
SDE with a closed-form kernel: VP, sub-VP, VE (``alpha = 1``) and user SDEs.

From ``s`` to ``t`` with ``h = lambda_t - lambda_s`` and the data predictions ``D_0 = x0(x_s)``,
``D_1, D_2`` at the two previous grid times (``r_k = (lambda_{s_k} - lambda_{s_{k+1}}) / h``)::

    x_t = (sigma_t / sigma_s) e^{-eta h} x_s + alpha_t (1 - e^{-h_eta}) D_0
          + alpha_t * correction + sigma_t sqrt(1 - e^{-2 eta h}) z,      h_eta = (1 + eta) h

with ``correction = 0`` (order 1: DDIM), ``(1 - e^{-h_eta}) / 2 (D_0 - D_1) / r_0`` (order 2, the
paper's Algorithm 2) or ``phi_2 d_1 - 2 phi_3 d_2`` (order 3), where ``d_1 = h D'`` and
``d_2 = h^2 D''/2`` are the scaled divided differences of ``D_0, D_1, D_2`` in ``lambda``,
``phi_2 = (e^{-h_eta} - 1) / h_eta + 1`` and ``phi_3 = phi_2 / h_eta - 1/2``: the exact integral of
the quadratic through the three data predictions. ``eta = 0`` is the ODE solver; ``eta = 1`` the
SDE-DPM-Solver++ of the paper's Appendix.

The third-order term is twice the ``phi_3 D_2`` of the DPM-Solver reference code and diffusers'
``DPMSolverMultistepScheduler``: with ``D_2 = h^2 D''/2`` the integral of
``e^{-(lambda_t - lambda)} (lambda - lambda_s)^2 D''/2`` over the step is ``-2 phi_3 D_2 + O(h^4)``,
and with the halved term the update is second order only (measured: slope 2.0 against 3.0 on
the Karras grid, ``tests/test_fewstep.py``). The order-2 step and the SDE variants agree with
diffusers to rounding on the same log-SNR grid.
"""

from __future__ import annotations

from typing import Any, List, Tuple

import torch
from torch import Tensor

from .._utils import append_dims
from .._validation import boolean, integer, probability
from ..score import score_to_x0
from .base import SolveContext, StepSolver
from .registry import register

#: Below this many steps the last two steps drop to orders 1 and 2 (``lower_order_final``), as in
#: diffusers' DPMSolverMultistepScheduler (DPM-Solver's own code uses 10).
LOWER_ORDER_FINAL_BELOW = 15


def multistep_order(order: int, i: int, n: int, lower_order_final: bool, below: int = LOWER_ORDER_FINAL_BELOW) -> int:
    """The order of step ``i`` of ``n`` of a multistep method of ``order``.

    Step ``i`` has ``i`` previous model outputs (warm start: orders 1, 2, ...). With
    ``lower_order_final`` and fewer than ``below`` steps, the last steps drop to orders 1, 2, ...:
    large final steps near the data are where high-order extrapolation goes wrong.
    """
    k = min(order, i + 1)
    if lower_order_final and n < below:
        k = min(k, n - i)
    return k


class DPMSolverPP(StepSolver):
    """DPM-Solver++(kM) multistep, data prediction; the base of ``dpmpp_2m``, ``dpmpp_3m`` and their SDE variants.

    Args:
        order: 1, 2 or 3 (``order = 1`` is DDIM for ``eta = 0``).
        lower_order_final: with fewer than 15 steps, take the last step at order 1 and the one before
            at order at most 2 (diffusers' rule; it stabilises few-step sampling).
        eta: noise of the SDE variant in ``[0, 1]``: 0 is the probability-flow ODE solver, 1 the
            SDE-DPM-Solver++ (only the ``_sde`` solvers take it).

    State: the step index and the last ``order - 1`` pairs ``(lambda, D)``.

    The output is the state at ``eps``: no final denoising step by default (``denoise=True``
    adds it), since at a fixed number of evaluations one more solver step is worth more.
    """

    name = "dpmpp"
    requires_kernel = True
    default_steps = 20
    default_grid = "log_snr"
    denoise_default = False  # the docs' "How to choose a solver": the final denoising step

    def __init__(self, order: int = 2, lower_order_final: bool = True, eta: float = 0.0):
        self.solver_order = integer(order, "order", minimum=1, maximum=3, need="1, 2 or 3")
        eta = probability(eta, "eta")
        self.lower_order_final = boolean(lower_order_final, "lower_order_final")
        self.eta = eta

    @property
    def stochastic(self) -> bool:  # type: ignore[override]
        return self.eta > 0

    @property
    def order(self) -> float:  # type: ignore[override]
        """The global order of the ODE solver (``eta = 0``); weak order 1 with noise."""
        return 1.0 if self.eta > 0 else float(self.solver_order)

    def init(self, ctx: SolveContext, x: Tensor, grid: Tensor) -> Any:
        return {"i": 0, "n": grid.shape[0] - 1, "history": []}

    def step(self, ctx: SolveContext, x: Tensor, t: Tensor, t_next: Tensor, state: Any) -> Tuple[Tensor, Any]:
        sde, nd = ctx.sde, x.ndim
        alpha_s, sigma_s = sde.marginal_coeffs(t)
        alpha_t, sigma_t = sde.marginal_coeffs(t_next)
        lam_s, lam_t = torch.log(alpha_s / sigma_s), torch.log(alpha_t / sigma_t)
        D0 = score_to_x0(sde, x, ctx.score(x, t), t)
        history: List[Tuple[Tensor, Tensor]] = state["history"] + [(lam_s, D0)]
        k = multistep_order(self.solver_order, state["i"], state["n"], self.lower_order_final)

        h = lam_t - lam_s
        h_eta = (1.0 + self.eta) * h
        one_minus = append_dims(-torch.expm1(-h_eta), nd)  # 1 - e^{-h_eta}
        x_next = append_dims(sigma_t / sigma_s * torch.exp(-self.eta * h), nd) * x + append_dims(alpha_t, nd) * one_minus * D0
        if k >= 2:
            lam_1, D1 = history[-2]
            r0 = append_dims((lam_s - lam_1) / h, nd)
            d1_0 = (D0 - D1) / r0
            if k == 2:
                correction = 0.5 * one_minus * d1_0
            else:
                lam_2, D2 = history[-3]
                r1 = append_dims((lam_1 - lam_2) / h, nd)
                d1_1 = (D1 - D2) / r1
                d1 = d1_0 + r0 / (r0 + r1) * (d1_0 - d1_1)
                d2 = (d1_0 - d1_1) / (r0 + r1)
                he = append_dims(h_eta, nd)
                phi_2 = -one_minus / he + 1
                phi_3 = phi_2 / he - 0.5
                correction = phi_2 * d1 - 2 * phi_3 * d2
            x_next = x_next + append_dims(alpha_t, nd) * correction
        if self.eta > 0:
            x_next = x_next + append_dims(sigma_t * (-torch.expm1(-2 * self.eta * h)).sqrt(), nd) * ctx.randn_like(x)
        keep = self.solver_order - 1
        return x_next, {"i": state["i"] + 1, "n": state["n"], "history": history[-keep:] if keep else []}


@register
class DPMSolverPP2M(DPMSolverPP):
    """DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2): second order, one score evaluation per step.

    See :class:`DPMSolverPP` for the update. Args: ``lower_order_final`` (default ``True``).
    """

    name = "dpmpp_2m"

    def __init__(self, lower_order_final: bool = True):
        super().__init__(order=2, lower_order_final=lower_order_final)


@register
class DPMSolverPP3M(DPMSolverPP):
    """DPM-Solver++(3M): third order multistep, one score evaluation per step.

    See :class:`DPMSolverPP` for the update. Args: ``lower_order_final`` (default ``True``).
    """

    name = "dpmpp_3m"

    def __init__(self, lower_order_final: bool = True):
        super().__init__(order=3, lower_order_final=lower_order_final)


@register
class DPMSolverPP2MSDE(DPMSolverPP):
    """SDE-DPM-Solver++(2M): the second-order multistep solver of the reverse SDE (``eta = 1``).

    ``eta`` in ``[0, 1]`` interpolates between the ODE solver (0) and the reverse SDE (1), as in
    DDIM; the noise is drawn from the solve's generator. Weak order 1 for ``eta > 0``.
    See :class:`DPMSolverPP` for the update.
    """

    name = "dpmpp_2m_sde"

    def __init__(self, eta: float = 1.0, lower_order_final: bool = True):
        super().__init__(order=2, lower_order_final=lower_order_final, eta=eta)


@register
class DPMSolverPP3MSDE(DPMSolverPP):
    """SDE-DPM-Solver++(3M): the third-order multistep update with the reverse SDE's noise (``eta = 1``).

    See :class:`DPMSolverPP2MSDE` for ``eta`` and :class:`DPMSolverPP` for the update.
    """

    name = "dpmpp_3m_sde"

    def __init__(self, eta: float = 1.0, lower_order_final: bool = True):
        super().__init__(order=3, lower_order_final=lower_order_final, eta=eta)
