"""Deterministic samplers: the probability-flow ODE through torchdiffeq, and DDIM."""

from __future__ import annotations

from typing import List, Optional

import torch
from torch import Tensor
from torchdiffeq import odeint

from .._utils import append_dims, randn_like
from ..errors import IntegrationError, NonFiniteError
from .base import Callback, SolveContext, Solver

#: Fixed-step methods and their orders; ``heun`` is torchdiffeq's ``heun2``.
FIXED_METHODS = {"euler": 1, "midpoint": 2, "heun": 2, "heun2": 2, "heun3": 3, "rk4": 4}
#: Adaptive methods and their orders.
ADAPTIVE_METHODS = {"dopri5": 5, "dopri8": 8, "bosh3": 3, "fehlberg2": 2, "adaptive_heun": 2}
_TORCHDIFFEQ_NAME = {"heun": "heun2"}


class ProbabilityFlowODE(Solver):
    """The probability-flow ODE ``dx/dt = f(x, t) - 1/2 g(t)^2 score(x, t)`` from ``T`` to ``eps``.

    Integrated with torchdiffeq on the data's device.

    Args:
        method: adaptive (``"dopri5"`` default, ``"dopri8"``, ``"bosh3"``, ``"fehlberg2"``,
            ``"adaptive_heun"``) or fixed-step (``"euler"``, ``"midpoint"``, ``"heun"``, ``"rk4"``,
            ``"heun3"``) on a uniform grid of ``steps`` steps.
        rtol, atol: tolerances of the adaptive methods.
        max_steps: cap on adaptive steps (``None``: torchdiffeq's default).
    """

    name = "ode"
    stochastic = False
    default_steps = 100

    def __init__(self, method: str = "dopri5", rtol: float = 1e-5, atol: float = 1e-5, max_steps: Optional[int] = None):
        super().__init__()
        if method not in FIXED_METHODS and method not in ADAPTIVE_METHODS:
            valid = ", ".join(list(ADAPTIVE_METHODS) + list(FIXED_METHODS))
            raise ValueError(f"unknown ODE method {method!r}; valid methods: {valid}")
        if not (rtol > 0 and atol > 0):
            raise ValueError(f"rtol and atol must be positive, got rtol={rtol}, atol={atol}")
        self.method = method
        self.rtol = float(rtol)
        self.atol = float(atol)
        self.max_steps = max_steps

    @property
    def adaptive(self) -> bool:
        """Whether the method chooses its own steps (then ``steps`` sets only the recorded grid)."""
        return self.method in ADAPTIVE_METHODS

    @property
    def order(self) -> float:  # type: ignore[override]
        return float(FIXED_METHODS.get(self.method) or ADAPTIVE_METHODS[self.method])

    def integrate(
        self, ctx: SolveContext, x: Tensor, grid: Tensor, record: bool, callback: Optional[Callback]
    ) -> "tuple[Tensor, Optional[List[Tensor]]]":
        sde, score = ctx.sde, ctx.score
        B, ndim = x.shape[0], x.ndim
        first_bad_t = torch.full((), float("nan"), device=x.device, dtype=x.dtype)

        t_lo, t_hi = grid[-1], grid[0]

        def velocity(t: Tensor, y: Tensor) -> Tensor:
            nonlocal first_bad_t
            # torchdiffeq's first-step guess may probe just outside [eps, T]; keep the SDE inside it
            tb = t.to(y.dtype).clamp(t_lo, t_hi).expand(B)
            g = append_dims(sde.diffusion(tb), ndim)
            v = sde.drift(y, tb) - 0.5 * g * g * score(y, tb)
            bad = ~torch.isfinite(v).all() & torch.isnan(first_bad_t)
            first_bad_t = torch.where(bad, t.to(first_bad_t.dtype), first_bad_t)
            return v

        options = {}
        if self.adaptive:
            # Stop exactly at eps: without this, dopri5 steps past the end (into t < 0, where a
            # schedule may be undefined) and interpolates back.
            options["jump_t"] = grid[-1:]
            if self.max_steps is not None:
                options["max_num_steps"] = int(self.max_steps)
            kwargs = dict(rtol=self.rtol, atol=self.atol)
        else:
            options["grid_constructor"] = lambda func, y0, t: grid
            kwargs = {}
        t_eval = grid if (record or callback is not None) else grid[[0, -1]]
        try:
            ys = odeint(velocity, x, t_eval, method=_TORCHDIFFEQ_NAME.get(self.method, self.method), options=options, **kwargs)
        except AssertionError as e:  # torchdiffeq reports failures with asserts
            self._raise_if_bad(first_bad_t)
            raise ode_failure(e, self.method, self.max_steps) from None
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


class DDIM(Solver):
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
        super().__init__()
        if not 0.0 <= eta <= 1.0:
            raise ValueError(f"eta must lie in [0, 1], got {eta}")
        self.eta = float(eta)

    @property
    def stochastic(self) -> bool:  # type: ignore[override]
        return self.eta > 0

    def step(self, ctx: SolveContext, x: Tensor, t: Tensor, t_next: Tensor) -> Tensor:
        scale_t, std_t = ctx.sde.marginal_coeffs(t)
        scale_s, std_s = ctx.sde.marginal_coeffs(t_next)
        eps_hat = -append_dims(std_t, x.ndim) * ctx.score(x, t)
        x0_hat = (x - append_dims(std_t, x.ndim) * eps_hat) / append_dims(scale_t, x.ndim)
        if self.eta == 0.0:
            return append_dims(scale_s, x.ndim) * x0_hat + append_dims(std_s, x.ndim) * eps_hat
        _, v = ctx.sde.transition_coeffs(t_next, t)
        sigma = self.eta * v * std_s / std_t
        direction = (std_s * std_s - sigma * sigma).clamp_min(0).sqrt()
        x = append_dims(scale_s, x.ndim) * x0_hat + append_dims(direction, x.ndim) * eps_hat
        return x + append_dims(sigma, x.ndim) * randn_like(x, ctx.generator)


def ode_failure(e: AssertionError, method: str, max_steps: Optional[int]) -> Exception:
    """Translate torchdiffeq's assertion failures into a clear scoresde error."""
    msg = str(e)
    if "max_num_steps" in msg:
        return IntegrationError(
            f"ODE integration ({method}) exceeded max_steps={max_steps}; raise max_steps or loosen rtol/atol"
        )
    if "non-finite" in msg:
        return NonFiniteError(f"ODE integration ({method}): non-finite values in the state; check the score function")
    if "underflow" in msg:
        return IntegrationError(
            f"ODE integration ({method}): step size underflow ({msg}); loosen rtol/atol, raise eps, or check the score function"
        )
    return IntegrationError(f"ODE integration ({method}) failed: {msg[:200]}")
