"""Variance-exploding (VE) SDE, the continuous limit of SMLD / NCSN (Song et al. 2021)."""

from __future__ import annotations

import math
from typing import Tuple

import torch
from torch import Tensor

from .._validation import finite_float
from ..errors import OptionError
from .base import SDE

#: Bounds of the VE schedule: ``sigma_max`` and ``sigma_max / sigma_min`` (beyond them ``sigma(t)^2`` overflows float32).
MAX_SIGMA = 1e6
MAX_SIGMA_RATIO = 1e12


class VESDE(SDE):
    """Variance-exploding SDE with a geometric noise schedule.

    ``sigma(t) = sigma_min (sigma_max / sigma_min)^t``; ``dx = sqrt(d sigma(t)^2 / dt) dw``, i.e.
    ``f = 0`` and ``g(t) = sigma(t) sqrt(2 log(sigma_max / sigma_min))``.
    Kernel: ``scale = 1``, ``std(t)^2 = sigma(t)^2 - sigma_min^2`` (so ``std(0) = 0``); prior
    ``N(0, sigma_max^2 I)``.
    """

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0):
        sigma_min, sigma_max = finite_float(sigma_min, "sigma_min"), finite_float(sigma_max, "sigma_max")
        if not (0 < sigma_min < sigma_max <= MAX_SIGMA and sigma_max / sigma_min <= MAX_SIGMA_RATIO):
            raise OptionError(f"need 0 < sigma_min < sigma_max <= {MAX_SIGMA:g} with sigma_max / sigma_min <= "
                              f"{MAX_SIGMA_RATIO:g} (beyond them sigma(t)^2 overflows float32), got sigma_min={sigma_min}, "
                              f"sigma_max={sigma_max}")
        self.sigma_min = float(sigma_min)
        self.sigma_max = float(sigma_max)

    @property
    def _log_ratio(self) -> float:
        return math.log(self.sigma_max / self.sigma_min)

    def sigma(self, t: Tensor) -> Tensor:
        """``sigma(t) = sigma_min (sigma_max / sigma_min)^t``, shape ``[B]``."""
        return self.sigma_min * torch.exp(t * self._log_ratio)

    def drift(self, x: Tensor, t: Tensor) -> Tensor:
        """``f = 0``."""
        return torch.zeros_like(x)

    def diffusion(self, t: Tensor) -> Tensor:
        """``g(t) = sigma(t) sqrt(2 log(sigma_max / sigma_min))``."""
        return self.sigma(t) * math.sqrt(2 * self._log_ratio)

    def marginal_coeffs(self, t: Tensor) -> Tuple[Tensor, Tensor]:
        std = self.sigma_min * torch.sqrt(torch.expm1(2 * self._log_ratio * t))
        return torch.ones_like(t), std

    def transition_coeffs(self, s: Tensor, t: Tensor) -> Tuple[Tensor, Tensor]:
        """``a = 1``, ``v^2 = sigma(t)^2 - sigma(s)^2 = sigma(s)^2 expm1(2 (t - s) log r)``."""
        v = self.sigma(s) * torch.sqrt(torch.expm1(2 * self._log_ratio * (t - s)).clamp_min(0))
        return torch.ones_like(t), v

    def time_at_noise_to_signal(self, ratio: Tensor, iters: int = 64) -> Tensor:
        """Closed form: ``ratio^2 = sigma_min^2 expm1(2 t log(sigma_max/sigma_min))``."""
        return (torch.log1p((ratio / self.sigma_min) ** 2) / (2 * self._log_ratio)).clamp(0, self.T)

    @property
    def prior_std(self) -> float:
        return self.sigma_max
