"""Deterministic samplers: the probability-flow ODE through torchdiffeq, and DDIM."""

from __future__ import annotations

from typing import Any, List, Optional, Tuple

import torch
from torch import Tensor

from .._utils import append_dims
from .._validation import positive_int
from ..errors import NonFiniteError, OptionError
from ..sde.base import reverse_drift
from .base import Callback, SolveContext, Solver, StepSolver
from .odeint import ADAPTIVE_METHODS, DEFAULT_MAX_STEPS, FIXED_METHODS, check_method, odeint_checked


class ProbabilityFlowODE(Solver):
    """The probability-flow ODE ``dx/dt = f(x, t) - 1/2 g(t)^2 score(x, t)`` from ``T`` to ``eps``.

    Integrated with torchdiffeq on the data's device.

    Args:
        method: adaptive (``"dopri5"`` default, ``"dopri8"``, ``"bosh3"``, ``"fehlberg2"``,
            ``"adaptive_heun"``) or fixed-step (``"euler"``, ``"midpoint"``, ``"heun"``, ``"rk4"``,
            ``"heun3"``) on the time grid (``steps`` steps of ``grid``).
        rtol, atol: tolerances of the adaptive methods.
        max_steps: cap on adaptive steps (default 10,000; ``None`` lifts it). Reaching it raises
            :class:`~scoresde.errors.IntegrationError` naming this option.

    An adaptive method chooses its own steps: ``steps`` and ``grid`` then only set the times at
    which the trajectory is recorded (or the callback called), and :func:`scoresde.solve` refuses
    them otherwise.
    """

    name = "ode"
    stochastic = False
    default_steps = 100
    denoise_default = True

    def __init__(self, method: str = "dopri5", rtol: float = 1e-5, atol: float = 1e-5,
                 max_steps: Optional[int] = DEFAULT_MAX_STEPS):
        check_method(method, rtol, atol)
        self.method = method
        self.rtol = float(rtol)
        self.atol = float(atol)
        self.max_steps = positive_int(max_steps, "max_steps", allow_none=True)

    @property
    def adaptive(self) -> bool:  # type: ignore[override]
        """Whether the method chooses its own steps (then the grid sets only the recorded times)."""
        return self.method in ADAPTIVE_METHODS

    @property
    def order(self) -> float:  # type: ignore[override]
        return float(FIXED_METHODS.get(self.method) or ADAPTIVE_METHODS[self.method])

    def integrate(
        self, ctx: SolveContext, x: Tensor, grid: Tensor, record: bool, callback: Optional[Callback]
    ) -> Tuple[Tensor, Optional[List[Tensor]]]:
        sde, score = ctx.sde, ctx.score
        B = x.shape[0]
        first_bad_t = torch.full((), float("nan"), device=x.device, dtype=x.dtype)
        t_lo, t_hi = grid[-1], grid[0]

        def velocity(t: Tensor, y: Tensor) -> Tensor:
            nonlocal first_bad_t
            # torchdiffeq's first-step guess may probe just outside [eps, T]; keep the SDE inside it
            # (after a step-size underflow torchdiffeq may pass a NaN time: the underflow error reports it)
            tb = torch.nan_to_num(t.to(y.dtype), nan=float(t_lo)).clamp(t_lo, t_hi).expand(B)
            v = reverse_drift(sde, y, tb, score(y, tb), 0.5)
            bad = ~torch.isfinite(v).all() & torch.isnan(first_bad_t)
            first_bad_t = torch.where(bad, t.to(first_bad_t.dtype), first_bad_t)
            return v

        t_eval = grid if (record or callback is not None or not self.adaptive) else grid[[0, -1]]
        ys = odeint_checked(velocity, x, t_eval, self.method, rtol=self.rtol, atol=self.atol, max_steps=self.max_steps,
                            on_failure=lambda: self._raise_if_bad(first_bad_t))
        self._raise_if_bad(first_bad_t)
        if callback is not None:
            for i in range(1, ys.shape[0]):
                callback(i - 1, t_eval[i], ys[i])
        return ys[-1], (list(ys) if record else None)

    def _raise_if_bad(self, first_bad_t: Tensor) -> None:
        if not bool(torch.isnan(first_bad_t)):
            raise NonFiniteError(
                f"probability-flow ODE ({self.method}): non-finite velocity at t = {float(first_bad_t):.6g}; "
                "check the score function for NaN/inf or raise eps"
            )


class DDIM(StepSolver):
    """DDIM (Song, Meng & Ermon 2020), deterministic for ``eta = 0``.

    From ``t`` to ``s < t`` with the kernel coefficients ``scale``, ``std``::

        eps_hat = -std(t) score(x, t)
        x0_hat  = (x - std(t) eps_hat) / scale(t)
        x_s     = scale(s) x0_hat + sqrt(std(s)^2 - sigma^2) eps_hat + sigma z

    with ``sigma = eta * v std(s) / std(t)`` (``eta = 1``: the ancestral posterior variance).
    Serves every SDE with a Gaussian kernel: VP and sub-VP (the DDIM of the paper) and VE, where
    it is the first-order exponential integrator of the probability-flow ODE.
    """

    name = "ddim"
    requires_kernel = True
    order = 1.0
    default_steps = 50

    def __init__(self, eta: float = 0.0):
        if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not 0.0 <= eta <= 1.0:
            raise OptionError(f"eta must lie in [0, 1], got {eta}")
        self.eta = float(eta)

    @property
    def stochastic(self) -> bool:  # type: ignore[override]
        return self.eta > 0

    def step(self, ctx: SolveContext, x: Tensor, t: Tensor, t_next: Tensor, state: Any) -> Tuple[Tensor, Any]:
        scale_t, std_t = ctx.sde.marginal_coeffs(t)
        scale_s, std_s = ctx.sde.marginal_coeffs(t_next)
        eps_hat = -append_dims(std_t, x.ndim) * ctx.score(x, t)
        x0_hat = (x - append_dims(std_t, x.ndim) * eps_hat) / append_dims(scale_t, x.ndim)
        if self.eta == 0.0:
            return append_dims(scale_s, x.ndim) * x0_hat + append_dims(std_s, x.ndim) * eps_hat, state
        _, v = ctx.sde.transition_coeffs(t_next, t)
        sigma = self.eta * v * std_s / std_t
        direction = (std_s * std_s - sigma * sigma).clamp_min(0).sqrt()
        x = append_dims(scale_s, x.ndim) * x0_hat + append_dims(direction, x.ndim) * eps_hat
        return x + append_dims(sigma, x.ndim) * ctx.randn_like(x), state
