"""Variance-preserving (VP) and sub-VP SDEs with a linear beta schedule (Song et al. 2021)."""

from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor

from .._utils import append_dims
from .._validation import finite_float
from ..errors import OptionError
from .base import SDE

#: The largest ``beta_max``: beyond it ``exp(-B(T))`` underflows float32 and the kernel's scale vanishes.
MAX_BETA = 200.0


class _LinearBetaSDE(SDE):
    """Shared linear schedule ``beta(t) = beta_min + t (beta_max - beta_min)``."""

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0):
        beta_min, beta_max = finite_float(beta_min, "beta_min"), finite_float(beta_max, "beta_max")
        if not (beta_min > 0 and beta_max >= beta_min and beta_max <= MAX_BETA):
            raise OptionError(f"need 0 < beta_min <= beta_max <= {MAX_BETA:g} (beyond it the kernel's scale exp(-B(T)/2) "
                              f"underflows float32), got beta_min={beta_min}, beta_max={beta_max}")
        self.beta_min = float(beta_min)
        self.beta_max = float(beta_max)

    def beta(self, t: Tensor) -> Tensor:
        """``beta(t)``, shape ``[B]``."""
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def integrated_beta(self, t: Tensor) -> Tensor:
        """``B(t) = int_0^t beta(s) ds = beta_min t + (beta_max - beta_min) t^2 / 2``, shape ``[B]``."""
        return self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t * t

    def drift(self, x: Tensor, t: Tensor) -> Tensor:
        """``f(x, t) = -beta(t) x / 2``."""
        return -0.5 * append_dims(self.beta(t), x.ndim) * x

    @property
    def prior_std(self) -> float:
        return 1.0

    def _time_at_integrated_beta(self, B: Tensor) -> Tensor:
        """Invert ``B(t) = beta_min t + (beta_max - beta_min) t^2 / 2`` (the stable root of the quadratic)."""
        d = self.beta_max - self.beta_min
        return (2 * B / (self.beta_min + torch.sqrt(self.beta_min**2 + 2 * d * B))).clamp(0, self.T)


class VPSDE(_LinearBetaSDE):
    """Variance-preserving SDE, the continuous limit of DDPM.

    ``dx = -beta(t) x / 2 dt + sqrt(beta(t)) dw`` with ``beta(t) = beta_min + t (beta_max - beta_min)``.
    Kernel: ``scale(t) = exp(-B(t)/2)``, ``std(t)^2 = 1 - exp(-B(t))``; prior ``N(0, I)``.
    """

    def diffusion(self, t: Tensor) -> Tensor:
        """``g(t) = sqrt(beta(t))``."""
        return self.beta(t).sqrt()

    def marginal_coeffs(self, t: Tensor) -> Tuple[Tensor, Tensor]:
        B = self.integrated_beta(t)
        return torch.exp(-0.5 * B), torch.sqrt(-torch.expm1(-B))

    def time_at_noise_to_signal(self, ratio: Tensor, iters: int = 64) -> Tensor:
        """Closed form: ``ratio^2 = exp(B(t)) - 1``, so ``B = log1p(ratio^2)``."""
        return self._time_at_integrated_beta(torch.log1p(ratio * ratio))

    def transition_coeffs(self, s: Tensor, t: Tensor) -> Tuple[Tensor, Tensor]:
        """``a = exp(-(B(t)-B(s))/2)``, ``v^2 = 1 - exp(-(B(t)-B(s)))``: no cancellation."""
        dB = self.integrated_beta(t) - self.integrated_beta(s)
        return torch.exp(-0.5 * dB), torch.sqrt((-torch.expm1(-dB)).clamp_min(0))


class SubVPSDE(_LinearBetaSDE):
    """Sub-VP SDE (Song et al. 2021), whose variance stays below the VP SDE's.

    ``dx = -beta(t) x / 2 dt + sqrt(beta(t) (1 - exp(-2 B(t)))) dw``.
    Kernel: ``scale(t) = exp(-B(t)/2)``, ``std(t) = 1 - exp(-B(t))``; prior ``N(0, I)``.
    """

    def diffusion(self, t: Tensor) -> Tensor:
        """``g(t) = sqrt(beta(t) (1 - exp(-2 B(t))))``."""
        return torch.sqrt(self.beta(t) * -torch.expm1(-2.0 * self.integrated_beta(t)))

    def marginal_coeffs(self, t: Tensor) -> Tuple[Tensor, Tensor]:
        B = self.integrated_beta(t)
        return torch.exp(-0.5 * B), -torch.expm1(-B)

    def time_at_noise_to_signal(self, ratio: Tensor, iters: int = 64) -> Tensor:
        """Closed form: ``ratio = (1 - e^{-B}) e^{B/2} = 2 sinh(B/2)``, so ``B = 2 asinh(ratio / 2)``."""
        return self._time_at_integrated_beta(2 * torch.asinh(ratio / 2))
