"""Per-sample adaptive integration: a batched Dormand–Prince 5(4) where every sample has its own step.

A shared-step adaptive solver (torchdiffeq's ``dopri5`` on a batch) takes the step the hardest sample
allows, for every sample: the batch costs ``B x`` the NFE of its worst member, and sample ``i``'s
result depends on the other members of its batch. Here each sample carries its own time ``t_i``,
step ``h_i``, error norm and accept/reject decision. Each attempt evaluates the right-hand side on the
samples that are still running only (the finished ones drop out of the batch), at their own times
``t`` ``[b]``: a score function already takes one time per sample, so this costs nothing extra in
the network. The arithmetic of sample ``i`` never mixes in another sample's numbers, so its result
is the same in any batch (bit for bit when the right-hand side itself is batch-invariant).

:func:`odeint_per_sample` is the integrator; :class:`LogNoiseLevel` is the change of variable
``u = log sigma(t)`` (``sigma`` the SDE's noise-to-signal ratio, i.e. minus the log-SNR) that makes
the probability-flow ODE better conditioned near the data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Tuple

import torch
from torch import Tensor

from .errors import IntegrationError, NonFiniteError

__all__ = ["PerSampleResult", "odeint_per_sample", "LogNoiseLevel", "TIME_VARIABLES"]

#: Integration variables of the per-sample likelihood and sampler: the time ``t`` itself, or
#: ``u = log sigma(t)`` (``"log_sigma"``, the log noise level, minus the log-SNR).
TIME_VARIABLES = ("t", "log_sigma")

# Dormand–Prince 5(4) tableau (the 5th-order solution propagates; the 4th-order one estimates the error).
_C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0)
_A = (
    (),
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
    (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
)
_B5 = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0)
_B4 = (5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40)
_E = tuple(b5 - b4 for b5, b4 in zip(_B5, _B4))
_SAFETY, _IFACTOR, _DFACTOR, _ORDER = 0.9, 10.0, 0.2, 5

State = Tuple[Tensor, ...]
RHS = Callable[[Tensor, State, Tensor], State]


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


def _pow(x: Tensor, p: float) -> Tensor:
    """``x ** p`` as ``exp(p log x)``: torch's CPU ``pow`` by a scalar takes a SIMD path for most elements and a
    scalar path for the tail, which can differ in the last bit, so an element's result would depend on the
    batch size; ``exp`` and ``log`` run the same vector code on the tail."""
    return torch.exp(torch.log(x) * p)


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
) -> PerSampleResult:
    """Integrate ``dy/dt = f(t, y)`` from ``t0`` to ``t1`` with Dormand–Prince 5(4), one step size per sample.

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

    Returns:
        A :class:`PerSampleResult`.

    Raises:
        IntegrationError: a sample exceeded ``max_steps`` or its step size underflowed.
        NonFiniteError: the right-hand side returned NaN or infinity at a sample's initial state.
    """
    y = tuple(c.clone() for c in y0)
    B = y[0].shape[0]
    device = y[0].device
    direction = 1.0 if t1 >= t0 else -1.0
    span = abs(t1 - t0)
    t = torch.full((B,), float(t0), device=device, dtype=time_dtype)
    end = torch.full((B,), float(t1), device=device, dtype=time_dtype)
    nfe = torch.zeros(B, dtype=torch.int64, device=device)
    steps = torch.zeros(B, dtype=torch.int64, device=device)
    attempts = torch.zeros(B, dtype=torch.int64, device=device)
    calls = 0
    everyone = torch.arange(B, device=device)

    # ---- first stage and initial step (Hairer, Norsett & Wanner, II.4), per sample
    k1 = f(t, y, everyone)
    calls += 1
    scale0 = tuple(atol + rtol * c.abs() for c in y)
    d0, d1 = _rms(y, scale0), _rms(k1, scale0)
    if not bool(torch.isfinite(d1).all()):
        raise NonFiniteError("per-sample ODE: non-finite right-hand side at the initial state; check the score function")
    h0 = torch.where((d0 < 1e-5) | (d1 < 1e-5), torch.full_like(d0, 1e-6), 0.01 * d0 / d1).to(time_dtype).clamp(max=span)
    y1 = _combine(y, direction * h0, [k1], [1.0])
    k_probe = f(t + direction * h0, y1, everyone)
    calls += 1
    d2 = _rms(tuple(a - b for a, b in zip(k_probe, k1)), scale0).to(time_dtype) / h0
    dmax = torch.maximum(d1.to(time_dtype), d2)
    h1 = torch.where(dmax <= 1e-15, torch.maximum(torch.full_like(h0, 1e-6), h0 * 1e-3), _pow(0.01 / dmax, 1.0 / _ORDER))
    h = torch.minimum(100 * h0, h1).clamp(max=span)
    nfe += 2
    k_first = tuple(c.clone() for c in k1)  # FSAL: the last stage of an accepted step is the first of the next

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
        ks = [tuple(c.index_select(0, idx) for c in k_first)]
        for s in range(1, 7):
            ys = _combine(ya, hs, ks, _A[s])
            ks.append(f(ta + _C[s] * hs, ys, idx))
        calls += 6
        y_new = _combine(ya, hs, ks, _B5)
        err = tuple(_bshape(hs, e).to(e.dtype) * sum(c * k[i] for c, k in zip(_E, ks) if c != 0.0)
                    for i, e in enumerate(ya))
        scale = tuple(atol + rtol * torch.maximum(a.abs(), b.abs()) for a, b in zip(ya, y_new))
        enorm = _rms(err, scale).to(time_dtype)
        finite = torch.isfinite(enorm)
        accept = finite & (enorm <= 1.0)
        factor = torch.where(
            enorm == 0, torch.full_like(enorm, _IFACTOR),
            (_SAFETY * _pow(enorm.clamp_min(1e-300), -1.0 / _ORDER)).clamp(_DFACTOR, _IFACTOR),
        )
        factor = torch.where(finite, factor, torch.full_like(enorm, _DFACTOR))
        factor = torch.where(accept, factor, factor.clamp(max=1.0))
        t_new = torch.where(accept & last, ea, torch.where(accept, ta + hs, ta))
        for c in range(len(y)):
            keep = _bshape(accept, y_new[c])
            y[c].index_copy_(0, idx, torch.where(keep, y_new[c], ya[c]))
            k_first[c].index_copy_(0, idx, torch.where(keep, ks[6][c], ks[0][c]))
        t.index_copy_(0, idx, t_new)
        h.index_copy_(0, idx, ha * factor)
        nfe.index_add_(0, idx, torch.full_like(idx, 6))
        steps.index_add_(0, idx, accept.to(torch.int64))
        attempts.index_add_(0, idx, torch.ones_like(idx))
        done.index_copy_(0, idx, accept & last)
        if max_steps is not None and bool((attempts > max_steps).any()):
            raise IntegrationError(
                f"per-sample ODE integration exceeded max_steps={max_steps} for sample(s) "
                f"{(attempts > max_steps).nonzero().squeeze(1)[:5].tolist()}; raise max_steps (None lifts the cap) or loosen rtol/atol"
            )
        tiny = (ha * factor) < 1e-14 * max(span, 1e-300)
        if bool((tiny & ~(accept & last)).any()):
            raise IntegrationError(
                "per-sample ODE integration: step size underflow; loosen rtol/atol, raise eps, or check the score function"
            )
    return PerSampleResult(y=y, nfe=nfe, steps=steps, calls=calls)


class LogNoiseLevel:
    """The change of variable ``u = log sigma(t)``, ``sigma = sde.noise_to_signal(t)``, for an ODE in ``t``.

    ``dy/du = dy/dt * dt/du`` with ``dt/du = sigma(t) / sigma'(t)``. Near the data ``sigma`` is
    small and changes fast in ``t`` (VP: ``sigma ~ sqrt(beta_min t)``); in ``u`` the trajectory is
    smoother, so an adaptive solver needs fewer steps at the same error. Needs an SDE with a
    closed-form kernel (``noise_to_signal`` and ``time_at_noise_to_signal``).
    """

    def __init__(self, sde, t_lo: float, t_hi: float):
        self.sde = sde
        self.t_lo, self.t_hi = float(t_lo), float(t_hi)
        ends = torch.tensor([self.t_lo, self.t_hi], dtype=torch.float64)
        self.u_lo, self.u_hi = (float(v) for v in torch.log(sde.noise_to_signal(ends)))

    def time(self, u: Tensor) -> Tensor:
        """``t(u)``, clamped to ``[t_lo, t_hi]``, ``[b]``."""
        t = self.sde.time_at_noise_to_signal(torch.exp(u))
        return t.clamp(self.t_lo, self.t_hi)

    def dt_du(self, t: Tensor) -> Tensor:
        """``sigma(t) / sigma'(t)``, ``[b]`` (the derivative by autograd through the SDE's closed form)."""
        with torch.enable_grad():
            tt = t.detach().requires_grad_(True)
            sigma = self.sde.noise_to_signal(tt)
            (dsigma,) = torch.autograd.grad(sigma.sum(), tt)
        return (sigma / dsigma).detach()


def log_noise_level_ok(sde) -> bool:
    """Whether ``sde`` supports :class:`LogNoiseLevel` (a closed-form kernel)."""
    return bool(getattr(sde, "has_kernel", False))

