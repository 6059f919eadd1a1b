"""A VP SDE through a discrete DDPM noise table, for models trained at integer timesteps.

A DDPM-style model is trained at timesteps ``n = 0 .. N-1`` with ``x_n = sqrt(abar_n) x_0 + sqrt(1 - abar_n) eps``.
:class:`DiscreteVPSDE` is the continuous-time VP SDE whose Gaussian kernel passes through that table:
timestep ``n`` sits at time ``t_n = (n + 1) / N`` (so ``t = 1`` is the last timestep ``N - 1`` and
``t = 0`` the clean data), and between the table's times the noise level is interpolated linearly in
``log sigma``, with ``sigma = sqrt((1 - abar) / abar)`` the noise-to-signal ratio (equivalently, the
log-SNR ``-2 log sigma`` is piecewise linear in ``t``). This is the interpolation k-diffusion's discrete
wrappers use (``k_diffusion/external.py``: ``DiscreteSchedule.t_to_sigma``/``sigma_to_t``), so the
fractional timestep of time ``t`` is simply ``n(t) = t N - 1``. Below the first timestep,
``t in [0, 1/N]``, ``sigma^2`` falls linearly to 0 (``sigma(t)^2 = sigma_0^2 t N``), so that ``std(0) = 0``.
"""

from __future__ import annotations

from typing import Dict, Sequence, Tuple, Union

import torch
from torch import Tensor

from .._utils import append_dims
from ..errors import OptionError
from .base import SDE


