"""Integration variables of the probability-flow ODE: the time ``t`` itself, or the log noise level.

With ``u = log sigma(t)``, ``sigma = sde.noise_to_signal(t)`` (minus the log-SNR), ``dy/du = dy/dt * dt/du``
and ``dt/du = sigma(t) / sigma'(t)``. Near the data ``sigma`` is small and changes fast in ``t`` (VP:
``sigma ~ sqrt(beta_min t)``); in ``u`` the trajectory is smoother, so an adaptive solver needs fewer steps
at the same error. It needs an SDE with a closed-form kernel (``noise_to_signal`` and its inverse).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..errors import OptionError

__all__ = ["TIME_VARIABLES", "LogNoiseLevel", "check_time_variable"]

#: Integration variables: the time ``t`` itself, or ``u = log sigma(t)`` (``"log_sigma"``, the log noise level).
TIME_VARIABLES = ("t", "log_sigma")


def check_time_variable(time_variable: Any, sde: Any) -> str:
    """Validate a ``time_variable`` option against the SDE; return it."""
    if time_variable not in TIME_VARIABLES:
        raise OptionError(f"time_variable must be one of {TIME_VARIABLES}, got {time_variable!r}")
    if time_variable != "t" and not sde.has_kernel:
        raise OptionError(f"time_variable={time_variable!r} needs an SDE with a closed-form kernel; use 't'")
    return time_variable


class LogNoiseLevel:
    """The change of variable ``u = log sigma(t)`` on ``[t_lo, t_hi]``, computed in float64.

    Attributes:
        u_lo, u_hi: ``u`` at ``t_lo`` and ``t_hi`` (floats).
    """

    def __init__(self, sde: Any, t_lo: float, t_hi: float):
        self.sde = sde
        self.t_lo, self.t_hi = float(t_lo), float(t_hi)
        ends = torch.tensor([self.t_lo, self.t_hi], dtype=torch.float64)
        self.u_lo, self.u_hi = (float(v) for v in torch.log(sde.noise_to_signal(ends)))

    def u_of(self, t: Tensor) -> Tensor:
        """``u(t) = log sigma(t)`` in float64, shaped like ``t``."""
        return torch.log(self.sde.noise_to_signal(t.to(torch.float64)))

    def time(self, u: Tensor) -> Tensor:
        """``t(u)``, clamped to ``[t_lo, t_hi]``, shaped like ``u`` (float64)."""
        t = self.sde.time_at_noise_to_signal(torch.exp(u.to(torch.float64)))
        return t.clamp(self.t_lo, self.t_hi)

    def dt_du(self, t: Tensor) -> Tensor:
        """``sigma(t) / sigma'(t)``, shaped like ``t`` (the derivative by autograd through the SDE's closed form)."""
        with torch.enable_grad():
            tt = t.detach().requires_grad_(True)
            sigma = self.sde.noise_to_signal(tt)
            (dsigma,) = torch.autograd.grad(sigma.sum(), tt)
        return (sigma / dsigma).detach()
