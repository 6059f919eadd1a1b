"""The abstract SDE every sampler and likelihood routine talks to.

A forward SDE ``dx = f(x, t) dt + g(t) dw`` runs from data at ``t = 0`` to the prior at ``t = T``.
Subclasses give the drift ``f`` and the diffusion ``g``; SDEs with a Gaussian transition kernel
``x_t | x_0 ~ N(scale(t) x_0, std(t)^2 I)`` also give :meth:`SDE.marginal_coeffs`, which unlocks the
solvers that need the kernel (ancestral, DDIM, annealed Langevin, the final denoising step).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Callable, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from .._utils import append_dims, as_time, batch_norm_sq, check_batch, event_numel, resolve_shape
from .._validation import boolean
from ..errors import DataError, IncompatibleSDEError, OptionError, ShapeError
from ..noise import randn

ScoreFn = Callable[[Tensor, Tensor], Tensor]


def _check_floating(x: Tensor, name: str) -> None:
    if not x.is_floating_point():
        raise DataError(
            f"{name} must be a floating-point tensor, got {x.dtype}; convert it first (x.float(), or "
            "scoresde.data.to_model_range for integer image levels)"
        )


class SDE(ABC):
    """Abstract forward SDE ``dx = f(x, t) dt + g(t) dw`` on ``t in [0, T]``.

    Conventions: ``x`` has shape ``[B, *event]``, ``t`` has shape ``[B]``, arguments come in the
    order ``(x, t)``.

    Subclasses must implement :meth:`drift` and :meth:`diffusion`. Those with a Gaussian
    transition kernel from ``t = 0`` implement :meth:`marginal_coeffs` too; the base class then
    derives :meth:`marginal`, :meth:`transition_coeffs` and the prior from it. A subclass without a
    closed-form kernel must set :attr:`prior_std` (or override :meth:`prior_sample` and
    :meth:`prior_log_prob`).
    """

    #: Terminal time of the forward process.
    T: float = 1.0

    # ----------------------------------------------------------------- the SDE itself
    @abstractmethod
    def drift(self, x: Tensor, t: Tensor) -> Tensor:
        """Drift ``f(x, t)``: ``x`` ``[B, *event]``, ``t`` ``[B]`` -> ``[B, *event]``."""

    @abstractmethod
    def diffusion(self, t: Tensor) -> Tensor:
        """Diffusion coefficient ``g(t)``: ``t`` ``[B]`` -> ``[B]``."""

    # ----------------------------------------------------------------- the Gaussian kernel
    def marginal_coeffs(self, t: Tensor) -> Tuple[Tensor, Tensor]:
        """Coefficients of the kernel ``x_t | x_0 ~ N(scale(t) x_0, std(t)^2 I)``.

        Args:
            t: times, shape ``[B]``.

        Returns:
            ``(scale, std)``, each of shape ``[B]``. ``std -> 0`` as ``t -> 0``.

        SDEs without a closed-form Gaussian kernel leave this unimplemented; solvers that need
        it then refuse the SDE with :class:`~scoresde.errors.IncompatibleSDEError`.
        """
        raise NotImplementedError(f"{type(self).__name__} has no closed-form Gaussian transition kernel")

    @property
    def has_kernel(self) -> bool:
        """Whether this SDE implements :meth:`marginal_coeffs` (a closed-form Gaussian kernel)."""
        return type(self).marginal_coeffs is not SDE.marginal_coeffs

    def marginal(self, x0: Tensor, t: Union[Tensor, float]) -> Tuple[Tensor, Tensor]:
        """Exact transition kernel from ``t = 0``: the mean and std of ``x_t`` given ``x_0``.

        Args:
            x0: clean data, shape ``[B, *event]``.
            t: times, shape ``[B]`` (or a number, broadcast to the batch), in ``[0, T]``.

        Returns:
            ``(mean, std)``: ``mean`` shaped like ``x0`` and ``std`` of shape ``[B]``.

        Raises:
            DataError: ``x0`` is not floating point (integer levels would make the kernel's
                coefficients, and so ``t``, integers: convert first, e.g. with
                :func:`scoresde.data.to_model_range`).
            TimeRangeError: ``t`` outside ``[0, T]`` or NaN.
        """
        check_batch(x0, "x0")
        _check_floating(x0, "x0")
        t = as_time(t, x0, self.T)
        scale, std = self.marginal_coeffs(t)
        return append_dims(scale, x0.ndim) * x0, std

    def perturb(
        self, x0: Tensor, t: Tensor, noise: Optional[Tensor] = None, generator: Optional[torch.Generator] = None
    ) -> Tuple[Tensor, Tensor, Tensor]:
        """Draw ``x_t ~ N(scale(t) x0, std(t)^2 I)``.

        Returns ``(x_t, noise, std)`` with ``x_t = mean + std * noise``; ``noise`` is drawn from
        ``generator`` unless given. Shapes: ``x_t`` and ``noise`` like ``x0``, ``std`` ``[B]``.
        """
        mean, std = self.marginal(x0, t)
        if noise is not None and not (isinstance(noise, Tensor) and noise.shape == x0.shape):
            raise ShapeError(f"noise must be a tensor shaped like x0 {tuple(x0.shape)}, got {getattr(noise, 'shape', type(noise))}")
        if noise is None:
            noise = randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        return mean + append_dims(std, x0.ndim) * noise, noise, std

    def transition_coeffs(self, s: Tensor, t: Tensor) -> Tuple[Tensor, Tensor]:
        """Kernel between two times ``s < t``: ``x_t | x_s ~ N(a x_s, v^2 I)``.

        Args:
            s, t: times of shape ``[B]`` with ``s <= t``.

        Returns:
            ``(a, v)`` of shape ``[B]``: ``a = scale(t) / scale(s)`` and
            ``v^2 = std(t)^2 - a^2 std(s)^2 = scale(t)^2 (rho(t) - rho(s))`` with ``rho = std^2/scale^2``.
        """
        scale_s, std_s = self.marginal_coeffs(s)
        scale_t, std_t = self.marginal_coeffs(t)
        a = scale_t / scale_s
        rho_s = (std_s / scale_s) ** 2
        rho_t = (std_t / scale_t) ** 2
        v = scale_t * (rho_t - rho_s).clamp_min(0).sqrt()
        return a, v

    def noise_to_signal(self, t: Tensor) -> Tensor:
        """``std(t) / scale(t)``, shape ``[B]``: the noise level of ``x_t / scale(t)``, increasing in ``t``.

        This is the ``sigma`` of the EDM / VE frame (Karras et al. 2022): ``x_t / scale(t) = x_0 + sigma(t) eps``.
        """
        scale, std = self.marginal_coeffs(t)
        return std / scale

    def log_snr(self, t: Tensor) -> Tensor:
        """Half log signal-to-noise ratio ``lambda(t) = log(scale(t) / std(t))``, shape ``[B]``, decreasing in ``t``.

        The variable of the exponential-integrator solvers (DPM-Solver++, UniPC): ``-log noise_to_signal(t)``.
        """
        return -torch.log(self.noise_to_signal(t))

    def time_at_log_snr(self, lam: Tensor) -> Tensor:
        """Invert :meth:`log_snr`: the times ``t`` with ``log(scale/std) = lam`` (any shape, same shape out)."""
        return self.time_at_noise_to_signal(torch.exp(-lam))

    def time_at_noise_to_signal(self, ratio: Tensor, iters: int = 64) -> Tensor:
        """Invert :meth:`noise_to_signal`: the times ``t`` with ``std/scale = ratio``.

        ``ratio`` has any shape; returns times of the same shape in ``[0, T]``. VP, sub-VP and VE
        override this with a closed form; the default is bisection on ``[0, T]``, which serves any
        SDE with a kernel (used by the log-SNR and Karras grids and annealed Langevin's ladder).
        """
        flat = ratio.reshape(-1)
        lo = torch.zeros_like(flat)
        hi = torch.full_like(flat, self.T)
        for _ in range(iters):
            mid = 0.5 * (lo + hi)
            below = self.noise_to_signal(mid) < flat
            lo = torch.where(below, mid, lo)
            hi = torch.where(below, hi, mid)
        return (0.5 * (lo + hi)).reshape(ratio.shape)

    # ----------------------------------------------------------------- prior
    @property
    def prior_std(self) -> float:
        """Standard deviation of the isotropic Gaussian prior ``N(0, prior_std^2 I)`` at ``t = T``.

        Defaults to the kernel's std at ``T``; VP-type SDEs use 1 and VE uses ``sigma_max``.
        """
        t = torch.tensor([self.T], dtype=torch.float64)
        return float(self.marginal_coeffs(t)[1])

    def prior_sample(
        self,
        shape: Sequence[int],
        generator: Optional[torch.Generator] = None,
        device: Optional[Union[torch.device, str]] = None,
        dtype: Optional[torch.dtype] = None,
    ) -> Tensor:
        """Draw ``z ~ N(0, prior_std^2 I)`` of shape ``[B, *event]`` from ``generator``.

        A subclass with a prior of its own overrides this *and* :meth:`prior_from_normal`, so that
        per-sample seeds (which supply standard normal noise) can drive it too.
        """
        shape = resolve_shape(shape)
        return self.prior_from_normal(randn(shape, generator=generator, device=device, dtype=dtype))

    def prior_from_normal(self, z: Tensor) -> Tensor:
        """Map standard normal noise ``z`` ``[B, *event]`` to a prior draw of the same shape: ``prior_std * z``.

        The hook per-sample seeds (:class:`scoresde.noise.SeededNoise`) draw the prior through.

        Raises:
            IncompatibleSDEError: the subclass overrides :meth:`prior_sample` without overriding this
                method, so standard normal noise cannot be turned into a draw from its prior.
        """
        if type(self).prior_sample is not SDE.prior_sample and type(self).prior_from_normal is SDE.prior_from_normal:
            raise IncompatibleSDEError(
                f"{type(self).__name__} overrides prior_sample (a prior of its own) but not prior_from_normal(z), which "
                "per-sample seeds need to map standard normal noise to a prior draw; implement prior_from_normal, or "
                "sample with generator= instead of seeds="
            )
        return self.prior_std * z

    def prior_log_prob(self, z: Tensor) -> Tensor:
        """Log-density of the prior, summed over all non-batch dimensions: ``[B, *event] -> [B]``."""
        check_batch(z, "z")
        d = event_numel(z)
        s2 = self.prior_std**2
        return -0.5 * d * math.log(2 * math.pi * s2) - 0.5 * batch_norm_sq(z) / s2

    # ----------------------------------------------------------------- reverse processes
    def reverse(self, score_fn: ScoreFn, probability_flow: bool = False) -> "ReverseSDE":
        """The reverse-time SDE (or, with ``probability_flow=True``, the probability-flow ODE).

        Reverse SDE: ``dx = [f(x, t) - g(t)^2 score(x, t)] dt + g(t) dw_bar`` run from ``T`` to 0.
        Probability-flow ODE: ``dx/dt = f(x, t) - 1/2 g(t)^2 score(x, t)``.
        """
        return ReverseSDE(self, score_fn, probability_flow)

    def probability_flow(self, score_fn: ScoreFn) -> "ReverseSDE":
        """Shorthand for ``reverse(score_fn, probability_flow=True)``."""
        return ReverseSDE(self, score_fn, True)

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({fields})"


def reverse_drift(sde: SDE, x: Tensor, t: Tensor, score: Tensor, c: float = 1.0) -> Tensor:
    """The drift of the reverse-time process, ``f(x, t) - c g(t)^2 score``, shaped like ``x``.

    ``c = 1`` gives the reverse SDE, ``c = 1/2`` the probability-flow ODE. ``x`` is ``[B, *event]``,
    ``t`` is ``[B]`` and ``score`` is the score at ``(x, t)``, shaped like ``x``. The one place the
    reverse drift is written: every sampler and the likelihood call it.
    """
    g = append_dims(sde.diffusion(t), x.ndim)
    return sde.drift(x, t) - c * g * g * score


class ReverseSDE:
    """Reverse-time SDE or probability-flow ODE of a forward :class:`SDE` for a score function.

    ``drift(x, t)`` is ``f - c g^2 score`` with ``c = 1`` (reverse SDE) or ``c = 1/2``
    (probability flow); ``diffusion(t)`` is ``g`` or 0. Both are to be integrated backwards in
    time, from ``T`` to ``eps``. Shapes: ``x`` ``[B, *event]``, ``t`` ``[B]``.
    """

    def __init__(self, sde: SDE, score_fn: ScoreFn, probability_flow: bool = False):
        if not isinstance(sde, SDE):
            raise OptionError(f"sde must be a scoresde.SDE, got {type(sde).__name__}")
        if not callable(score_fn):
            raise OptionError(f"score_fn must be callable as score_fn(x, t), got {type(score_fn).__name__}")
        self.sde = sde
        self.score_fn = score_fn
        self.probability_flow = boolean(probability_flow, "probability_flow")
        self.T = sde.T

    def drift(self, x: Tensor, t: Tensor) -> Tensor:
        """Reverse drift ``f(x, t) - c g(t)^2 score(x, t)``, shaped like ``x``."""
        return reverse_drift(self.sde, x, t, self.score_fn(x, t), 0.5 if self.probability_flow else 1.0)

    def diffusion(self, t: Tensor) -> Tensor:
        """``g(t)`` for the reverse SDE, zeros for the probability-flow ODE; shape ``[B]``."""
        g = self.sde.diffusion(t)
        return torch.zeros_like(g) if self.probability_flow else g
