"""Asymptotically exact inpainting: sequential Monte Carlo over particles with twisted proposals.

The replacement method of :func:`scoresde.inpaint` is biased. :func:`smc_inpaint` instead samples the
model's own conditional: the ancestral chain ``x_T ~ prior``, ``x_s | x_t ~ N(mu(x_t), sigma^2 I)`` down to
``x_eps``, conditioned on ``x_eps[known] = y``. It runs ``P`` particles per problem through a
Feynman-Kac model in the spirit of twisted diffusion samplers (Wu et al. 2023):

* twisting functions ``h_t(x) = N(y; x0_hat(x, t)[known], rho_t^2 I)`` with Tweedie's
  ``x0_hat = (x + std(t)^2 score) / scale(t)`` and ``rho_t = std(t) / scale(t)``, an approximation of
  ``p(y | x_t)``;
* proposals ``x_s ~ N(mu(x_t) + sigma^2 grad log h_t(x_t), sigma^2 I)`` (``proposal="twisted"``) or the
  model's own transition (``proposal="model"``);
* incremental weights ``p(x_s | x_t) h_s(x_s) / (q(x_s | x_t) h_t(x_t))``;
* a last step that conditions exactly: the known entries are set to ``y``, the unknown ones drawn from
  the model's last transition, with the weight ``N(y; mu(x_1)[known], sigma_1^2) / h_1(x_1)``;
* resampling (systematic) whenever the effective sample size falls below ``ess_threshold * P``.

Whatever the twist, the weighted particles target the model's exact conditional as ``P -> infinity``
(the twist only changes the variance). With an exact score the model's conditional is the data's,
up to the discretisation error of the ancestral chain.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Tuple

import torch
from torch import Tensor

from ._utils import append_dims, batch_sum, check_memory
from ._validation import check_generator, choice, finite_float, positive_int, probability, step_count
from .errors import IncompatibleSDEError, OptionError
from .inpainting import check_inpainting_inputs
from .noise import rand, randn
from .score import ScoreFn
from .sde.base import SDE

PROPOSALS = ("twisted", "model")


@dataclass
class SMCResult:
    """What :func:`smc_inpaint` returns.

    Attributes:
        samples: ``[B, *event]``, one particle per problem drawn according to the final weights.
        particles: ``[B, P, *event]``, all final particles (known entries equal to ``y``).
        weights: ``[B, P]``, their normalised weights; ``(weights * particles).sum(1)`` estimates the
            conditional mean.
        log_evidence: ``[B]``, the estimate of ``log p_model(x_eps[known] = y)``.
        ess: ``[steps]``, the mean effective sample size fraction (in ``(0, 1]``) after each step's reweighting.
        resampled: number of steps at which particles were resampled.
        nfe: score evaluations (each on ``B * P`` samples).
    """

    samples: Tensor
    particles: Tensor
    weights: Tensor
    log_evidence: Tensor
    ess: Tensor
    resampled: int
    nfe: int

    def mean(self) -> Tensor:
        """The weighted particle estimate of the conditional mean, ``[B, *event]``."""
        w = append_dims(self.weights, self.particles.ndim).to(self.particles)
        return (w * self.particles).sum(1)


def _systematic(weights: Tensor, generator: Optional[torch.Generator]) -> Tensor:
    """Systematic resampling of each row of ``weights`` ``[B, P]``: indices ``[B, P]``."""
    B, P = weights.shape
    u0 = rand((B, 1), generator, weights.device, torch.float64)
    positions = (u0 + torch.arange(P, device=weights.device, dtype=torch.float64)) / P
    cdf = weights.double().cumsum(1)
    cdf[:, -1] = 1.0
    return torch.searchsorted(cdf, positions).clamp_(max=P - 1)


def _check_smc_args(sde: Any, score_fn: Any, x_known: Any, mask: Any, num_particles: Any, steps: Any, generator: Any,
                    eps: Any, ess_threshold: Any, proposal: Any) -> Tuple[Tensor, Tensor, int, int, float, float]:
    """Validate :func:`smc_inpaint`'s arguments; return ``(x_known, mask, num_particles, steps, eps, ess_threshold)``."""
    if not isinstance(sde, SDE):
        raise OptionError(f"sde must be a scoresde.SDE, got {type(sde).__name__}")
    if not callable(score_fn):
        raise OptionError(f"score_fn must be callable as score_fn(x, t), got {type(score_fn).__name__}")
    x_known, mask = check_inpainting_inputs(x_known, mask)
    if not sde.has_kernel:
        raise IncompatibleSDEError(f"smc_inpaint needs an SDE with a closed-form kernel; {type(sde).__name__} has none")
    num_particles = positive_int(num_particles, "num_particles")
    steps = step_count(steps, "steps")
    check_generator(generator)
    ess_threshold = probability(ess_threshold, "ess_threshold")
    eps = finite_float(eps, "eps")
    if not 0.0 < eps < sde.T:
        raise OptionError(f"eps must lie in (0, T) = (0, {sde.T}), got {eps}")
    choice(proposal, "proposal", PROPOSALS)
    check_memory(6 * x_known.numel() * num_particles * x_known.element_size(),
                 f"{num_particles:,} particles for x_known of shape {tuple(x_known.shape)}", "Use fewer particles")
    return x_known, mask, num_particles, steps, eps, ess_threshold


