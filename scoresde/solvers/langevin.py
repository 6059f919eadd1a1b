"""Langevin correctors: the corrector-only sampler, predictor–corrector and annealed Langevin (NCSN)."""

from __future__ import annotations

from typing import Optional, Union

import torch
from torch import Tensor

from .._utils import append_dims, batch_norm_sq, randn_like
from ..errors import IncompatibleSDEError
from ..sde.base import SDE
from .base import SolveContext, Solver


def langevin_correct(ctx: SolveContext, x: Tensor, t: Tensor, alpha: Tensor, snr: float, n_steps: int) -> Tensor:
    """``n_steps`` of Langevin MCMC targeting ``p_t`` with a signal-to-noise step size.

    Song et al. (2021), Algorithm 5::

        g = score(x, t);  z ~ N(0, I)
        e = 2 alpha (snr ||z|| / ||g||)^2
        x <- x + e g + sqrt(2 e) z

    As in the paper's implementation, ``||z||`` and ``||g||`` are per-sample norms averaged over
    the batch: per-sample ratios are unstable in low dimension, where ``||g||`` can be near 0.

    Args:
        x: ``[B, *event]``; t, alpha: ``[B]`` (``alpha = a^2`` of the one-step kernel, 1 for VE).
    """
    for _ in range(n_steps):
        g = ctx.score(x, t)
        z = randn_like(x, ctx.generator)
        g_norm = batch_norm_sq(g).sqrt().mean()
        z_norm = batch_norm_sq(z).sqrt().mean()
        e = append_dims(2 * alpha * (snr * z_norm / g_norm.clamp_min(torch.finfo(x.dtype).tiny)) ** 2, x.ndim)
        x = x + e * g + (2 * e).sqrt() * z
    return x


def _corrector_alpha(sde: SDE, t: Tensor, t_next: Tensor) -> Tensor:
    """``alpha_i = a^2`` of the kernel over the step (``1 - beta_i`` for VP, 1 for VE); 1 without a kernel."""
    if not sde.has_kernel:
        return torch.ones_like(t)
    a, _ = sde.transition_coeffs(t_next, t)
    return a * a


def _check_snr_steps(snr: float, n_steps: int) -> None:
    if not snr > 0:
        raise ValueError(f"snr must be positive, got {snr}")
    if int(n_steps) < 0:
        raise ValueError(f"corrector_steps must be >= 0, got {n_steps}")


class Langevin(Solver):
    """Corrector-only sampling: Langevin MCMC at each time of the grid, no predictor.

    At every grid time ``t_i`` (after ``T``) run ``corrector_steps`` Langevin steps targeting
    ``p_{t_i}`` (:func:`langevin_correct`).
    """

    name = "langevin"
    stochastic = True
    order = 1.0
    default_steps = 1000

    def __init__(self, snr: float = 0.16, corrector_steps: int = 1):
        super().__init__()
        _check_snr_steps(snr, corrector_steps)
        self.snr = float(snr)
        self.corrector_steps = int(corrector_steps)

    def step(self, ctx: SolveContext, x: Tensor, t: Tensor, t_next: Tensor) -> Tensor:
        alpha = _corrector_alpha(ctx.sde, t, t_next)
        return langevin_correct(ctx, x, t_next, alpha, self.snr, self.corrector_steps)


