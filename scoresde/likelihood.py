"""Exact log-likelihoods through the probability-flow ODE (instantaneous change of variables).

The probability-flow ODE of a forward SDE ``dx = f(x, t) dt + g(t) dw`` with score ``s(x, t)``,

    dx/dt = v(x, t) = f(x, t) - 1/2 g(t)^2 s(x, t),

transports the model density along its trajectories, and along any trajectory ``x(t)``
(Chen et al. 2018; Song et al. 2021)

    d/dt log p_t(x(t)) = -div_x v(x(t), t).

Integrating the pair ``[x, delta]`` with ``d delta/dt = div v`` forward from the data at ``eps``
to ``T`` gives the latent ``z = x(T)`` and

    log p_eps(x) = log p_T(z) + int_eps^T div v(x(t), t) dt,

with ``p_T`` replaced by the SDE's prior. The divergence is the trace of the Jacobian of ``v``:
computed exactly, one basis vector per dimension, or estimated with Hutchinson–Skilling probes
``div v ~ e^T (dv/dx) e`` with ``E[e e^T] = I``. Every evaluation of the right-hand side costs one
forward pass of the score function and one (batched) vector-Jacobian product; the whole loop
runs in torch, through torchdiffeq, on the data's device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence, Tuple

import torch
from torch import Tensor

from ._utils import append_dims, batch_sum, check_batch, check_memory, event_numel, randn
from ._validation import check_generator, finite_float, positive_int
from .adaptive import TIME_VARIABLES, LogNoiseLevel, odeint_per_sample
from .errors import DataError, IntegrationError, NonFiniteError, OptionError, ShapeError, TimeRangeError
from .sde.base import SDE, ScoreFn, reverse_drift
from .seeding import SeededNoise, SeedsLike, as_seeds, derive_seeds
from .solvers.base import CountedScore
from .solvers.odeint import DEFAULT_MAX_STEPS, check_method, odeint_checked

__all__ = ["PROBES", "TRACES", "BitsPerDimResult", "LikelihoodResult", "bits_per_dim", "log_likelihood"]

#: Ways of computing the divergence of the probability-flow velocity.
TRACES = ("exact", "hutchinson")
#: Distributions of the Hutchinson–Skilling probes.
PROBES = ("rademacher", "gaussian")

#: Default bound on the number of cotangent entries per batched VJP of the exact trace.
_EXACT_CHUNK_ELEMENTS = 2**22
_OUT_OF_MEMORY = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


@dataclass
class LikelihoodResult:
    """What :func:`log_likelihood` returns (all tensors in the dtype of ``x``, on its device).

    Attributes:
        log_prob: ``log p_eps(x)`` per sample in nats, ``[B]``: ``prior_log_prob + delta_log_prob``.
        prior_log_prob: ``log p_prior(z)``, ``[B]``.
        delta_log_prob: ``int_eps^T div v dt``, ``[B]`` (the mean over probes for Hutchinson).
        z: the latent ``x(T)``, ``[B, *event]``.
        nfe: number of score evaluations (each one forward pass plus one batched VJP).
        stderr: standard error of ``log_prob`` per sample, ``[B]``: zeros for the exact trace;
            for Hutchinson with ``n_probes > 1`` the standard deviation over probes of the
            per-probe integrals divided by ``sqrt(n_probes)``; NaN for Hutchinson with one probe
            (one draw cannot estimate its own spread).
        probe_delta_log_prob: the integral of each probe's divergence estimate,
            ``[n_probes, B]`` (``[1, B]`` holding the exact integral for the exact trace).
        nfe_per_sample: with per-sample step control, each point's right-hand-side evaluations,
            ``[B]`` (``int64``); ``None`` with a shared step (every point then costs ``nfe``).
    """

    log_prob: Tensor
    prior_log_prob: Tensor
    delta_log_prob: Tensor
    z: Tensor
    nfe: int
    stderr: Tensor
    probe_delta_log_prob: Tensor
    nfe_per_sample: Optional[Tensor] = None


@dataclass
class BitsPerDimResult:
    """What :func:`bits_per_dim` returns.

    Attributes:
        bits_per_dim: per-sample bits per dimension averaged over the repeats, ``[B]``.
        mean: the batch mean of ``bits_per_dim`` (a float).
        stderr: per-sample standard error over the repeats, ``[B]`` (std over repeats of the
            per-repeat values divided by ``sqrt(repeats)``; it covers the dequantization noise
            and, for Hutchinson, the probe noise). NaN when ``repeats == 1``.
        mean_stderr: standard error of ``mean`` over the samples of the batch (std over the
            batch of ``bits_per_dim`` divided by ``sqrt(B)``), the usual error bar of a
            dataset-level number; NaN when ``B == 1``.
        nfe: score evaluations summed over the repeats.
        per_repeat: the per-repeat values, ``[repeats, B]``.
    """

    bits_per_dim: Tensor
    mean: float
    stderr: Tensor
    mean_stderr: float
    nfe: int
    per_repeat: Tensor


# --------------------------------------------------------------------------- divergence
class _Divergence:
    """``div_x v`` from the graph of ``v = v(x)``: exact (basis-vector VJPs) or Hutchinson probes.

    Returns ``[n, B]``: ``n = 1`` for the exact trace, ``n = n_probes`` for Hutchinson.
    Cotangents are pushed through one batched backward pass (``is_grads_batched``); a score
    function whose backward cannot be vectorised falls back to a loop over the cotangents.
    """

    def __init__(self, trace: str, probes: Optional[Tensor], chunk_size: int):
        self.trace = trace
        self.probes = probes  # [n, B, *event] or None
        self.chunk_size = chunk_size
        self._vectorize = True
        self._cotangents: dict = {}

    def __call__(self, v: Tensor, x: Tensor, index: Optional[Tensor] = None) -> Tensor:
        B = x.shape[0]
        if self.trace == "hutchinson":
            e = self.probes if index is None else self.probes.index_select(1, index)  # the probes of the samples in x
            if not v.requires_grad:  # v does not depend on x
                return v.new_zeros(e.shape[0], B)
            # e^T (dv/dx) e for every probe: one batched VJP e^T J, then a dot product with e.
            eJ = self._vjp(v, x, e, retain_last=False)
            return batch_sum((eJ * e).reshape(e.shape[0] * B, *e.shape[2:])).reshape(e.shape[0], B)
        # Exact trace: sum_i e_i^T J e_i over basis vectors e_i, in chunks of `chunk_size` dims.
        D = event_numel(x)
        div = v.new_zeros(B)
        if not v.requires_grad:
            return div.unsqueeze(0)
        cache = B * D * D <= _EXACT_CHUNK_ELEMENTS  # keep the basis cotangents across evaluations if small
        for i0 in range(0, D, self.chunk_size):
            i1 = min(D, i0 + self.chunk_size)
            idx = torch.arange(i1 - i0, device=x.device)
            cot = self._cotangents.get((i0, B)) if cache else None
            if cot is None:  # e_i for i in [i0, i1), repeated over the batch: [i1 - i0, B, *event]
                cot = v.new_zeros(i1 - i0, B, D)
                cot[idx, :, i0 + idx] = 1
                cot = cot.reshape(i1 - i0, *x.shape)
                if cache:
                    self._cotangents[(i0, B)] = cot
            eJ = self._vjp(v, x, cot, retain_last=i1 < D).reshape(i1 - i0, B, D)
            div = div + eJ[idx, :, i0 + idx].sum(0)  # J_ii for i in the chunk
        return div.unsqueeze(0)

    def _vjp(self, v: Tensor, x: Tensor, cot: Tensor, retain_last: bool) -> Tensor:
        """``cot[k]^T dv/dx`` for every ``k``: ``cot`` ``[n, B, *event]`` -> ``[n, B, *event]``."""
        n = cot.shape[0]
        if n == 1:
            g = torch.autograd.grad(v, x, cot[0], retain_graph=retain_last, allow_unused=True)[0]
            return (torch.zeros_like(x) if g is None else g).unsqueeze(0)
        if self._vectorize:
            try:
                # retain_graph: keep the graph usable by the loop below should vectorising fail
                g = torch.autograd.grad(v, x, cot, retain_graph=True, is_grads_batched=True, allow_unused=True)[0]
                return torch.zeros_like(cot) if g is None else g
            except _OUT_OF_MEMORY:
                raise
            except RuntimeError:  # an op without a batching rule (e.g. .item() in a backward): loop from now on
                self._vectorize = False
        out = []
        for k in range(n):
            g = torch.autograd.grad(v, x, cot[k], retain_graph=retain_last or k < n - 1, allow_unused=True)[0]
            out.append(torch.zeros_like(x) if g is None else g)
        return torch.stack(out)


class _NonFiniteMonitor:
    """Records, on the device and without synchronising, the earliest time with a non-finite velocity or divergence.

    A sum is NaN or infinite when any of its terms is (a finite sum that overflows is reported too,
    which only matters once the integration has already failed).
    """

    def __init__(self, like: Tensor):
        self.first_bad_t = torch.full((), math.inf, device=like.device, dtype=like.dtype)

    def update(self, t: Tensor, v: Tensor, div: Tensor) -> None:
        total = v.sum() + div.sum()
        self.first_bad_t = torch.fmin(self.first_bad_t, torch.where(torch.isfinite(total), math.inf, t))

    def raise_if_bad(self, method: str) -> None:
        if bool(torch.isfinite(self.first_bad_t)):
            raise NonFiniteError(
                f"likelihood ODE ({method}): non-finite velocity or divergence at t = {float(self.first_bad_t):.6g}; "
                "check the score function for NaN/inf or raise eps"
            )


# --------------------------------------------------------------------------- helpers
def _rademacher(shape: Sequence[int], generator: Optional[torch.Generator], device, dtype) -> Tensor:
    """Independent +-1 entries with probability 1/2 each, drawn on the generator's device."""
    gen_device = generator.device if generator is not None else "cpu"
    bits = torch.randint(0, 2, tuple(shape), generator=generator, device=gen_device)
    return (2 * bits - 1).to(device=device, dtype=dtype)


