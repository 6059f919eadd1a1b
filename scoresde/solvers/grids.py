"""Time grids as data: where a fixed-step solver evaluates the score.

A grid maps ``(sde, steps, eps)`` to ``steps + 1`` strictly decreasing times from ``T`` to ``eps``
(a float64 tensor). :data:`GRIDS` maps names to grid classes; :func:`scoresde.solve` takes a name,
a grid object, or a tensor of times through its ``grid`` argument, and every solver names its
default. Grids spaced in the noise level need the SDE's closed-form kernel; they place times with
the kernel's inverse (:meth:`scoresde.SDE.time_at_noise_to_signal`), closed-form for VP, sub-VP and VE.
"""

from __future__ import annotations

import math
from typing import ClassVar, Dict, Type

import torch
from torch import Tensor

from .._validation import finite_float
from ..errors import IncompatibleSDEError, TimeRangeError
from ..sde.base import SDE

__all__ = ["GRIDS", "TimeGrid", "Uniform", "LogSNR", "Karras", "Quadratic"]


#: How far (relative) the ends of a grid's :meth:`TimeGrid.times` may be from ``T`` and ``eps`` before snapping to them.
ENDS_RTOL = 1e-6


class TimeGrid:
    """A rule that places ``steps + 1`` decreasing times from ``T`` to ``eps``.

    Subclasses implement :meth:`times` and declare ``requires_kernel`` when they space the grid
    in the kernel's noise level.
    """

    name: ClassVar[str] = ""
    requires_kernel: ClassVar[bool] = False

    def __call__(self, sde: SDE, steps: int, eps: float) -> Tensor:
        """Times ``[steps + 1]`` (float64), ``T`` first and ``eps`` last, strictly decreasing."""
        if self.requires_kernel and not sde.has_kernel:
            raise IncompatibleSDEError(
                f"grid {self.name!r} is spaced in the noise level, which needs an SDE with a closed-form kernel; "
                f"{type(sde).__name__} has none: use grid='uniform' or 'quadratic'"
            )
        t = self.times(sde, int(steps), float(eps))
        if not isinstance(t, Tensor) or t.ndim != 1 or t.shape[0] != int(steps) + 1:
            got = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
            raise TimeRangeError(f"grid {self!r}: times() must return a 1-D tensor of steps + 1 = {int(steps) + 1} times, got {got}")
        t = t.to(torch.float64).clone()
        T = float(sde.T)
        for where, got, want in (("start", float(t[0]), T), ("end", float(t[-1]), float(eps))):
            if not abs(got - want) <= ENDS_RTOL * abs(want):  # NaN fails too
                raise TimeRangeError(f"grid {self!r} must {where} at {'T' if where == 'start' else 'eps'} = {want:g}, got "
                                     f"{got:.6g}; a grid runs from T (the prior) to eps (where sampling stops)")
        t[0], t[-1] = T, eps  # exact ends whatever the rounding of an inverse
        return t

    def times(self, sde: SDE, steps: int, eps: float) -> Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"


def _noise_levels(sde: SDE, eps: float) -> "tuple[float, float]":
    """Noise-to-signal ratios ``sigma(T)`` and ``sigma(eps)`` of the kernel."""
    r = sde.noise_to_signal(torch.tensor([sde.T, eps], dtype=torch.float64))
    s_max, s_min = float(r[0]), float(r[1])
    if not (0 < s_min < s_max < math.inf):
        raise TimeRangeError(f"eps = {eps:.3g} is too close to 0 (or T): the noise levels sigma(eps) = {s_min:.3g} and "
                             f"sigma(T) = {s_max:.3g} cannot be spaced in the noise level; raise eps")
    return s_max, s_min


class Uniform(TimeGrid):
    """Uniform in ``t``: ``t_i = T - i (T - eps) / steps`` (the SDE samplers' classic grid)."""

    name = "uniform"

    def times(self, sde: SDE, steps: int, eps: float) -> Tensor:
        return torch.linspace(sde.T, eps, steps + 1, dtype=torch.float64)


class Quadratic(TimeGrid):
    """Quadratic in ``t`` (DDIM's "quadratic" schedule): ``t_i = eps + (T - eps) (1 - i / steps)^2``.

    Steps shrink towards the data end, where the score changes fastest.
    """

    name = "quadratic"

    def times(self, sde: SDE, steps: int, eps: float) -> Tensor:
        u = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
        return eps + (sde.T - eps) * u * u


class LogSNR(TimeGrid):
    """Uniform in the half log signal-to-noise ratio ``lambda = log(scale / std)`` (DPM-Solver's grid).

    For VE this is geometric in ``sigma``, NCSN's noise ladder.
    """

    name = "log_snr"
    requires_kernel = True

    def times(self, sde: SDE, steps: int, eps: float) -> Tensor:
        s_max, s_min = _noise_levels(sde, eps)
        lam = torch.linspace(-math.log(s_max), -math.log(s_min), steps + 1, dtype=torch.float64)
        return sde.time_at_log_snr(lam)


#: The valid range of Karras' ``rho``: outside it ``sigma^(1/rho)`` overflows or the grid collapses onto one end.
RHO_RANGE = (0.1, 1000.0)


class Karras(TimeGrid):
    """Karras et al. (2022), eq. 5: uniform in ``sigma^(1/rho)`` with ``sigma = std / scale``.

    ``sigma_i = (sigma_max^(1/rho) + i / steps (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho``;
    ``rho = 7`` is the paper's choice; ``rho = 1`` is uniform in ``sigma``, large ``rho`` tends to
    the log-SNR grid.

    Args:
        rho: the exponent, a number in ``[0.1, 1000]`` (:data:`RHO_RANGE`).
    """

    name = "karras"
    requires_kernel = True

    def __init__(self, rho: float = 7.0):
        lo, hi = RHO_RANGE
        self.rho = finite_float(rho, "rho", minimum=lo, maximum=hi)

    def times(self, sde: SDE, steps: int, eps: float) -> Tensor:
        s_max, s_min = _noise_levels(sde, eps)
        u = torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64)
        a, b = s_max ** (1 / self.rho), s_min ** (1 / self.rho)
        # lerp is exact at both ends (a + u (b - a) loses b to cancellation when a >> b, as for small rho)
        return sde.time_at_noise_to_signal(torch.lerp(torch.full_like(u, a), torch.full_like(u, b), u) ** self.rho)


#: Public name -> grid class (instantiated with its defaults when named in :func:`scoresde.solve`).
GRIDS: Dict[str, Type[TimeGrid]] = {
    "uniform": Uniform,
    "quadratic": Quadratic,
    "log_snr": LogSNR,
    "karras": Karras,
}
