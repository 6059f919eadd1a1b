"""Deterministic samplers: the probability-flow ODE through torchdiffeq, and DDIM."""

from __future__ import annotations

from typing import Any, List, Optional, Tuple

import torch
from torch import Tensor

from .._utils import append_dims
from .._validation import positive_int
from ..adaptive import TIME_VARIABLES
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
        step_control: ``"shared"`` (one step size for the batch, torchdiffeq), ``"per_sample"``
            (each sample its own step, :func:`scoresde.adaptive.odeint_per_sample`; ``dopri5`` only)
            or ``None`` (default): per-sample when the solve has per-sample ``seeds``, so that sample
            ``i`` does not depend on its batch, shared otherwise.
        time_variable: ``"t"`` or ``"log_sigma"`` (integrate in ``u = log sigma(t)``, the log noise
            level; adaptive methods only, SDEs with a closed-form kernel).
        trace: the divergence for ``return_log_prob``: ``"exact"`` (``D`` basis VJPs: batched under a
            shared step, one by one under per-sample control so that results stay bitwise batch-invariant;
            for images prefer the other) or ``"hutchinson"`` (one Gaussian probe per sample from the solve's
            noise source: one VJP).

    An adaptive method chooses its own steps: ``steps`` and ``grid`` then only set the times at
    which the trajectory is recorded (or the callback called), and :func:`scoresde.solve` refuses
    them otherwise.
    """

    name = "ode"
    stochastic = False
    default_steps = 100
    denoise_default = True

    supports_log_prob = True

    def __init__(self, method: str = "dopri5", rtol: float = 1e-5, atol: float = 1e-5,
                 max_steps: Optional[int] = DEFAULT_MAX_STEPS, step_control: Optional[str] = None,
                 time_variable: str = "t", trace: str = "exact"):
        check_method(method, rtol, atol)
        if step_control not in (None, "shared", "per_sample"):
            raise OptionError(f"step_control must be None (auto), 'shared' or 'per_sample', got {step_control!r}")
        if step_control == "per_sample" and method != "dopri5":
            raise OptionError(f"step_control='per_sample' is a per-sample Dormand-Prince 5(4): use method='dopri5', not {method!r}")
        if time_variable not in TIME_VARIABLES:
            raise OptionError(f"time_variable must be one of {TIME_VARIABLES}, got {time_variable!r}")
        if trace not in ("exact", "hutchinson"):
            raise OptionError(f"trace must be 'exact' or 'hutchinson', got {trace!r}")
        self.method = method
        self.rtol = float(rtol)
        self.atol = float(atol)
        self.max_steps = positive_int(max_steps, "max_steps", allow_none=True)
        self.step_control = step_control
        self.time_variable = time_variable
        self.trace = trace

    def per_sample(self, ctx: SolveContext) -> bool:
        """Whether this solve steps each sample on its own: asked for, or implied by per-sample seeds (auto)."""
        if self.step_control is None:
            return self.method == "dopri5" and bool(getattr(ctx.noise, "batch_invariant", False))
        return self.step_control == "per_sample"

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
        with_div = ctx.return_log_prob
        div = _divergence(ctx, x, self.trace) if with_div else None
        if div is not None and self.adaptive and self.per_sample(ctx):
            div._vectorize = False  # plain backward per cotangent: bitwise the same in any batch
        change = self._change_of_variable(ctx, grid)

        def rhs(tb: Tensor, y: Tensor, idx: Optional[Tensor]) -> Tuple[Tensor, Optional[Tensor]]:
            """Velocity (and divergence ``[b, 1]``) at per-sample times ``tb`` ``[b]``."""
            if not with_div:
                return reverse_drift(sde, y, tb, score(y, tb), 0.5), None
            with torch.enable_grad():
                yg = y.detach().requires_grad_(True)
                v = reverse_drift(sde, yg, tb, score(yg, tb), 0.5)
                d = div(v, yg, idx)  # [n, b]
            return v.detach(), d.detach().mean(0, keepdim=True).T

        def velocity(t: Tensor, state):
            nonlocal first_bad_t
            y = state[0] if with_div else state
            # torchdiffeq's first-step guess may probe just outside [eps, T]; keep the SDE inside it
            if change is None:
                # (after a step-size underflow torchdiffeq may pass a NaN time: the underflow error reports it)
                tb, scale = torch.nan_to_num(t.to(y.dtype), nan=float(t_lo)).clamp(t_lo, t_hi).expand(B), None
            else:
                tb = change.time(t.to(torch.float64).expand(B)).to(y.dtype)
                scale = change.dt_du(tb.double()).to(y.dtype)
            v, d = rhs(tb, y, None)
            if scale is not None:
                v = v * append_dims(scale, v.ndim)
                d = None if d is None else d * scale[:, None]
            bad = ~torch.isfinite(v).all() & torch.isnan(first_bad_t)
            first_bad_t = torch.where(bad, t.to(first_bad_t.dtype), first_bad_t)
            return (v, d) if with_div else v

        if self.adaptive and self.per_sample(ctx):
            return self._integrate_per_sample(ctx, x, grid, record, callback, rhs, change)
        t_eval = grid if (record or callback is not None or not self.adaptive) else grid[[0, -1]]
        t_int = t_eval if change is None else change.u_of(t_eval)
        y0 = (x, x.new_zeros(B, 1)) if with_div else x
        ys = odeint_checked(velocity, y0, t_int, self.method, rtol=self.rtol, atol=self.atol, max_steps=self.max_steps,
                            grid=None if change is None else change.u_of(grid),
                            on_failure=lambda: self._raise_if_bad(first_bad_t))
        self._raise_if_bad(first_bad_t)
        if with_div:
            ys, deltas = ys
            # d delta/dt = div v, delta(T) = 0: log p_eps(x_eps) = log p_T(x_T) - delta(eps)
            ctx.log_prob = sde.prior_log_prob(x) - deltas[-1][:, 0]
        if callback is not None:
            for i in range(1, ys.shape[0]):
                callback(i - 1, t_eval[i], ys[i])
        return ys[-1], (list(ys) if record else None)

    def _change_of_variable(self, ctx: SolveContext, grid: Tensor) -> Optional["_LogSigma"]:
        if self.time_variable == "t":
            return None
        if not ctx.sde.has_kernel:
            raise OptionError(f"time_variable={self.time_variable!r} needs an SDE with a closed-form kernel; use 't'")
        return _LogSigma(ctx.sde, float(grid[-1]), float(grid[0]))

    def _integrate_per_sample(self, ctx, x, grid, record, callback, rhs, change):
        """Each sample its own Dormand–Prince step; with a recorded trajectory, segment by segment over the grid."""
        from ..adaptive import odeint_per_sample

        B, with_div = x.shape[0], ctx.return_log_prob

        def f(tv: Tensor, y, idx: Tensor):
            if change is None:
                tb, scale = tv.to(x.dtype), None
            else:
                tb = change.time(tv).to(x.dtype)
                scale = change.dt_du(tb.double()).to(x.dtype)
            v, d = rhs(tb, y[0], idx)
            if scale is not None:
                v = v * append_dims(scale, v.ndim)
                d = None if d is None else d * scale[:, None]
            return (v, d) if with_div else (v,)

        seg = grid if (record or callback is not None) else grid[[0, -1]]
        knots = [float(v) for v in (seg.double() if change is None else change.u_of(seg.double()))]
        y = (x, x.new_zeros(B, 1)) if with_div else (x,)
        states = [x]
        for i in range(len(knots) - 1):
            res = odeint_per_sample(f, y, knots[i], knots[i + 1], rtol=self.rtol, atol=self.atol, max_steps=self.max_steps)
            y = res.y
            if not bool(torch.isfinite(y[0]).all()):
                raise NonFiniteError(
                    f"probability-flow ODE (per-sample dopri5): non-finite state by t = {float(seg[i + 1]):.6g}; "
                    "check the score function for NaN/inf or raise eps"
                )
            states.append(y[0])
            if callback is not None:
                callback(i, seg[i + 1], y[0])
        if with_div:
            ctx.log_prob = ctx.sde.prior_log_prob(x) - y[1][:, 0]
        return y[0], (states if record else None)

    def _raise_if_bad(self, first_bad_t: Tensor) -> None:
        if not bool(torch.isnan(first_bad_t)):
            raise NonFiniteError(
                f"probability-flow ODE ({self.method}): non-finite velocity at t = {float(first_bad_t):.6g}; "
                "check the score function for NaN/inf or raise eps"
            )


class _LogSigma:
    """``u = log sigma(t)`` (sigma = noise-to-signal ratio) as the integration variable, in float64."""

    def __init__(self, sde, t_lo: float, t_hi: float):
        from ..adaptive import LogNoiseLevel

        self._c = LogNoiseLevel(sde, t_lo, t_hi)

    def u_of(self, t: Tensor) -> Tensor:
        return torch.log(self._c.sde.noise_to_signal(t.to(torch.float64)))

    def time(self, u: Tensor) -> Tensor:
        return self._c.time(u.to(torch.float64))

    def dt_du(self, t: Tensor) -> Tensor:
        return self._c.dt_du(t)


def _divergence(ctx: SolveContext, x: Tensor, trace: str):
    """The likelihood's divergence operator, with per-sample Hutchinson probes from the solve's noise source."""
    from ..likelihood import _EXACT_CHUNK_ELEMENTS, _Divergence

    if trace == "hutchinson":
        return _Divergence("hutchinson", ctx.randn_like(x).unsqueeze(0), chunk_size=1)
    D = x[0].numel()
    return _Divergence("exact", None, chunk_size=max(1, min(D, _EXACT_CHUNK_ELEMENTS // (x.shape[0] * D))))


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
