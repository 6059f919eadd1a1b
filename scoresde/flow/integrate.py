"""The one integrate entry of the probability-flow ODE: shared steps (torchdiffeq) or per-sample steps.

:func:`integrate_flow` carries ``x`` (and, when the flow has a divergence, the running integral of the
divergence) from ``times[0]`` to ``times[-1]`` in either direction, recording the state at every entry of
``times``. It serves the likelihood (``eps -> T``), the ODE sampler (``T -> eps``) and the sampler's
log-density along its own path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Optional

import torch
from torch import Tensor

from .._utils import append_dims
from ..errors import IntegrationError, NonFiniteError, OptionError
from .dopri import odeint_per_sample
from .odeint import ADAPTIVE_METHODS, DEFAULT_MAX_STEPS, check_method, odeint_checked
from .timevar import LogNoiseLevel, check_time_variable
from .velocity import ProbabilityFlow

__all__ = ["STEP_CONTROLS", "FlowSolution", "integrate_flow", "check_step_control"]

#: How an adaptive method chooses steps: one step size for the batch, or one per sample.
STEP_CONTROLS = ("shared", "per_sample")


@dataclass
class FlowSolution:
    """What :func:`integrate_flow` returns.

    Attributes:
        y: the state at ``times[-1]``, ``[B, *event]``.
        delta: with a divergence, ``int_{times[0]}^{times[-1]} div v dt`` per probe, ``[n, B]``; else ``None``.
        states: the states at every entry of ``times``, ``[len(times), B, *event]`` (``None`` unless recorded).
        nfe_per_sample: with per-sample steps, each sample's right-hand-side evaluations, ``[B]``; else ``None``.
    """

    y: Tensor
    delta: Optional[Tensor]
    states: Optional[List[Tensor]]
    nfe_per_sample: Optional[Tensor] = None


def check_step_control(step_control: Optional[str], method: str) -> Optional[str]:
    """Validate a ``step_control`` option (``None``, ``"shared"`` or ``"per_sample"``) for ``method``."""
    if step_control is not None and step_control not in STEP_CONTROLS:
        raise OptionError(f"step_control must be None (auto), 'shared' or 'per_sample', got {step_control!r}")
    if step_control == "per_sample" and method != "dopri5":
        raise OptionError(f"step_control='per_sample' is a per-sample Dormand-Prince 5(4): use method='dopri5', not {method!r}")
    return step_control


def integrate_flow(
    flow: ProbabilityFlow,
    x: Tensor,
    times: Tensor,
    *,
    method: str = "dopri5",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    max_steps: Optional[int] = DEFAULT_MAX_STEPS,
    step_control: str = "shared",
    time_variable: str = "t",
    grid: Optional[Tensor] = None,
    steps: Optional[int] = None,
    record: bool = False,
    callback: Optional[Callable[[int, Tensor, Tensor], None]] = None,
) -> FlowSolution:
    """Integrate the probability flow (and its divergence) over ``times``.

    Args:
        flow: the velocity (and divergence) to integrate.
        x: the state at ``times[0]``, ``[B, *event]``; its dtype is the dtype of the state.
        times: the output times, 1-D and monotone (increasing or decreasing); shared steps work in ``x``'s dtype,
            per-sample steps in float64 (pass float64 times to start and end at exact values).
        method: a torchdiffeq method (adaptive or fixed-step; see :mod:`scoresde.flow.odeint`).
        rtol, atol, max_steps: the adaptive methods' tolerances and cap on attempts.
        step_control: ``"shared"`` (torchdiffeq: one step for the batch) or ``"per_sample"`` (a per-sample
            Dormand–Prince 5(4): each sample steps on its own, so its result does not depend on its batch).
        time_variable: ``"t"`` or ``"log_sigma"`` (integrate in ``u = log sigma(t)``).
        grid: the step grid of a fixed-step method, in ``t`` (default: ``times``).
        steps: instead of ``grid``, ``steps`` uniform steps of a fixed-step method in the integration variable.
        record: keep the states at ``times``.
        callback: called as ``callback(i, times[i + 1], state)`` for every output interval.

    Raises:
        NonFiniteError: a non-finite velocity, divergence or state.
        IntegrationError: the adaptive method failed (step-size underflow, more than ``max_steps`` steps).
    """
    check_method(method, rtol, atol)
    change = LogNoiseLevel(flow.sde, float(times.min()), float(times.max())) if check_time_variable(
        time_variable, flow.sde) != "t" else None
    try:
        if step_control == "per_sample":
            sol = _per_sample(flow, x, times, change, rtol, atol, max_steps, record, callback)
        else:
            sol = _shared(flow, x, times, change, method, rtol, atol, max_steps, grid, steps, record, callback)
    except (IntegrationError, NonFiniteError):
        flow.raise_if_bad()  # the monitor knows where it went wrong first
        raise
    flow.raise_if_bad()
    if not bool(torch.isfinite(sol.y).all()):
        raise NonFiniteError(f"{flow.what}: non-finite state at t = {float(times[-1]):.6g}; check the score function")
    return sol


def _shared(flow, x, times, change, method, rtol, atol, max_steps, grid, steps, record, callback) -> FlowSolution:
    """One step size for the batch, through torchdiffeq; the divergence state is ``[n, B]``."""
    B, dtype = x.shape[0], x.dtype
    times = times.to(device=x.device, dtype=dtype)
    lo, hi = float(times.min()), float(times.max())

    def func(s: Tensor, state):
        y = state[0] if flow.with_divergence else state
        if change is None:  # an adaptive step may probe just outside [lo, hi] (or at NaN after an underflow)
            tb, c = torch.nan_to_num(s, nan=lo).clamp(lo, hi).expand(B), None
        else:
            t = change.time(s.reshape(1))
            tb, c = t[0].to(dtype).expand(B), change.dt_du(t).to(dtype)[0]
        v, d = flow(y, tb, report_t=s if change is None else t[0])
        if c is not None:
            v, d = v * c, (None if d is None else d * c)
        return (v, d) if flow.with_divergence else v

    s_out = times if change is None else change.u_of(times).to(dtype)
    s_grid = None if grid is None else (grid if change is None else change.u_of(grid).to(dtype))
    if s_grid is None and steps is not None and method not in ADAPTIVE_METHODS:
        s_grid = torch.linspace(float(s_out[0]), float(s_out[-1]), steps + 1, device=x.device, dtype=dtype)
    y0 = (x, x.new_zeros(flow.divergence.n, B)) if flow.with_divergence else x
    with torch.no_grad():
        out = odeint_checked(func, y0, s_out, method, rtol=rtol, atol=atol, max_steps=max_steps, grid=s_grid)
    ys, deltas = out if flow.with_divergence else (out, None)
    if callback is not None:
        for i in range(1, ys.shape[0]):
            callback(i - 1, times[i], ys[i])
    return FlowSolution(y=ys[-1], delta=None if deltas is None else deltas[-1], states=list(ys) if record else None)


def _per_sample(flow, x, times, change, rtol, atol, max_steps, record, callback) -> FlowSolution:
    """Each sample its own Dormand–Prince step, segment by segment over ``times``; the divergence state is ``[B, n]``."""
    B, dtype = x.shape[0], x.dtype
    lo, hi = float(times.min()), float(times.max())

    def f(sv: Tensor, y, idx: Tensor):
        t = sv if change is None else change.time(sv)
        v, d = flow(y[0], t.to(dtype).clamp(lo, hi), idx)
        if change is not None:
            c = change.dt_du(t).to(dtype)
            v, d = v * append_dims(c, v.ndim), (None if d is None else d * c[None, :])
        return (v,) if d is None else (v, d.T)

    knots = [float(v) for v in (times.double() if change is None else change.u_of(times))]
    y = (x, x.new_zeros(B, flow.divergence.n)) if flow.with_divergence else (x,)
    states, nfe = [x], torch.zeros(B, dtype=torch.int64, device=x.device)
    with torch.no_grad():
        for i in range(len(knots) - 1):
            res = odeint_per_sample(f, y, knots[i], knots[i + 1], rtol=rtol, atol=atol, max_steps=max_steps)
            y, nfe = res.y, nfe + res.nfe
            if not bool(torch.isfinite(y[0]).all()):
                raise NonFiniteError(f"{flow.what}: non-finite state by t = {float(times[i + 1]):.6g}; "
                                     "check the score function for NaN/inf or raise eps")
            states.append(y[0])
            if callback is not None:
                callback(i, times[i + 1], y[0])
    return FlowSolution(y=y[0], delta=y[1].T if flow.with_divergence else None, states=states if record else None,
                        nfe_per_sample=nfe)

