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
from typing import Any, Optional, Tuple

import torch
from torch import Tensor

from ._utils import check_batch, event_numel
from ._validation import check_generator, finite_float, integer, positive_int, step_count
from .errors import DataError, NonFiniteError, OptionError, ShapeError, TimeRangeError
from .flow import (
    PROBES,
    TRACES,
    ProbabilityFlow,
    check_method,
    check_step_control,
    check_time_variable,
    integrate_flow,
    make_divergence,
)
from .flow.odeint import ADAPTIVE_METHODS as _ADAPTIVE
from .flow.odeint import DEFAULT_MAX_STEPS
from .noise import Noise, SeedsLike, make_noise
from .sde.base import SDE, ScoreFn
from .solvers.base import CountedScore

__all__ = ["PROBES", "TRACES", "BitsPerDimResult", "LikelihoodResult", "bits_per_dim", "log_likelihood"]

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
    _noise: Optional[Noise] = None,
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
            :func:`scoresde.flow.odeint_per_sample`; the batch costs the sum, not ``B x`` the
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
    check_method(method, rtol, atol)
    rtol, atol = float(rtol), float(atol)
    eps, trace, n_probes, chunk_size, max_steps, steps = _check_likelihood_args(
        sde, score_fn, x, eps, method, trace, probe, n_probes, chunk_size, max_steps, steps, score_dtype, step_control,
        time_variable, generator)
    noise = make_noise(generator, seeds, x.shape[0]) if _noise is None else _noise
    per_sample = step_control == "per_sample" or (step_control is None and noise.batch_invariant and method == "dopri5")
    score = CountedScore(score_fn)
    # per-sample control: one plain backward per cotangent (a vmapped backward may sum differently for other batches)
    div = make_divergence(trace, x, noise, probe, n_probes, chunk_size, vectorize=not per_sample)
    flow = ProbabilityFlow(sde, score, div, score_dtype, what=f"likelihood ODE ({method})")
    times = torch.tensor([eps, float(sde.T)], dtype=torch.float64, device=x.device)
    fixed_steps = None if method in _ADAPTIVE else (steps or 100)
    sol = integrate_flow(flow, x.detach(), times, method=method, rtol=rtol, atol=atol, max_steps=max_steps,
                         step_control="per_sample" if per_sample else "shared", time_variable=time_variable,
                         steps=fixed_steps)
    z, probe_delta = sol.y, sol.delta  # probe_delta [n, B]: int_eps^T (estimate of) div v dt for each probe
    # ---------------------------------------------------------------- change of variables
    prior_log_prob = sde.prior_log_prob(z)
    delta_log_prob = probe_delta.mean(0)
    log_prob = prior_log_prob + delta_log_prob  # log p_eps(x) = log p_T(z) + int div v dt
    if not bool(torch.isfinite(log_prob).all()):
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
    return LikelihoodResult(log_prob=log_prob, prior_log_prob=prior_log_prob, delta_log_prob=delta_log_prob, z=z,
                            nfe=score.nfe, stderr=stderr, probe_delta_log_prob=probe_delta,
                            nfe_per_sample=sol.nfe_per_sample)


