"""Deterministic samplers: the probability-flow ODE through torchdiffeq, and DDIM."""

from __future__ import annotations

from typing import Any, List, Optional, Tuple

from torch import Tensor

from .._utils import append_dims
from .._validation import choice, finite_float, integer, probability
from ..flow import (
    ADAPTIVE_METHODS,
    DEFAULT_MAX_STEPS,
    FIXED_METHODS,
    PROBES,
    TIME_VARIABLES,
    TRACES,
    ProbabilityFlow,
    check_method,
    check_step_control,
    integrate_flow,
    make_divergence,
)
from ..score import eps_to_x0, score_to_eps
from .base import Callback, SolveContext, Solver, StepSolver
from .registry import register


@register
class ProbabilityFlowODE(Solver):
    """The probability-flow ODE ``dx/dt = f(x, t) - 1/2 g(t)^2 score(x, t)`` from ``T`` to ``eps``.

    Integrated by the probability-flow engine (:func:`scoresde.flow.integrate_flow`) on the data's device:
    torchdiffeq with one step for the batch, or a per-sample Dormand–Prince.

    Args:
        method: adaptive (``"dopri5"`` default, ``"dopri8"``, ``"bosh3"``, ``"fehlberg2"``,
            ``"adaptive_heun"``) or fixed-step (``"euler"``, ``"midpoint"``, ``"heun"``, ``"rk4"``,
            ``"heun3"``) on the time grid (``steps`` steps of ``grid``).
        rtol, atol: tolerances of the adaptive methods.
        max_steps: cap on adaptive steps (default 10,000; ``None`` lifts it). Reaching it raises
            :class:`~scoresde.errors.IntegrationError` naming this option.
        step_control: ``"shared"`` (one step size for the batch, torchdiffeq), ``"per_sample"``
            (each sample its own step, :func:`scoresde.flow.odeint_per_sample`; ``dopri5`` only)
            or ``None`` (default): per-sample when the solve has per-sample ``seeds``, so that sample
            ``i`` does not depend on its batch, shared otherwise.
        time_variable: ``"t"`` or ``"log_sigma"`` (integrate in ``u = log sigma(t)``, the log noise
            level; adaptive methods only, SDEs with a closed-form kernel).
        trace: the divergence for ``return_log_prob``: ``"exact"`` (``D`` basis VJPs: batched under a
            shared step, one by one under per-sample control so that results stay bitwise batch-invariant;
            for images prefer the other) or ``"hutchinson"`` (one probe per sample, drawn from the probe
            stream of the solve's noise source as :func:`scoresde.log_likelihood` draws its first: one VJP).
        probe: the Hutchinson probe distribution, ``"rademacher"`` (default) or ``"gaussian"``.

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
                 time_variable: str = "t", trace: str = "exact", probe: str = "rademacher"):
        check_method(method, rtol, atol)
        check_step_control(step_control, method)
        choice(time_variable, "time_variable", TIME_VARIABLES)
        choice(trace, "trace", TRACES)
        choice(probe, "probe", PROBES)
        self.method = method
        self.rtol = finite_float(rtol, "rtol", positive=True)
        self.atol = finite_float(atol, "atol", positive=True)
        self.max_steps = integer(max_steps, "max_steps", minimum=1, maximum=10**9, allow_none=True)
        self.step_control = step_control
        self.time_variable = time_variable
        self.trace = trace
        self.probe = probe

    def per_sample(self, ctx: SolveContext) -> bool:
        """Whether this solve steps each sample on its own: asked for, or implied by per-sample seeds (auto)."""
        if self.step_control is None:
            return self.method == "dopri5" and ctx.noise.batch_invariant
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
        per_sample = self.adaptive and self.per_sample(ctx)
        div = None
        if ctx.return_log_prob:  # per-sample control: plain backward per cotangent, bitwise the same in any batch
            div = make_divergence(self.trace, x, ctx.noise, self.probe, 1, vectorize=not per_sample)
        flow = ProbabilityFlow(ctx.sde, ctx.score, div, what=f"probability-flow ODE ({self.method})")
        times = grid if (record or callback is not None or not self.adaptive) else grid[[0, -1]]
        sol = integrate_flow(flow, x, times, method=self.method, rtol=self.rtol, atol=self.atol, max_steps=self.max_steps,
                             step_control="per_sample" if per_sample else "shared", time_variable=self.time_variable,
                             record=record, callback=callback)
        if ctx.return_log_prob:
            # d delta/dt = div v from T down to eps: log p_eps(x_eps) = log p_T(x_T) - delta(eps)
            ctx.log_prob = ctx.sde.prior_log_prob(x) - sol.delta.mean(0)
        return sol.y, sol.states


@register
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
        self.eta = probability(eta, "eta")

    @property
    def stochastic(self) -> bool:  # type: ignore[override]
        return self.eta > 0

    def step(self, ctx: SolveContext, x: Tensor, t: Tensor, t_next: Tensor, state: Any) -> Tuple[Tensor, Any]:
        _, std_t = ctx.sde.marginal_coeffs(t)
        scale_s, std_s = ctx.sde.marginal_coeffs(t_next)
        eps_hat = score_to_eps(ctx.sde, ctx.score(x, t), t)
        x0_hat = eps_to_x0(ctx.sde, x, eps_hat, t)
        if self.eta == 0.0:
            return append_dims(scale_s, x.ndim) * x0_hat + append_dims(std_s, x.ndim) * eps_hat, state
        _, v = ctx.sde.transition_coeffs(t_next, t)
        sigma = self.eta * v * std_s / std_t
        direction = (std_s * std_s - sigma * sigma).clamp_min(0).sqrt()
        x = append_dims(scale_s, x.ndim) * x0_hat + append_dims(direction, x.ndim) * eps_hat
        return x + append_dims(sigma, x.ndim) * ctx.randn_like(x), state