def _uniform(shape: Sequence[int], generator: Optional[torch.Generator], device, dtype) -> Tensor:
    """``U[0, 1)`` entries drawn on the generator's device, then moved to ``device``."""
    gen_device = generator.device if generator is not None else "cpu"
    return torch.rand(tuple(shape), generator=generator, device=gen_device, dtype=dtype).to(device)


class _DifferentiabilityCheck:
    """Wraps the score function and, on its first call with ``x`` requiring grad, checks that it is differentiable in ``x``.

    The divergence of the probability flow is computed by autograd through the score. A score
    computed under ``torch.no_grad()`` / ``torch.inference_mode()`` or detached returns a tensor
    without a graph, and its divergence would silently come out as zero. The rule: if the output
    does not require grad while ``x`` does, the score is evaluated once more at a perturbed ``x``;
    if the output changes, the score depends on ``x`` without being differentiable and
    :class:`~scoresde.errors.OptionError` is raised. If it does not change, the score is
    constant in ``x`` (its divergence really is zero) and is accepted.
    """

    def __init__(self, score: Callable[[Tensor, Tensor], Tensor]):
        self.score = score
        self.checked = False

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        s = self.score(x, t)
        if self.checked or not x.requires_grad:
            return s
        self.checked = True
        if isinstance(s, Tensor) and s.requires_grad and not s.is_inference():
            return s
        with torch.no_grad():
            x_other = x.detach() + 1e-2 * (1.0 + x.detach().abs())
            s_other = self.score(x_other, t)
        if isinstance(s, Tensor) and isinstance(s_other, Tensor) and s.shape == s_other.shape and torch.equal(s.detach(), s_other):
            return s  # constant in x: its divergence is zero and autograd agrees
        raise OptionError(
            "score_fn(x, t) is not differentiable in x (it returned a tensor without an autograd graph, as under "
            "torch.no_grad(), torch.inference_mode() or .detach()) although its value depends on x: the likelihood "
            "needs the divergence of the score, which autograd cannot compute then. Call the network with gradients "
            "enabled inside score_fn (no no_grad/inference_mode/detach); its parameters may stay requires_grad=False"
        )


