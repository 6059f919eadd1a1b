"""UniPC (Zhao et al. 2023, "UniPC: A Unified Predictor-Corrector Framework for Fast Sampling of Diffusion Models").

Data prediction ``D = x0(x, t)`` in the half log-SNR ``lambda = log(alpha / sigma)`` of the kernel,
written once for every SDE with a closed-form kernel. From ``s`` to ``t`` with
``h = lambda_t - lambda_s``, the previous data predictions ``D_{s_m}`` at ``r_m = (lambda_{s_m} - lambda_s) / h``
and ``B(h) = -h`` (``bh1``) or ``e^{-h} - 1`` (``bh2``):

* UniP-p (predictor, order ``p``)::

      x_t = (sigma_t / sigma_s) x_s + alpha_t (1 - e^{-h}) D_s - alpha_t B(h) sum_m a_m (D_{s_m} - D_s) / r_m

  where ``a`` solves the order conditions ``sum_m a_m r_m^(k-1) = g_k``, ``k = 1 .. p - 1``, with
  ``g_k = k! h phi_{k+1}(h) / B(h)`` the paper's moments of the exponential integrator
  (``a = 1/2`` for ``p = 2``: then UniP-2 with ``bh2`` is DPM-Solver++(2M)).
* UniC-p (corrector): the same update once ``D_t`` is known, with the extra node ``r = 1`` and
  all ``p`` conditions::

      x_t^c = (sigma_t / sigma_s) x_s + alpha_t (1 - e^{-h}) D_s
              - alpha_t B(h) [sum_m a^c_m (D_{s_m} - D_s) / r_m + a^c_p (D_t - D_s)]

  ``D_t`` is the data prediction at the predicted ``x_t``: the evaluation that the next
  predictor step needs anyway, so the corrector costs no extra evaluation. UniPC-p (UniP-p then
  UniC-p) has order ``p + 1``.

In the step loop, a step first evaluates the score at its (predicted) state, corrects that state
with UniC, then predicts the next one with UniP; the corrector is skipped after the last step,
whose prediction is the output. The recorded trajectory therefore holds the predictions.
With ``lower_order_final`` (the reference code's default) the last step is UniP-1 (DDIM), so the
formal order is 2; its error constant is small when the last step is short in log-SNR (the
default log-SNR grid, or the Karras grid), and the tests measure order ``p + 1`` there.
"""

from __future__ import annotations

import math
from typing import Any, List, Tuple

import torch
from torch import Tensor

from .._utils import append_dims
from .._validation import boolean, choice, integer
from ..score import score_to_x0
from .base import SolveContext, StepSolver
from .dpmpp import multistep_order
from .registry import register


def _coefficients(rks: Tensor, h: Tensor, variant: str) -> Tuple[Tensor, Tensor, Tensor]:
    """The moment system of UniPC (data prediction): ``R [B, K, K]``, ``b [B, K]`` and ``B(h) [B]``.

    ``rks``: ``[B, K]`` node ratios (the last one 1 for the corrector). Row ``k`` of ``R`` is
    ``r^k``; ``b_k = (k + 1)! h phi_{k+2}(-h) / B(h)`` in the paper's notation, computed by the
    recurrence ``phi_{k+1} = (phi_k - 1 / k!) / hh`` with ``hh = -h``.
    """
    hh = -h
    h_phi_k = torch.expm1(hh) / hh - 1
    B_h = hh if variant == "bh1" else torch.expm1(hh)
    K = rks.shape[1]
    R, b = [], []
    factorial = 1
    for k in range(1, K + 1):
        R.append(rks ** (k - 1))
        b.append(h_phi_k * factorial / B_h)
        factorial *= k + 1
        h_phi_k = h_phi_k / hh - 1 / factorial
    return torch.stack(R, dim=1), torch.stack(b, dim=1), B_h