class PredictorCorrector(Solver):
    """Predictor–corrector sampler (Song et al. 2021, Algorithm 1).

    At every step: ``corrector_steps`` Langevin corrections at ``t``, then one predictor step
    from ``t`` to ``t_next``. Any step-based solver serves as predictor (by name or object).

    Args:
        predictor: e.g. ``"reverse_diffusion"`` (default), ``"euler_maruyama"``, ``"ancestral"``,
            ``"ddim"``; a :class:`Solver` object works too.
        corrector: ``"langevin"`` or ``"none"``.
        snr: the corrector's signal-to-noise ratio ``r``.
        corrector_steps: Langevin steps per time step ``M``.
    """

    name = "pc"
    stochastic = True
    default_steps = 1000

    def __init__(
        self,
        predictor: Union[str, Solver] = "reverse_diffusion",
        corrector: Optional[str] = "langevin",
        snr: float = 0.16,
        corrector_steps: int = 1,
    ):
        super().__init__()
        from . import SOLVERS

        if isinstance(predictor, str):
            if predictor not in SOLVERS or not _is_step_solver(SOLVERS[predictor]):
                valid = sorted(n for n, c in SOLVERS.items() if _is_step_solver(c))
                raise ValueError(f"unknown predictor {predictor!r}; valid predictors: {', '.join(valid)}")
            predictor = SOLVERS[predictor]()
        if not isinstance(predictor, Solver) or not _is_step_solver(type(predictor)):
            raise ValueError(f"predictor must be a step-based solver, got {predictor!r}")
        if corrector not in ("langevin", "none", None):
            raise ValueError(f"unknown corrector {corrector!r}; valid correctors: langevin, none")
        _check_snr_steps(snr, corrector_steps)
        self.predictor = predictor
        self.corrector = corrector or "none"
        self.snr = float(snr)
        self.corrector_steps = int(corrector_steps) if self.corrector == "langevin" else 0

    @property
    def order(self) -> float:  # type: ignore[override]
        return self.predictor.order

    @property
    def requires_kernel(self) -> bool:  # type: ignore[override]
        return self.predictor.requires_kernel

    def check_sde(self, sde: SDE) -> None:
        try:
            self.predictor.check_sde(sde)
        except IncompatibleSDEError as e:
            raise IncompatibleSDEError(f"pc predictor: {e}") from None

    def step(self, ctx: SolveContext, x: Tensor, t: Tensor, t_next: Tensor) -> Tensor:
        if self.corrector_steps:
            alpha = _corrector_alpha(ctx.sde, t, t_next)
            x = langevin_correct(ctx, x, t, alpha, self.snr, self.corrector_steps)
        return self.predictor.step(ctx, x, t, t_next)


def _is_step_solver(cls: type) -> bool:
    return cls.integrate is Solver.integrate and cls.step is not Solver.step and cls is not PredictorCorrector


class AnnealedLangevin(Solver):
    """Annealed Langevin dynamics of NCSN (Song & Ermon 2019, Algorithm 1).

    A ladder of ``steps`` noise levels, geometric in the noise-to-signal ratio ``std/scale`` from
    ``t = T`` down to ``t = eps`` (for VE: ``std(T) ~ sigma_max`` down to
    ``std(eps) = sqrt(sigma(eps)^2 - sigma_min^2)``). At level ``i``
    with kernel std ``sigma_i``, ``steps_per_level`` Langevin steps::

        alpha_i = step_ratio * sigma_i^2           # NCSN: eps * sigma_i^2 / sigma_L^2
        x <- x + alpha_i / 2 * score(x, t_i) + sqrt(alpha_i) z

    ``step_ratio`` is NCSN's ``eps / sigma_L^2`` (2e-5 / 0.01^2 = 0.2 in the paper), which keeps
    the step scale-free whatever ``eps`` is.
    """

    name = "annealed_langevin"
    stochastic = True
    order = 1.0
    requires_kernel = True
    default_steps = 10

    def __init__(self, steps_per_level: int = 100, step_ratio: float = 0.2):
        super().__init__()
        if int(steps_per_level) < 1:
            raise ValueError(f"steps_per_level must be >= 1, got {steps_per_level}")
        if not 0 < step_ratio < 4:
            raise ValueError(f"step_ratio must lie in (0, 4) for a stable Langevin step, got {step_ratio}")
        self.steps_per_level = int(steps_per_level)
        self.step_ratio = float(step_ratio)

    def time_grid(self, sde: SDE, steps: int, eps: float, device: torch.device, dtype: torch.dtype) -> Tensor:
        """``[T, t_1 = T, ..., t_L = eps]``: the start and then the ``L = steps`` ladder times."""
        ends = torch.tensor([sde.T, eps], dtype=torch.float64)
        r = sde.noise_to_signal(ends)
        ladder = torch.exp(torch.linspace(float(r[0].log()), float(r[1].log()), steps, dtype=torch.float64))
        times = sde.time_at_noise_to_signal(ladder)
        times[0] = sde.T
        times[-1] = eps  # the last level is eps (with one level, the only level)
        return torch.cat([torch.tensor([sde.T], dtype=times.dtype), times]).to(device=device, dtype=dtype)

    def step(self, ctx: SolveContext, x: Tensor, t: Tensor, t_next: Tensor) -> Tensor:
        _, std = ctx.sde.marginal_coeffs(t_next)
        alpha = append_dims(self.step_ratio * std * std, x.ndim)
        for _ in range(self.steps_per_level):
            z = randn_like(x, ctx.generator)
            x = x + 0.5 * alpha * ctx.score(x, t_next) + alpha.sqrt() * z
        return x