def _check_likelihood_args(sde, score_fn, x, eps, method, trace, probe, n_probes, chunk_size, max_steps, steps,
                           score_dtype, step_control, time_variable, generator) -> Tuple[float, str, int, Any, Any, Any]:
    """Validate :func:`log_likelihood`'s arguments; return ``(eps, trace, n_probes, chunk_size, max_steps, steps)``."""
    if not isinstance(sde, SDE):
        raise OptionError(f"sde must be a scoresde.SDE, got {type(sde).__name__}")
    if not callable(score_fn):
        raise OptionError(f"score_fn must be callable as score_fn(x, t), got {type(score_fn).__name__}")
    check_batch(x, "x")
    if x.ndim < 2:
        raise ShapeError(f"x must have shape [B, *event] with at least one event dimension, got {tuple(x.shape)}")
    if x.numel() == 0:
        raise ShapeError(f"x must not be empty, got shape {tuple(x.shape)}")
    if x.device.type == "meta":
        raise DataError("x is a meta tensor (a shape without values); give the data on the CPU or a GPU")
    if not x.dtype.is_floating_point or x.dtype in (torch.float16, torch.bfloat16):
        raise DataError(f"x must be a float32 or float64 tensor (the ODE state dtype), got {x.dtype}; "
                        "use score_dtype to run the score function in lower precision")
    if not bool(torch.isfinite(x).all()):
        raise DataError("x holds NaN or infinite values")
    T = float(sde.T)
    eps = finite_float(eps, "eps")
    if not (0.0 < eps < T):
        raise TimeRangeError(f"eps must lie in (0, T) = (0, {T}), got {eps}")
    if trace not in TRACES:
        raise OptionError(f"trace must be one of {TRACES}, got {trace!r}")
    if probe not in PROBES:
        raise OptionError(f"probe must be one of {PROBES}, got {probe!r}")
    n_probes = integer(n_probes, "n_probes", minimum=1, maximum=10**4)
    if trace == "exact" and n_probes != 1:
        raise OptionError(f"n_probes={n_probes} applies to trace='hutchinson'; the exact trace has no probes")
    chunk_size = positive_int(chunk_size, "chunk_size", allow_none=True)
    max_steps = integer(max_steps, "max_steps", minimum=1, maximum=10**9, allow_none=True)
    steps = step_count(steps, "steps", allow_none=True)
    if method in _ADAPTIVE and steps is not None:
        raise OptionError(f"steps applies to fixed-step methods; {method!r} chooses its own steps (set rtol/atol)")
    check_generator(generator)
    if score_dtype is not None and not (isinstance(score_dtype, torch.dtype) and score_dtype.is_floating_point):
        raise OptionError(f"score_dtype must be a floating-point torch.dtype, got {score_dtype!r}")
    check_step_control(step_control, method)
    check_time_variable(time_variable, sde)
    return eps, trace, n_probes, chunk_size, max_steps, steps


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
    if x_int.device.type == "meta":
        raise DataError("x_int is a meta tensor (a shape without values); give the levels on the CPU or a GPU")
    if x_int.dtype.is_floating_point or x_int.dtype.is_complex or x_int.dtype == torch.bool:
        raise DataError(f"x_int must hold integer levels 0..levels-1 in an integer dtype, got {x_int.dtype}")
    if x_int.ndim < 2 or x_int.shape[0] == 0 or x_int.numel() == 0:
        raise ShapeError(
            f"x_int must have shape [B, *event] with B >= 1 and at least one event dim, got {tuple(x_int.shape)}"
        )
    levels = integer(levels, "levels", minimum=2, maximum=2**31)
    try:
        pair = [] if isinstance(data_range, (str, bytes)) else list(data_range)
    except TypeError:
        pair = []
    if len(pair) != 2:
        raise OptionError(f"data_range must be a pair (lo, hi) of numbers, got {data_range!r}")
    lo, hi = (finite_float(v, "data_range entry") for v in pair)
    if not (lo < hi and math.isfinite(hi - lo)):
        raise OptionError(f"data_range must be finite with lo < hi (and hi - lo finite), got {data_range!r}")
    repeats = positive_int(repeats, "repeats")
    dtype = torch.get_default_dtype() if dtype is None else dtype
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise OptionError(f"dtype must be a floating-point torch.dtype, got {dtype!r}")
    if "x" in likelihood_options or "_noise" in likelihood_options:
        raise OptionError("x is built from x_int, and the noise from generator= or seeds=; do not pass them as options")
    noise = make_noise(generator, seeds, x_int.shape[0])
    k_min, k_max = int(x_int.min()), int(x_int.max())
    if k_min < 0 or k_max >= levels:
        raise DataError(f"x_int must lie in [0, levels) = [0, {levels}), got values in [{k_min}, {k_max}]")

    B, D = x_int.shape[0], event_numel(x_int)
    delta = (hi - lo) / levels  # width of one level in model space
    log_jacobian = D * math.log(delta)  # log |dx/dv| = D log((hi - lo) / L)
    k = x_int.to(dtype)
    per_repeat, nfe = [], 0
    for r in range(repeats):
        noise_r = noise.repeat(r)  # per-sample seeds: repeat r of point i has a seed of its own
        u = noise_r.uniform(x_int.shape, x_int.device, dtype, stream="dequantize", counter=0)  # U[0, 1)^D
        x = lo + delta * (k + u)  # affine map of v = k + u in [0, L) to [lo, hi)
        res = log_likelihood(sde, score_fn, x, _noise=noise_r, **likelihood_options)
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