def _cast_score(score: Callable[[Tensor, Tensor], Tensor], dtype: Optional[torch.dtype]) -> ScoreFn:
    """Run ``score`` in ``dtype`` (``x`` and ``t`` cast to it) and cast its output back to ``x``'s dtype."""
    if dtype is None:
        return score
    return lambda x, t: score(x.to(dtype), t.to(dtype)).to(x.dtype)


# --------------------------------------------------------------------------- public API
def log_likelihood(
    sde: SDE,
    score_fn: ScoreFn,
    x: Tensor,
    *,
    eps: float = 1e-5,
    method: str = "dopri5",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    trace: str = "exact",
    probe: str = "rademacher",
    n_probes: int = 1,
    generator: Optional[torch.Generator] = None,
    chunk_size: Optional[int] = None,
    score_dtype: Optional[torch.dtype] = None,
    max_steps: Optional[int] = DEFAULT_MAX_STEPS,
    steps: Optional[int] = None,
    seeds: Optional[SeedsLike] = None,
    step_control: Optional[str] = None,
    time_variable: str = "t",
) -> LikelihoodResult:
    """Log-likelihood of data under a score model through the probability-flow ODE.

    Integrates ``[x, delta]`` jointly from ``eps`` to ``T`` with torchdiffeq on ``x``'s device::

        dx/dt     = v(x, t) = f(x, t) - 1/2 g(t)^2 score(x, t)
        ddelta/dt = div_x v(x, t)
        log p_eps(x) = log p_prior(x(T)) + delta(T)

    Each evaluation of the right-hand side costs one forward pass of ``score_fn`` and one
    batched vector-Jacobian product; the integration never leaves torch (no numpy or scipy in
    the loop) and never evaluates the SDE outside ``[eps, T]``. No gradient flows back to ``x``
    or to the parameters of ``score_fn``.

    Args:
        sde: the forward SDE (its prior is ``p_T``).
        score_fn: ``score_fn(x, t) -> Tensor`` shaped like ``x``; ``x`` ``[B, *event]``, ``t`` ``[B]``.
        x: data ``[B, *event]`` (vectors ``[B, D]``, images ``[B, C, H, W]``, any event rank), a
            float32 or float64 tensor: its dtype is the dtype of the ODE state and of the result.
        eps: start time of the integration, in ``(0, T)``.
        method: a torchdiffeq method: adaptive ``"dopri5"`` (default), ``"dopri8"``, ``"bosh3"``,
            ``"fehlberg2"``, ``"adaptive_heun"``, or fixed-step ``"euler"``, ``"midpoint"``,
            ``"heun"``, ``"heun3"``, ``"rk4"`` on ``steps`` uniform steps.
        rtol, atol: tolerances of the adaptive methods (on ``x`` and the log-density alike).
        trace: ``"exact"``: the divergence as the sum of the ``D`` diagonal Jacobian entries,
            ``e_i^T J e_i``, computed with batched VJPs in chunks of ``chunk_size`` dimensions;
            ``"hutchinson"``: the Hutchinson–Skilling estimate ``e^T J e`` averaged over
            ``n_probes`` probes drawn once per solve.
        probe: Hutchinson probe distribution: ``"rademacher"`` (entries +-1) or ``"gaussian"``.
        n_probes: number of Hutchinson probes; each probe's integral is a separate state
            component, so ``stderr`` is the exact standard error of the estimator. Must be 1 for
            the exact trace.
        generator: source of the probes.
        chunk_size: dimensions per batched VJP of the exact trace (bounds memory: the cotangent
            has ``chunk_size * B * D`` entries and the backward pass is vectorised over
            ``chunk_size``). Default: all ``D`` dimensions at once when ``B * D * D <= 2**22``,
            else ``2**22 // (B * D)`` (at least 1).
        score_dtype: dtype to run ``score_fn`` in (e.g. ``torch.bfloat16``): ``x`` and ``t`` are
            cast to it and the score is cast back, so the ODE state keeps ``x``'s dtype.
        max_steps: cap on the number of adaptive steps, accepted or rejected (``None``: no cap).
        steps: number of uniform steps for a fixed-step method (default 100); not allowed with
            an adaptive method.
        seeds: one integer per data point, ``[B]`` (tensor, list of ints or range), instead of
            ``generator``: point ``i``'s probes depend on ``seeds[i]`` only (and, with per-sample
            step control, its whole result on ``x[i]`` and ``seeds[i]`` only), whatever the batch.
        step_control: ``"shared"`` (one adaptive step for the batch, torchdiffeq), ``"per_sample"``
            (each point its own Dormand–Prince 5(4) step and error norm, batched:
            :func:`scoresde.adaptive.odeint_per_sample`; the batch costs the sum, not ``B x`` the
            maximum, of the points' NFEs; ``method="dopri5"`` only) or ``None`` (default):
            per-sample when ``seeds`` are given, shared otherwise. ``nfe`` then counts batched calls
            and ``nfe_per_sample`` each point's evaluations. Per-sample control pushes the cotangents
            of the divergence one plain backward pass at a time (a vectorised backward can round
            differently for different batch sizes): with the exact trace that is ``D`` passes per
            evaluation, so prefer ``trace="hutchinson"`` for images.
        time_variable: ``"t"`` (default) or ``"log_sigma"``: integrate in ``u = log sigma(t)``, the log
            noise level (SDEs with a closed-form kernel).

    Returns:
        A :class:`LikelihoodResult` with ``log_prob`` ``[B]`` in nats.

    Raises:
        ShapeError: ``x`` is not ``[B, *event]`` with ``B >= 1`` and at least one event dim, or
            ``score_fn`` returns a tensor of another shape.
        DataError: ``x`` is not a floating-point tensor or holds NaN/inf.
        TimeRangeError: ``eps`` is not in ``(0, T)``.
        OptionError: (a ``ValueError``) an unknown ``method``, ``trace`` or ``probe``, an invalid
            option, or a ``score_fn`` that depends on ``x`` but is not differentiable in it
            (computed under ``torch.no_grad()``/``torch.inference_mode()`` or detached): the
            divergence needs autograd through the score. A score that is constant in ``x``
            (checked once by evaluating it at a perturbed ``x``) is accepted.
        NonFiniteError: the velocity, the divergence or the resulting log-density is not finite.
            No partial result is returned: the error names the first time with a non-finite value.
        IntegrationError: the adaptive solver's step size underflowed, or it exceeded ``max_steps``.

    Example:
        >>> import torch, scoresde
        >>> sde = scoresde.VPSDE()
        >>> score = lambda x, t: -x  # N(0, I) data stays N(0, I) under the VP SDE
        >>> res = scoresde.log_likelihood(sde, score, torch.zeros(2, 3, dtype=torch.float64))
        >>> round(float(res.log_prob[0]), 4)  # log N(0; 0, I) in 3 dimensions
        -2.7568
    """
    # ---------------------------------------------------------------- validation
    if not isinstance(sde, SDE):
        raise OptionError(f"sde must be a scoresde.SDE, got {type(sde).__name__}")
    if not callable(score_fn):
        raise OptionError(f"score_fn must be callable as score_fn(x, t), got {type(score_fn).__name__}")
    check_batch(x, "x")
    if x.ndim < 2:
        raise ShapeError(f"x must have shape [B, *event] with at least one event dimension, got {tuple(x.shape)}")
    if x.numel() == 0:
        raise ShapeError(f"x must not be empty, got shape {tuple(x.shape)}")
    if not x.dtype.is_floating_point or x.dtype in (torch.float16, torch.bfloat16):
        raise DataError(
            f"x must be a float32 or float64 tensor (the ODE state dtype), got {x.dtype}; "
            "use score_dtype to run the score function in lower precision"
        )
    if not bool(torch.isfinite(x).all()):
        raise DataError("x holds NaN or infinite values")
    T = float(sde.T)
    eps = finite_float(eps, "eps")
    if not (0.0 < eps < T):
        raise TimeRangeError(f"eps must lie in (0, T) = (0, {T}), got {eps}")
    adaptive = check_method(method, rtol, atol)
    if trace not in TRACES:
        raise OptionError(f"trace must be one of {TRACES}, got {trace!r}")
    if probe not in PROBES:
        raise OptionError(f"probe must be one of {PROBES}, got {probe!r}")
    n_probes = positive_int(n_probes, "n_probes")
    if trace == "exact" and n_probes != 1:
        raise OptionError(f"n_probes={n_probes} applies to trace='hutchinson'; the exact trace has no probes")
    chunk_size = positive_int(chunk_size, "chunk_size", allow_none=True)
    max_steps = positive_int(max_steps, "max_steps", allow_none=True)
    steps = positive_int(steps, "steps", allow_none=True)
    if adaptive and steps is not None:
        raise OptionError(f"steps applies to fixed-step methods; {method!r} chooses its own steps (set rtol/atol)")
    check_generator(generator)
    if score_dtype is not None and not (isinstance(score_dtype, torch.dtype) and score_dtype.is_floating_point):
        raise OptionError(f"score_dtype must be a floating-point torch.dtype, got {score_dtype!r}")
    if seeds is not None and generator is not None:
        raise OptionError("give either generator (one stream for the batch) or seeds (one per data point), not both")
    noise = None if seeds is None else SeededNoise(as_seeds(seeds, x.shape[0]))
    if step_control not in (None, "shared", "per_sample"):
        raise OptionError(f"step_control must be None (auto), 'shared' or 'per_sample', got {step_control!r}")
    per_sample = step_control == "per_sample" or (step_control is None and seeds is not None and method == "dopri5")
    if per_sample and method != "dopri5":
        raise OptionError(f"step_control='per_sample' is a per-sample Dormand-Prince 5(4): use method='dopri5', not {method!r}")
    if time_variable not in TIME_VARIABLES:
        raise OptionError(f"time_variable must be one of {TIME_VARIABLES}, got {time_variable!r}")
    if time_variable != "t" and not sde.has_kernel:
        raise OptionError(f"time_variable={time_variable!r} needs an SDE with a closed-form kernel; use 't'")

    B, D, dtype, device = x.shape[0], event_numel(x), x.dtype, x.device
    score = CountedScore(score_fn)
    score_in_dtype = _cast_score(_DifferentiabilityCheck(score), score_dtype)

    # ---------------------------------------------------------------- divergence
    itemsize = x.element_size()
    if trace == "hutchinson":
        check_memory(n_probes * x.numel() * itemsize * 3, f"{n_probes} Hutchinson probes for x of shape {tuple(x.shape)}",
                     "Use fewer probes (n_probes) or a smaller batch")
        shape = (n_probes, *x.shape)
        if noise is not None:  # probe k of point i from (seeds[i], k): the same in any batch
            draw = noise.rademacher if probe == "rademacher" else noise.randn
            probes = torch.stack([draw(x.shape, device, dtype, stream="probe", counter=k) for k in range(n_probes)])
        elif probe == "rademacher":
            probes = _rademacher(shape, generator, device, dtype)
        else:
            probes = randn(shape, generator=generator, device=device, dtype=dtype)
        div = _Divergence("hutchinson", probes, chunk_size=1)
    else:
        if chunk_size is None:
            chunk_size = max(1, min(D, _EXACT_CHUNK_ELEMENTS // (B * D)))
        check_memory(min(chunk_size, D) * x.numel() * itemsize * 3, f"exact-trace cotangents of {min(chunk_size, D)} x {tuple(x.shape)}",
                     "Pass a smaller chunk_size or batch")
        div = _Divergence("exact", None, chunk_size=min(chunk_size, D))
    if per_sample:  # one plain backward per cotangent: a vmapped backward may sum differently for other batch sizes
        div._vectorize = False
    monitor = _NonFiniteMonitor(x)

    def rhs(t: Tensor, state: Tuple[Tensor, Tensor]) -> Tuple[Tensor, Tensor]:
        x_t = state[0]
        # The solver may probe just outside [eps, T] (or at NaN once its step underflows); the SDE never sees it.
        tb = torch.nan_to_num(t, nan=eps).clamp(eps, T).expand(B)
        with torch.enable_grad():
            x_t = x_t.detach().requires_grad_(True)
            v = reverse_drift(sde, x_t, tb, score_in_dtype(x_t, tb), 0.5)  # v = f - 1/2 g^2 s: the one forward pass
            d = div(v, x_t)  # div_x v, [n, B]: the one (batched) VJP
        monitor.update(t, v, d)
        return v.detach(), d.detach()

    change = LogNoiseLevel(sde, eps, T) if time_variable == "log_sigma" else None
    if change is not None:  # d[x, delta]/du = d[x, delta]/dt * dt/du, u = log sigma(t)
        rhs_t = rhs

        def rhs(u: Tensor, state: Tuple[Tensor, Tensor]) -> Tuple[Tensor, Tensor]:  # noqa: F811
            t = change.time(u.to(torch.float64).reshape(1))
            v, d = rhs_t(t[0].to(dtype), state)
            c = change.dt_du(t).to(dtype)[0]
            return v * c, d * c

    # ---------------------------------------------------------------- integration
    nfe_per_sample = None
    if per_sample:
        def rhs_b(tv: Tensor, state: Tuple[Tensor, Tensor], idx: Tensor) -> Tuple[Tensor, Tensor]:
            t = tv if change is None else change.time(tv)
            tb = t.to(dtype).clamp(eps, T)
            with torch.enable_grad():
                x_t = state[0].detach().requires_grad_(True)
                v = reverse_drift(sde, x_t, tb, score_in_dtype(x_t, tb), 0.5)
                d = div(v, x_t, idx)  # [n, b]
            monitor.update(tb.amin(), v, d)
            if change is not None:
                c = change.dt_du(t.to(torch.float64)).to(dtype)
                return v.detach() * append_dims(c, v.ndim), d.detach().T * c[:, None]
            return v.detach(), d.detach().T

        lo, hi = (eps, T) if change is None else (change.u_lo, change.u_hi)
        with torch.no_grad():
            try:
                res = odeint_per_sample(rhs_b, (x.detach(), x.new_zeros(B, n_probes)), lo, hi, rtol=rtol, atol=atol,
                                        max_steps=max_steps)
            except (IntegrationError, NonFiniteError):
                monitor.raise_if_bad(method)
                raise
        z, probe_delta = res.y[0], res.y[1].T
        nfe_per_sample = res.nfe
    else:
        t_span = torch.tensor([eps, T], device=device, dtype=dtype)
        if change is not None:
            t_span = torch.tensor([change.u_lo, change.u_hi], device=device, dtype=dtype)
        delta0 = torch.zeros(n_probes, B, device=device, dtype=dtype)
        grid = None if adaptive else torch.linspace(float(t_span[0]), float(t_span[1]), (steps or 100) + 1, device=device,
                                                    dtype=dtype)
        with torch.no_grad():
            xs, deltas = odeint_checked(rhs, (x.detach(), delta0), t_span, method, rtol=rtol, atol=atol,
                                        max_steps=max_steps, grid=grid, on_failure=lambda: monitor.raise_if_bad(method))
        z = xs[-1]
        probe_delta = deltas[-1]  # [n, B]: int_eps^T (estimate of) div v dt for each probe

    # ---------------------------------------------------------------- change of variables
    prior_log_prob = sde.prior_log_prob(z)
    delta_log_prob = probe_delta.mean(0)
    log_prob = prior_log_prob + delta_log_prob  # log p_eps(x) = log p_T(z) + int div v dt
    if not bool(torch.isfinite(log_prob).all()):
        monitor.raise_if_bad(method)
        raise NonFiniteError(
            f"likelihood ODE ({method}): non-finite log-probability (prior term or latent z overflowed); "
            "check the score function and the SDE's prior"
        )
    if trace == "exact":
        stderr = torch.zeros_like(log_prob)
    elif n_probes == 1:
        stderr = torch.full_like(log_prob, float("nan"))
    else:
        stderr = probe_delta.std(0, unbiased=True) / math.sqrt(n_probes)
    return LikelihoodResult(
        log_prob=log_prob,
        prior_log_prob=prior_log_prob,
        delta_log_prob=delta_log_prob,
        z=z,
        nfe=score.nfe,
        stderr=stderr,
        probe_delta_log_prob=probe_delta,
        nfe_per_sample=nfe_per_sample,
    )


def bits_per_dim(
    sde: SDE,
    score_fn: ScoreFn,
    x_int: Tensor,
    *,
    levels: int = 256,
    data_range: Tuple[float, float] = (-1.0, 1.0),
    repeats: int = 1,
    generator: Optional[torch.Generator] = None,
    dtype: Optional[torch.dtype] = None,
    seeds: Optional[SeedsLike] = None,
    **likelihood_options: Any,
) -> BitsPerDimResult:
    """Bits per dimension of discrete data under a score model, by uniform dequantization.

    With ``L = levels`` and ``data_range = (lo, hi)``, each repeat draws ``u ~ U[0, 1)^D`` and maps
    the integer levels ``k`` to model space by the affine map

        x = lo + (hi - lo) (k + u) / L          (so x lies in [lo, hi)),

    whose Jacobian is ``((hi - lo) / L)^D``. The density of ``v = k + u`` on ``[0, L)^D`` is
    ``p_V(v) = p_X(x) ((hi - lo) / L)^D`` and, by Jensen's inequality, the probability of the
    discrete value ``k`` satisfies

        log P(k) = log int_[0,1)^D p_V(k + u) du >= E_u[ log p_X(x) ] + D log((hi - lo) / L).

    The reported number is the matching upper bound on ``-log2 P(k) / D``:

        bpd = -( E_u[ log p_X(x) ] + D log((hi - lo) / L) ) / (D ln 2),

    with ``log p_X`` from :func:`log_likelihood` and ``E_u`` estimated by the average over
    ``repeats`` fresh dequantization draws (and fresh Hutchinson probes, if used). For 8-bit data
    on ``[-1, 1]`` the offset is ``-log2(2/256) = 7`` bits.

    Args:
        sde, score_fn: the model, as in :func:`log_likelihood`.
        x_int: integer levels ``[B, *event]`` in ``0 .. levels - 1``, any integer dtype.
        levels: number of discrete levels ``L >= 2`` (256 for 8-bit images, 17 for the scikit-learn
            digits).
        data_range: ``(lo, hi)`` with ``lo < hi``: the interval the model's data live in.
        repeats: number of independent dequantization (and probe) draws averaged.
        generator: source of the dequantization noise and of the probes.
        seeds: one integer per data point, ``[B]``, instead of ``generator``: repeat ``r`` of point
            ``i`` draws its dequantization noise and probes from ``(seeds[i], r)`` only, and the
            likelihood steps each point on its own (see :func:`log_likelihood`), so point ``i``'s
            result does not depend on its batch.
        dtype: floating dtype of the dequantized data and of the ODE state (default: torch's
            default dtype).
        **likelihood_options: passed to :func:`log_likelihood` (``eps``, ``method``, ``rtol``,
            ``atol``, ``trace``, ``probe``, ``n_probes``, ``chunk_size``, ``score_dtype``, ...).

    Returns:
        A :class:`BitsPerDimResult`; ``bits_per_dim`` ``[B]`` and ``stderr`` ``[B]``.

    Raises:
        DataError: ``x_int`` is not an integer tensor or holds values outside ``[0, levels)``.
        ShapeError: ``x_int`` is not ``[B, *event]``.
        OptionError: (a ``ValueError``) ``levels < 2``, ``data_range`` not two finite numbers with ``lo < hi``,
            ``repeats < 1``, a non-floating ``dtype``, or a ``likelihood_options`` key that
            :func:`bits_per_dim` sets itself.
        And everything :func:`log_likelihood` raises.
    """
    if not isinstance(x_int, Tensor):
        raise DataError(f"x_int must be a torch.Tensor of integer levels, got {type(x_int).__name__}")
    if x_int.dtype.is_floating_point or x_int.dtype.is_complex or x_int.dtype == torch.bool:
        raise DataError(f"x_int must hold integer levels 0..levels-1 in an integer dtype, got {x_int.dtype}")
    if x_int.ndim < 2 or x_int.shape[0] == 0 or x_int.numel() == 0:
        raise ShapeError(
            f"x_int must have shape [B, *event] with B >= 1 and at least one event dim, got {tuple(x_int.shape)}"
        )
    if isinstance(levels, bool) or not isinstance(levels, int) or levels < 2:
        raise OptionError(f"levels must be an integer >= 2, got {levels!r}")
    try:
        lo, hi = (float(v) for v in data_range)
    except (TypeError, ValueError):
        raise OptionError(f"data_range must be a pair (lo, hi) of numbers, got {data_range!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise OptionError(f"data_range must be finite with lo < hi, got {data_range!r}")
    repeats = positive_int(repeats, "repeats")
    check_generator(generator)
    dtype = torch.get_default_dtype() if dtype is None else dtype
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise OptionError(f"dtype must be a floating-point torch.dtype, got {dtype!r}")
    if "generator" in likelihood_options or "x" in likelihood_options:
        raise OptionError("pass generator to bits_per_dim itself; x is built from x_int")
    if seeds is not None and generator is not None:
        raise OptionError("give either generator (one stream for the batch) or seeds (one per data point), not both")
    seeds = None if seeds is None else as_seeds(seeds, x_int.shape[0])
    k_min, k_max = int(x_int.min()), int(x_int.max())
    if k_min < 0 or k_max >= levels:
        raise DataError(f"x_int must lie in [0, levels) = [0, {levels}), got values in [{k_min}, {k_max}]")

    B, D = x_int.shape[0], event_numel(x_int)
    delta = (hi - lo) / levels  # width of one level in model space
    log_jacobian = D * math.log(delta)  # log |dx/dv| = D log((hi - lo) / L)
    k = x_int.to(dtype)
    per_repeat, nfe = [], 0
    for _ in range(repeats):
        if seeds is None:
            u = _uniform(x_int.shape, generator, x_int.device, dtype)  # dequantization noise, U[0, 1)^D
            draw: dict = dict(generator=generator)
        else:  # repeat r of point i: its own seed
            rs = derive_seeds(seeds, len(per_repeat))
            u = SeededNoise(rs).uniform(x_int.shape, x_int.device, dtype, stream="dequantize", counter=0)
            draw = dict(seeds=rs)
        x = lo + delta * (k + u)  # affine map of v = k + u in [0, L) to [lo, hi)
        res = log_likelihood(sde, score_fn, x, **draw, **likelihood_options)
        per_repeat.append(-(res.log_prob + log_jacobian) / (D * math.log(2.0)))
        nfe += res.nfe
    per = torch.stack(per_repeat)  # [repeats, B]
    bpd = per.mean(0)
    if repeats > 1:
        stderr = per.std(0, unbiased=True) / math.sqrt(repeats)
    else:
        stderr = torch.full_like(bpd, float("nan"))
    mean_stderr = float(bpd.std(unbiased=True)) / math.sqrt(B) if B > 1 else float("nan")
    return BitsPerDimResult(
        bits_per_dim=bpd, mean=float(bpd.mean()), stderr=stderr, mean_stderr=mean_stderr, nfe=nfe, per_repeat=per
    )
