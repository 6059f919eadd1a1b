"""Direct transcriptions of two published few-step samplers, as reference peers for the benchmark.

diffusers has no multistep scheduler for the VE SDE, so the few-step benchmark compares our
solvers on VE (and, as an extra peer, on VP) with these transcriptions of the papers' algorithms.
Both run in the EDM / k-diffusion frame: ``x_sigma = x_t / scale(t)`` against the noise-to-signal
ratio ``sigma = std(t) / scale(t)``, with the denoiser ``D(x_sigma; sigma) = E[x_0 | x_sigma]``
(``peers.denoiser`` builds it from a score). In that frame the probability-flow
ODE is ``dx/dsigma = (x - D(x; sigma)) / sigma`` for every SDE with a Gaussian kernel, so one
transcription serves VP and VE. They live in ``benchmarks/``, not in the package: they are the
yardstick, written from the papers, not from our solvers.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

Denoiser = Callable[[Tensor, Tensor], Tensor]


def karras_sigmas(sigma_max: float, sigma_min: float, n: int, rho: float = 7.0) -> Tensor:
    """Karras et al. (2022), eq. 5: ``n`` levels from ``sigma_max`` to ``sigma_min`` uniform in
    ``sigma^(1/rho)``, then ``0``: ``[n + 1]`` (float64)."""
    i = torch.arange(n, dtype=torch.float64) / max(n - 1, 1)
    a, b = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    return torch.cat([(a + i * (b - a)) ** rho, torch.zeros(1, dtype=torch.float64)])


def log_snr_sigmas(sigma_max: float, sigma_min: float, n: int) -> Tensor:
    """``n`` levels geometric from ``sigma_max`` to ``sigma_min`` (uniform in log-SNR), then ``0``: ``[n + 1]``."""
    i = torch.arange(n, dtype=torch.float64) / max(n - 1, 1)
    lo, hi = math.log(sigma_min), math.log(sigma_max)
    return torch.cat([torch.exp(hi + i * (lo - hi)), torch.zeros(1, dtype=torch.float64)])


def _level(sigma: float, x: Tensor) -> Tensor:
    return torch.full((x.shape[0],), float(sigma), dtype=x.dtype, device=x.device)


@torch.no_grad()
def ddim(D: Denoiser, x: Tensor, sigmas: Tensor) -> Tensor:
    """DDIM, Song et al. (2021) "Denoising Diffusion Implicit Models", eq. (12) with ``eta = 0``.

    In the sigma frame (their eq. 14: ``x_bar = x / sqrt(alpha)``, ``sigma = sqrt(1 - alpha) / sqrt(alpha)``)
    the update is ``x_{i+1} = x_i + (sigma_{i+1} - sigma_i) (x_i - D_i) / sigma_i``, Euler's method on
    ``dx/dsigma = (x - D) / sigma`` (Karras et al. 2022, Algorithm 1 without lines 6-8), and also
    DPM-Solver++(1). ``len(sigmas) - 1`` evaluations of ``D``.
    """
    for i in range(len(sigmas) - 1):
        s, s_next = float(sigmas[i]), float(sigmas[i + 1])
        x0 = D(x, _level(s, x))
        x = x0 + (s_next / s) * (x - x0)
    return x


@torch.no_grad()
def dpmpp_2m(D: Denoiser, x: Tensor, sigmas: Tensor) -> Tensor:
    """DPM-Solver++(2M), Lu et al. (2022) "DPM-Solver++: Fast Solver for Guided Sampling of
    Diffusion Probabilistic Models", Algorithm 2 (multistep second order, data prediction).

    With ``lambda = -log sigma`` (the half log-SNR in the sigma frame, where ``alpha = 1``) and
    ``h_i = lambda_{i+1} - lambda_i``, eq. (9)/Algorithm 2 read, for the data prediction
    ``x0_i = D(x_i; sigma_i)``:

        x_{i+1} = (sigma_{i+1} / sigma_i) x_i - (e^{-h_i} - 1) D_i,
        D_i = x0_i                                                   (first step),
        D_i = (1 + 1 / (2 r_i)) x0_i - 1 / (2 r_i) x0_{i-1},  r_i = h_{i-1} / h_i   (later steps),

    and the last step to ``sigma = 0`` returns ``x0`` (the limit of the first-order update).
    ``len(sigmas) - 1`` evaluations of ``D``.

    Args:
        D: the denoiser ``(x [B, *event], sigma [B]) -> [B, *event]``.
        x: the start ``[B, *event]`` at ``sigmas[0]`` (in the sigma frame).
        sigmas: decreasing noise levels ``[N + 1]`` ending with ``0``.
    """
    x0_prev, h_prev = None, None
    for i in range(len(sigmas) - 1):
        s, s_next = float(sigmas[i]), float(sigmas[i + 1])
        x0 = D(x, _level(s, x))
        if s_next == 0.0:
            x = x0
            break
        h = math.log(s) - math.log(s_next)  # lambda_{i+1} - lambda_i
        if x0_prev is None:
            d = x0
        else:
            r = h_prev / h
            d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * x0_prev
        x = (s_next / s) * x - math.expm1(-h) * d
        x0_prev, h_prev = x0, h
    return x


@torch.no_grad()
def edm_heun(D: Denoiser, x: Tensor, sigmas: Tensor) -> Tensor:
    """Heun's second-order deterministic sampler, Karras et al. (2022) "Elucidating the Design
    Space of Diffusion-Based Generative Models", Algorithm 1 (``sigma(t) = t``, ``s(t) = 1``):

        d_i = (x_i - D(x_i; t_i)) / t_i                          (line 4)
        x_{i+1} = x_i + (t_{i+1} - t_i) d_i                        (line 5, Euler)
        if t_{i+1} != 0:                                           (line 6)
            d'_i = (x_{i+1} - D(x_{i+1}; t_{i+1})) / t_{i+1}      (line 7)
            x_{i+1} = x_i + (t_{i+1} - t_i) (d_i + d'_i) / 2      (line 8, trapezoidal correction)

    ``2 N - 1`` evaluations of ``D`` for ``sigmas`` ``[N + 1]`` ending with ``0``.
    """
    for i in range(len(sigmas) - 1):
        t, t_next = float(sigmas[i]), float(sigmas[i + 1])
        d = (x - D(x, _level(t, x))) / t
        x_next = x + (t_next - t) * d
        if t_next != 0.0:
            d2 = (x_next - D(x_next, _level(t_next, x))) / t_next
            x_next = x + (t_next - t) * (d + d2) / 2
        x = x_next
    return x


__all__ = ["karras_sigmas", "log_snr_sigmas", "ddim", "dpmpp_2m", "edm_heun"]