class DiscreteVPSDE(SDE):
    """VP SDE whose kernel reproduces a discrete table ``abar_n`` (``alphas_cumprod``) at ``t_n = (n + 1) / N``.

    With ``sigma(t)`` the interpolated noise-to-signal ratio (module docstring) and ``rho = sigma^2``:

    * kernel: ``scale(t) = (1 + rho)^(-1/2)``, ``std(t) = sigma scale``, so ``scale(t_n)^2 = abar_n`` and
      ``std(t_n)^2 = 1 - abar_n`` exactly;
    * drift ``f(x, t) = (d log scale / dt) x = -rho' / (2 (1 + rho)) x``;
    * diffusion ``g(t)^2 = d std^2/dt - 2 (d log scale/dt) std^2 = scale^2 rho' = rho' / (1 + rho)``;

    with ``rho' = 2 rho N (log sigma_{n+1} - log sigma_n)`` on ``[t_n, t_{n+1}]`` and ``rho' = sigma_0^2 N``
    on ``[0, t_0]``. Between two table times the one-step kernel is DDPM's: ``x_{t_m} | x_{t_n}`` has
    ``a^2 = abar_m / abar_n`` and ``v^2 = 1 - a^2``. The prior is ``N(0, I)``, as DDPM pipelines start from.

    Args:
        alphas_cumprod: ``abar_0 .. abar_{N-1}``, ``[N]`` with ``N >= 2``, strictly decreasing in ``(0, 1)``.
    """

    def __init__(self, alphas_cumprod: Union[Tensor, Sequence[float]]):
        try:
            abar = torch.as_tensor(alphas_cumprod).detach().to("cpu", torch.float64)
        except (TypeError, ValueError, RuntimeError):
            raise OptionError(f"alphas_cumprod must be a 1-D sequence of numbers, got {type(alphas_cumprod).__name__}") from None
        if abar.ndim != 1 or abar.shape[0] < 2:
            raise OptionError(f"alphas_cumprod must be 1-D with at least 2 entries, got shape {tuple(abar.shape)}")
        if not bool(torch.isfinite(abar).all()) or not bool(((abar > 0) & (abar < 1)).all()):
            raise OptionError("alphas_cumprod must hold finite values in (0, 1) (a zero entry means infinite noise)")
        if not bool((abar.diff() < 0).all()):
            raise OptionError("alphas_cumprod must be strictly decreasing (every beta_n > 0)")
        self.alphas_cumprod = abar
        self.num_timesteps = int(abar.shape[0])
        self.log_sigmas = 0.5 * (torch.log1p(-abar) - torch.log(abar))
        self._tables: Dict[Tuple[torch.device, torch.dtype], Tuple[Tensor, Tensor]] = {}

    def __repr__(self) -> str:
        return f"DiscreteVPSDE(num_timesteps={self.num_timesteps})"

    # ----------------------------------------------------------------- time <-> timestep
    def timestep(self, t: Tensor) -> Tensor:
        """The fractional DDPM timestep ``n(t) = t N - 1`` of times ``t`` (any shape; ``-1`` at ``t = 0``)."""
        return t * self.num_timesteps - 1

    def time_at_timestep(self, n: Union[Tensor, Sequence[float]]) -> Tensor:
        """The time ``t = (n + 1) / N`` of (possibly fractional) timesteps ``n`` (any shape), as float64."""
        return (torch.as_tensor(n, dtype=torch.float64) + 1) / self.num_timesteps

    # ----------------------------------------------------------------- the interpolated noise level
    def _work(self, t: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """``(t, log sigma table, its per-step slope)`` in the working dtype (float64 for float64 ``t``, else float32)."""
        dtype = torch.float64 if t.dtype == torch.float64 else torch.float32
        key = (t.device, dtype)
        if key not in self._tables:
            ls = self.log_sigmas.to(device=t.device, dtype=dtype)
            self._tables[key] = (ls, ls.diff())
        ls, dls = self._tables[key]
        return t.to(dtype), ls, dls

    def _log_rho(self, t: Tensor) -> Tuple[Tensor, Tensor]:
        """``(log rho(t), g(t)^2 = rho'(t) / (1 + rho(t)))`` with ``rho = sigma^2``; shapes like ``t``, working dtype."""
        t, ls, dls = self._work(t)
        N = self.num_timesteps
        u = t * N - 1  # the fractional timestep
        i = u.floor().clamp(0, N - 2).long()
        w = u - i.to(u.dtype)
        log_rho = 2 * (ls[i] + w * dls[i])
        rate = 2 * N * dls[i] * torch.sigmoid(log_rho)  # (rho'/rho) (rho/(1+rho))
        first = u < 0  # [0, t_0]: rho = sigma_0^2 t N, rho' = sigma_0^2 N
        log_rho0 = 2 * ls[0] + torch.log((t * N).clamp_min(torch.finfo(u.dtype).tiny))
        rate0 = N * torch.exp(2 * ls[0]) * torch.sigmoid(-log_rho0)
        return torch.where(first, log_rho0, log_rho), torch.where(first, rate0, rate)

    def noise_to_signal(self, t: Tensor) -> Tensor:
        """``sigma(t) = std/scale``: the table's ``sqrt((1 - abar_n) / abar_n)`` at ``t_n``, log-linear between; ``[B]``."""
        return torch.exp(0.5 * self._log_rho(t)[0]).to(t.dtype)

    def marginal_coeffs(self, t: Tensor) -> Tuple[Tensor, Tensor]:
        """``(scale, std)`` ``[B]``: ``scale^2 = 1 / (1 + sigma^2)``, ``std^2 = sigma^2 / (1 + sigma^2)``."""
        log_rho = self._log_rho(t)[0]
        l1p = torch.nn.functional.softplus(log_rho)  # log(1 + rho)
        scale = torch.exp(-0.5 * l1p)
        std = torch.exp(0.5 * (log_rho - l1p))
        return scale.to(t.dtype), std.to(t.dtype)

    def _rate(self, t: Tensor) -> Tensor:
        """``g(t)^2 = rho' / (1 + rho)`` (the working dtype)."""
        return self._log_rho(t)[1]

    def drift(self, x: Tensor, t: Tensor) -> Tensor:
        """``f(x, t) = -g(t)^2 x / 2`` (``d log scale / dt = -rho' / (2 (1 + rho))``)."""
        return -0.5 * append_dims(self._rate(t).to(x.dtype), x.ndim) * x

    def diffusion(self, t: Tensor) -> Tensor:
        """``g(t) = sqrt(rho' / (1 + rho))``, ``[B]``."""
        return self._rate(t).sqrt().to(t.dtype)

    def transition_coeffs(self, s: Tensor, t: Tensor) -> Tuple[Tensor, Tensor]:
        """``a = scale(t)/scale(s)``, ``v^2 = 1 - a^2`` (the VP identity; DDPM's ``beta`` between table times)."""
        ls, lt = self._log_rho(s)[0], self._log_rho(t)[0]
        log_a = 0.5 * (torch.nn.functional.softplus(ls) - torch.nn.functional.softplus(lt))
        v = torch.sqrt((-torch.expm1(2 * log_a)).clamp_min(0))
        return torch.exp(log_a).to(t.dtype), v.to(t.dtype)

    def time_at_noise_to_signal(self, ratio: Tensor, iters: int = 64) -> Tensor:
        """Closed form: invert the piecewise log-linear ``sigma(t)`` (``searchsorted`` on the table); same shape as ``ratio``."""
        r, ls, dls = self._work(ratio)
        N = self.num_timesteps
        lr = torch.log(r.clamp_min(torch.finfo(r.dtype).tiny))
        i = (torch.searchsorted(ls, lr.reshape(-1).contiguous(), right=True) - 1).clamp(0, N - 2).reshape(lr.shape)
        u = i.to(r.dtype) + (lr - ls[i]) / dls[i]
        t_above = (u + 1) / N
        t_below = torch.exp(2 * (lr - ls[0])) / N
        t = torch.where(lr < ls[0], t_below, t_above)
        return t.clamp(0, self.T).to(ratio.dtype)

    @property
    def prior_std(self) -> float:
        """1: the prior is ``N(0, I)`` (the kernel's ``std(T) = sqrt(1 - abar_{N-1})`` is within ``abar_{N-1}/2`` of it)."""
        return 1.0


__all__ = ["DiscreteVPSDE"]