@register
class UniPC(StepSolver):
    """UniPC multistep sampler: UniP-``order`` predictor and UniC corrector (data prediction).

    Args:
        order: the predictor's order ``p`` in 1..3; with the corrector the method has order ``p + 1``.
        variant: ``"bh2"`` (``B(h) = e^{-h} - 1``, diffusers' default) or ``"bh1"`` (``B(h) = -h``,
            recommended by the paper for unconditional sampling at very few steps).
        corrector: apply UniC after every step but the last (no extra evaluation).
        lower_order_final: the last steps use orders ``min(p, steps - i)`` (as UniPC's code and diffusers do).

    State: the step index, the last ``p`` pairs ``(lambda, D)``, and the previous state and order for the corrector.
    """

    name = "unipc"
    stochastic = False
    requires_kernel = True
    default_steps = 20
    default_grid = "log_snr"
    denoise_default = False  # the docs' "How to choose a solver": the final denoising step

    def __init__(self, order: int = 2, variant: str = "bh2", corrector: bool = True, lower_order_final: bool = True):
        self.solver_order = integer(order, "order", minimum=1, maximum=3, need="1, 2 or 3")
        self.variant = choice(variant, "variant", ("bh1", "bh2"))
        self.corrector = boolean(corrector, "corrector")
        self.lower_order_final = boolean(lower_order_final, "lower_order_final")

    @property
    def order(self) -> float:  # type: ignore[override]
        """``p + 1`` with the corrector, ``p`` without."""
        return float(self.solver_order + (1 if self.corrector else 0))

    def init(self, ctx: SolveContext, x: Tensor, grid: Tensor) -> Any:
        return {"i": 0, "n": grid.shape[0] - 1, "history": [], "last": None}

    def _update(self, x: Tensor, lam_s: Tensor, lam_t: Tensor, alpha_t: Tensor, ratio: Tensor,
                history: List[Tuple[Tensor, Tensor]], order: int, D_t: Tensor = None) -> Tensor:
        """UniP-``order`` from ``s`` (``history[-1]``) to ``t``; UniC-``order`` when ``D_t`` is given."""
        nd = x.ndim
        D_s = history[-1][1]
        h = lam_t - lam_s
        rks, D1s = [], []
        for m in range(1, order):
            lam_m, D_m = history[-(m + 1)]
            r = (lam_m - lam_s) / h
            rks.append(r)
            D1s.append((D_m - D_s) / append_dims(r, nd))
        rks.append(torch.ones_like(h))  # the node r = 1 of D_t (used by the corrector only)
        x_t = append_dims(ratio, nd) * x - append_dims(alpha_t * torch.expm1(-h), nd) * D_s
        if D_t is None and order == 1:
            return x_t
        R, b, B_h = _coefficients(torch.stack(rks, dim=1), h, self.variant)
        if D_t is None:  # predictor: the first order - 1 moments
            rhos = torch.full_like(b[:, :1], 0.5) if order == 2 else torch.linalg.solve(R[:, :-1, :-1], b[:, :-1])
            terms = D1s
        else:  # corrector: all order moments, with D_t at r = 1
            rhos = torch.full_like(b[:, :1], 0.5) if order == 1 else torch.linalg.solve(R, b)
            terms = D1s + [D_t - D_s]
        res = sum(append_dims(rhos[:, m], nd) * terms[m] for m in range(len(terms)))
        return x_t - append_dims(alpha_t * B_h, nd) * res

    def step(self, ctx: SolveContext, x: Tensor, t: Tensor, t_next: Tensor, state: Any) -> Tuple[Tensor, Any]:
        sde = ctx.sde
        alpha_s, sigma_s = sde.marginal_coeffs(t)
        lam_s = torch.log(alpha_s / sigma_s)
        D_s = score_to_x0(sde, x, ctx.score(x, t), t)  # at the predicted state: the corrector reuses it
        history = state["history"]
        if self.corrector and state["last"] is not None:  # UniC: correct the prediction that led here
            x_last, lam_last, sigma_last, k_last = state["last"]
            x = self._update(x_last, lam_last, lam_s, alpha_s, sigma_s / sigma_last, history, k_last, D_t=D_s)
        history = (history + [(lam_s, D_s)])[-self.solver_order:]
        k = multistep_order(self.solver_order, state["i"], state["n"], self.lower_order_final, below=math.inf)
        alpha_t, sigma_t = sde.marginal_coeffs(t_next)
        lam_t = torch.log(alpha_t / sigma_t)
        x_next = self._update(x, lam_s, lam_t, alpha_t, sigma_t / sigma_s, history, k)
        return x_next, {"i": state["i"] + 1, "n": state["n"], "history": history, "last": (x, lam_s, sigma_s, k)}