def smc_inpaint(
    sde: SDE,
    score_fn: ScoreFn,
    x_known: Tensor,
    mask: Any,
    num_particles: int = 16,
    steps: int = 200,
    generator: Optional[torch.Generator] = None,
    *,
    eps: float = 1e-3,
    ess_threshold: float = 0.5,
    proposal: str = "twisted",
) -> SMCResult:
    """Inpaint by sequential Monte Carlo: asymptotically exact in the number of particles.

    Args:
        sde: an SDE with a closed-form Gaussian kernel.
        score_fn: the model's score ``(x, t) -> like x``; with ``proposal="twisted"`` it must be
            differentiable in ``x`` (networks and the exact scores are).
        x_known: ``[B, *event]``: ``B`` independent problems; entries where ``mask == 0`` are ignored.
        mask: 0/1 broadcastable to ``x_known`` (``[*event]`` or ``[B, *event]``), 1 = known.
        num_particles: ``P`` particles per problem (the score sees batches of ``B * P``).
        steps: ancestral steps from ``T`` to ``eps``.
        generator: the source of all randomness.
        eps: the final time; the result is the model's ``x_eps`` (no final denoising step, which would
            not be a Gaussian transition).
        ess_threshold: resample when the effective sample size falls below this fraction of ``P``
            (1: every step, 0: never).
        proposal: ``"twisted"`` (shift by ``sigma^2 grad log h``, one backward pass per step) or
            ``"model"`` (the plain ancestral transition; no gradients, more weight degeneracy).

    Returns:
        An :class:`SMCResult`.

    Raises:
        MaskError, ShapeError: bad ``mask`` or ``x_known``.
        IncompatibleSDEError: an SDE without a kernel.
        ValueError: bad ``num_particles``, ``steps``, ``ess_threshold``, ``eps`` or ``proposal``.
    """
    x_known, mask, num_particles, steps, eps, ess_threshold = _check_smc_args(
        sde, score_fn, x_known, mask, num_particles, steps, generator, eps, ess_threshold, proposal)
    B, P = x_known.shape[0], num_particles
    event = x_known.shape[1:]
    dtype, device = x_known.dtype, x_known.device
    y = torch.where(mask, x_known, torch.zeros_like(x_known)).repeat_interleave(P, 0)  # [B P, *event]
    m = mask.repeat_interleave(P, 0).to(dtype)
    n_known = batch_sum(m)  # [B P]
    grid = torch.linspace(sde.T, eps, int(steps) + 1, device=device, dtype=dtype)
    nfe = 0

    def noise_like(x: Tensor) -> Tensor:
        return randn(x.shape, generator=generator, device=device, dtype=dtype)

    def evaluate(x: Tensor, t: Tensor):
        """Score, ``log h_t(x)`` and (twisted proposal) ``grad log h_t(x)`` at ``x`` ``[BP, *event]``."""
        nonlocal nfe
        nfe += 1
        scale, std = sde.marginal_coeffs(t)
        rho2 = append_dims((std / scale) ** 2, x.ndim)
        with torch.enable_grad():
            xg = x.detach().requires_grad_(proposal == "twisted")
            s = score_fn(xg, t)
            x0 = (xg + append_dims(std**2, x.ndim) * s) / append_dims(scale, x.ndim)
            log_h = -0.5 * batch_sum(m * (y - x0) ** 2 / rho2) - 0.5 * n_known * torch.log(2 * math.pi * rho2.flatten())
            grad = torch.autograd.grad(log_h.sum(), xg)[0] if proposal == "twisted" else None
        return s.detach(), log_h.detach(), grad

    def log_normal(z: Tensor, var: Tensor) -> Tensor:  # per-sample log N(z; 0, var) over the masked entries
        return -0.5 * batch_sum(m * z**2 / var) - 0.5 * n_known * torch.log(2 * math.pi * var.flatten())

    t = grid[0].expand(B * P)
    x = sde.prior_sample((B * P, *event), generator=generator, device=device, dtype=dtype)
    s, log_h, grad = evaluate(x, t)
    log_w = log_h.clone()  # the target includes h_T; the prior is the proposal
    log_z = torch.zeros(B, device=device, dtype=dtype)
    ess_trace, resampled = [], 0

    for i in range(int(steps)):
        t, t_next = grid[i].expand(B * P), grid[i + 1].expand(B * P)
        last = i == int(steps) - 1
        # the model's ancestral transition x_s | x_t ~ N(mu, sigma^2 I)
        a, v = sde.transition_coeffs(t_next, t)
        _, std_t = sde.marginal_coeffs(t)
        _, std_s = sde.marginal_coeffs(t_next)
        mu = (x + append_dims(v * v, x.ndim) * s) / append_dims(a, x.ndim)
        var = append_dims((v * std_s / std_t) ** 2, x.ndim)
        if last:
            # condition exactly: known entries = y, unknown ones from the model; weight p(y | x_1) / h_1
            x = torch.where(m.bool(), y, mu + var.sqrt() * noise_like(x))
            log_w = log_w + log_normal(y - mu, var) - log_h
        else:
            shift = var * grad if proposal == "twisted" else torch.zeros_like(mu)
            x_new = mu + shift + var.sqrt() * noise_like(x)
            s, log_h_new, grad = evaluate(x_new, t_next)
            # log p(x_s | x_t) - log q(x_s | x_t), then the twist ratio h_s(x_s) / h_t(x_t)
            log_pq = batch_sum((-((x_new - mu) ** 2) + (x_new - mu - shift) ** 2) / (2 * var))
            log_w = log_w + log_pq + log_h_new - log_h
            x, log_h = x_new, log_h_new
        lw = log_w.reshape(B, P)
        w = torch.softmax(lw, dim=1)
        ess = 1.0 / (w**2).sum(1) / P  # [B], fraction of P
        ess_trace.append(ess.mean())
        if not last and ess_threshold > 0 and bool((ess < ess_threshold).any()):
            resampled += 1
            log_z = log_z + torch.logsumexp(lw, 1) - math.log(P)
            idx = _systematic(w, generator)  # [B, P]
            flat = (idx + P * torch.arange(B, device=device)[:, None]).reshape(-1)
            x, s, log_h = x[flat], s[flat], log_h[flat]
            grad = grad[flat] if grad is not None else None
            log_w = torch.zeros_like(log_w)

    lw = log_w.reshape(B, P)
    log_z = log_z + torch.logsumexp(lw, 1) - math.log(P)
    w = torch.softmax(lw, dim=1)
    particles = x.reshape(B, P, *event)
    pick = torch.multinomial(w.double().cpu() if generator is None or generator.device.type == "cpu" else w.double(),
                             1, generator=generator).squeeze(1).to(device)
    samples = particles[torch.arange(B, device=device), pick]
    return SMCResult(samples=samples, particles=particles, weights=w, log_evidence=log_z,
                     ess=torch.stack(ess_trace), resampled=resampled, nfe=nfe)


__all__ = ["smc_inpaint", "SMCResult", "PROPOSALS"]
