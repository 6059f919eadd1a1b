"""Per-sample adaptive integration: an embedded Runge–Kutta method where every sample has its own step.

A shared-step adaptive solver (torchdiffeq's ``dopri5`` on a batch) takes the step the hardest sample
allows, for every sample: the batch costs ``B x`` the NFE of its worst member, and sample ``i``'s
result depends on the other members of its batch. Here each sample carries its own time ``t_i``,
step ``h_i``, error norm and accept/reject decision. Each attempt evaluates the right-hand side on the
samples still running only (the finished ones drop out of the batch), at their own times ``t`` ``[b]``:
a score function already takes one time per sample, so this costs nothing extra in the network. The
arithmetic of sample ``i`` never mixes in another sample's numbers, so its result is the same in any
batch (bit for bit when the right-hand side itself is batch-invariant).

Three pieces, as in any embedded Runge–Kutta code (Hairer, Nørsett & Wanner, *Solving ODEs I*, II.4):

* :class:`Tableau`: the Butcher tableau (``c``, ``a``, the propagated weights ``b`` and the error
  weights ``e = b - b_hat``); :data:`DOPRI5` is Dormand–Prince 5(4) with first-same-as-last.
* :class:`StepController`: the integral controller ``h_new = h * clip(safety * err^(-1/order))``.
* :func:`odeint_per_sample`: the loop (initial step, attempts on the running samples, bookkeeping).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Tuple

import torch
from torch import Tensor

from ..errors import IntegrationError, NonFiniteError

__all__ = ["Tableau", "DOPRI5", "StepController", "PerSampleResult", "odeint_per_sample"]

State = Tuple[Tensor, ...]
RHS = Callable[[Tensor, State, Tensor], State]


@dataclass(frozen=True)
class Tableau:
    """An explicit embedded Runge–Kutta method with the first-same-as-last property.

    Attributes:
        c: stage times as fractions of the step, ``[s]``.
        a: the stage coefficients, row ``j`` holding ``a_j1 .. a_j(j-1)``.
        b: weights of the propagated solution, ``[s]``.
        e: weights of the error estimate ``b - b_hat``, ``[s]``.
        order: order of the error estimate's controller exponent (the propagated order).
    """

    c: Tuple[float, ...]
    a: Tuple[Tuple[float, ...], ...]
    b: Tuple[float, ...]
    e: Tuple[float, ...]
    order: int


_B5 = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0)
_B4 = (5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40)

#: Dormand–Prince 5(4): the 5th-order solution propagates, the 4th-order one estimates the error.
DOPRI5 = Tableau(
    c=(0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0),
    a=(
        (),
        (1 / 5,),
        (3 / 40, 9 / 40),
        (44 / 45, -56 / 15, 32 / 9),
        (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
        (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
        _B5[:6],
    ),
    b=_B5,
    e=tuple(b5 - b4 for b5, b4 in zip(_B5, _B4)),
    order=5,
)


def _pow(x: Tensor, p: float) -> Tensor:
    """``x ** p`` as ``exp(p log x)``: torch's CPU ``pow`` by a scalar takes a SIMD path for most elements and a
    scalar path for the tail, which can differ in the last bit, so an element's result would depend on the
    batch size; ``exp`` and ``log`` run the same vector code on the tail."""
    return torch.exp(torch.log(x) * p)


@dataclass(frozen=True)
class StepController:
    """The integral step-size controller of an embedded method, per sample.

    A step with error norm ``err`` (RMS of ``error / (atol + rtol |y|)``) is accepted when ``err <= 1``;
    the next step is ``h * clip(safety * err^(-1/order), dfactor, ifactor)`` (at most ``h`` after a rejection).
    """

    order: int
    safety: float = 0.9
    ifactor: float = 10.0
    dfactor: float = 0.2

    def __call__(self, enorm: Tensor) -> Tuple[Tensor, Tensor]:
        """``(accept, factor)`` for the error norms ``enorm`` ``[b]``: booleans and step multipliers, ``[b]`` each."""
        finite = torch.isfinite(enorm)
        accept = finite & (enorm <= 1.0)
        factor = torch.where(
            enorm == 0, torch.full_like(enorm, self.ifactor),
            (self.safety * _pow(enorm.clamp_min(1e-300), -1.0 / self.order)).clamp(self.dfactor, self.ifactor),
        )
        factor = torch.where(finite, factor, torch.full_like(enorm, self.dfactor))
        return accept, torch.where(accept, factor, factor.clamp(max=1.0))


@dataclass
class PerSampleResult:
    """What :func:`odeint_per_sample` returns.

    Attributes:
        y: the states at ``t1``, a tuple of ``[B, ...]`` tensors.
        nfe: right-hand-side evaluations per sample, ``[B]`` (``int64``).
        steps: accepted steps per sample, ``[B]``.
        calls: batched calls of the right-hand side (each on the samples still running).
    """

    y: State
    nfe: Tensor
    steps: Tensor
    calls: int


def _bshape(v: Tensor, like: Tensor) -> Tensor:
    return v.reshape(v.shape[0], *([1] * (like.ndim - 1)))


def _rms(y: State, scale: State) -> Tensor:
    """Per-sample error norm: the largest over components of the RMS of ``y / scale`` (as torchdiffeq), ``[b]``."""
    norms = [(a / s).reshape(a.shape[0], -1).pow(2).mean(1).sqrt() for a, s in zip(y, scale)]
    return torch.stack(norms).amax(0) if len(norms) > 1 else norms[0]


def _combine(y: State, h: Tensor, ks: Sequence[State], coeffs: Sequence[float]) -> State:
    """``y + h sum_j c_j k_j`` per component, with ``h`` ``[b]``."""
    out = []
    for c, yc in enumerate(y):
        acc = None
        for k, a in zip(ks, coeffs):
            if a == 0.0:
                continue
            term = a * k[c]
            acc = term if acc is None else acc + term
        out.append(yc if acc is None else yc + _bshape(h, yc).to(yc.dtype) * acc)
    return tuple(out)


def _initial_step(f: RHS, t: Tensor, y: State, k1: State, direction: float, span: float, rtol: float, atol: float,
                  order: int, everyone: Tensor, time_dtype: torch.dtype) -> Tensor:
    """The starting step of each sample (Hairer, Nørsett & Wanner, II.4): one extra evaluation, ``[B]``."""
    scale0 = tuple(atol + rtol * c.abs() for c in y)
    d0, d1 = _rms(y, scale0), _rms(k1, scale0)
    if not bool(torch.isfinite(d1).all()):
        raise NonFiniteError("per-sample ODE: non-finite right-hand side at the initial state; check the score function")
    h0 = torch.where((d0 < 1e-5) | (d1 < 1e-5), torch.full_like(d0, 1e-6), 0.01 * d0 / d1).to(time_dtype).clamp(max=span)
    y1 = _combine(y, direction * h0, [k1], [1.0])
    k_probe = f(t + direction * h0, y1, everyone)
    d2 = _rms(tuple(a - b for a, b in zip(k_probe, k1)), scale0).to(time_dtype) / h0
    dmax = torch.maximum(d1.to(time_dtype), d2)
    h1 = torch.where(dmax <= 1e-15, torch.maximum(torch.full_like(h0, 1e-6), h0 * 1e-3), _pow(0.01 / dmax, 1.0 / order))
    return torch.minimum(100 * h0, h1).clamp(max=span)


def _attempt(f: RHS, tab: Tableau, ta: Tensor, ya: State, hs: Tensor, k_first: State, idx: Tensor,
             rtol: float, atol: float, time_dtype: torch.dtype) -> Tuple[State, Sequence[State], Tensor]:
    """One step of the tableau on the running samples: ``(y_new, stages, error norms [b])``."""
    ks = [k_first]
    for s in range(1, len(tab.c)):
        ys = _combine(ya, hs, ks, tab.a[s])
        ks.append(f(ta + tab.c[s] * hs, ys, idx))
    y_new = _combine(ya, hs, ks, tab.b)
    err = tuple(_bshape(hs, e).to(e.dtype) * sum(c * k[i] for c, k in zip(tab.e, ks) if c != 0.0) for i, e in enumerate(ya))
    scale = tuple(atol + rtol * torch.maximum(a.abs(), b.abs()) for a, b in zip(ya, y_new))
    return y_new, ks, _rms(err, scale).to(time_dtype)


def odeint_per_sample(
    f: RHS,
    y0: State,
    t0: float,
    t1: float,
    *,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    max_steps: Optional[int] = 10_000,
    time_dtype: torch.dtype = torch.float64,
    tableau: Tableau = DOPRI5,
    controller: Optional[StepController] = None,
) -> PerSampleResult:
    """Integrate ``dy/dt = f(t, y)`` from ``t0`` to ``t1`` with an embedded Runge–Kutta method, one step size per sample.

    Args:
        f: ``f(t, y, index) -> dy``: ``t`` ``[b]`` (one time per running sample, in ``time_dtype``),
            ``y`` a tuple of ``[b, ...]`` tensors (the running samples' states), ``index`` ``[b]`` the
            positions of those samples in the full batch (to select per-sample extras such as probes).
            Returns a tuple shaped like ``y``.
        y0: the initial states, a tuple of ``[B, ...]`` tensors (batch first in every component).
        t0, t1: start and end (either direction).
        rtol, atol: tolerances; sample ``i``'s error norm is the largest over components of the RMS of
            ``err / (atol + rtol * max(|y|, |y_new|))`` over its own entries.
        max_steps: cap on the attempts (accepted and rejected) of any one sample; ``None`` lifts it.
        tableau: the method (default :data:`DOPRI5`, whose last stage is the next step's first).
        controller: the step-size controller (default :class:`StepController` of the tableau's order).

    Returns:
        A :class:`PerSampleResult`.

    Raises:
        IntegrationError: a sample exceeded ``max_steps`` or its step size underflowed.
        NonFiniteError: the right-hand side returned NaN or infinity at a sample's initial state.
    """
    controller = controller or StepController(tableau.order)
    y = tuple(c.clone() for c in y0)
    B, device = y[0].shape[0], y[0].device
    direction = 1.0 if t1 >= t0 else -1.0
    span = abs(t1 - t0)
    t = torch.full((B,), float(t0), device=device, dtype=time_dtype)
    end = torch.full((B,), float(t1), device=device, dtype=time_dtype)
    nfe, steps, attempts = (torch.zeros(B, dtype=torch.int64, device=device) for _ in range(3))
    everyone = torch.arange(B, device=device)

    k1 = f(t, y, everyone)
    h = _initial_step(f, t, y, k1, direction, span, rtol, atol, tableau.order, everyone, time_dtype)
    calls, stages = 2, len(tableau.c) - 1
    nfe += 2
    k_first = tuple(c.clone() for c in k1)  # first-same-as-last: an accepted step's last stage starts the next
    done = torch.zeros(B, dtype=torch.bool, device=device)
    while True:
        idx = (~done).nonzero().squeeze(1)
        if idx.numel() == 0:
            break
        ya = tuple(c.index_select(0, idx) for c in y)
        ta, ea, ha = t[idx], end[idx], h[idx]
        remaining = (ea - ta).abs()
        last = ha >= remaining
        ha = torch.where(last, remaining, ha)
        hs = direction * ha
        y_new, ks, enorm = _attempt(f, tableau, ta, ya, hs, tuple(c.index_select(0, idx) for c in k_first), idx,
                                    rtol, atol, time_dtype)
        calls += stages
        accept, factor = controller(enorm)
        for c in range(len(y)):
            keep = _bshape(accept, y_new[c])
            y[c].index_copy_(0, idx, torch.where(keep, y_new[c], ya[c]))
            k_first[c].index_copy_(0, idx, torch.where(keep, ks[-1][c], ks[0][c]))
        t.index_copy_(0, idx, torch.where(accept & last, ea, torch.where(accept, ta + hs, ta)))
        h.index_copy_(0, idx, ha * factor)
        nfe.index_add_(0, idx, torch.full_like(idx, stages))
        steps.index_add_(0, idx, accept.to(torch.int64))
        attempts.index_add_(0, idx, torch.ones_like(idx))
        done.index_copy_(0, idx, accept & last)
        _check_progress(attempts, max_steps, ha * factor, accept & last, span)
    return PerSampleResult(y=y, nfe=nfe, steps=steps, calls=calls)


def _check_progress(attempts: Tensor, max_steps: Optional[int], h_next: Tensor, finished: Tensor, span: float) -> None:
    """Raise when a sample exceeded its attempts or its step size underflowed."""
    if max_steps is not None and bool((attempts > max_steps).any()):
        raise IntegrationError(
            f"per-sample ODE integration exceeded max_steps={max_steps} for sample(s) "
            f"{(attempts > max_steps).nonzero().squeeze(1)[:5].tolist()}; raise max_steps (None lifts the cap) or loosen rtol/atol"
        )
    if bool(((h_next < 1e-14 * max(span, 1e-300)) & ~finished).any()):
        raise IntegrationError(
            "per-sample ODE integration: step size underflow; loosen rtol/atol, raise eps, or check the score function"
        )
