"""Langevin correctors: the corrector-only sampler, predictor–corrector and annealed Langevin (NCSN)."""

from __future__ import annotations

import math
from typing import Any, Optional, Tuple, Union

import torch
from torch import Tensor

from .._utils import append_dims, batch_norm_sq
from .._validation import MAX_STEPS, finite_float, integer
from ..errors import OptionError
from ..sde.base import SDE
from . import registry
from .base import SolveContext, StepSolver, WrapperSolver
from .grids import _noise_levels
from .registry import register


def langevin_correct(ctx: SolveContext, x: Tensor, t: Tensor, alpha: Tensor, snr: float, n_steps: int) -> Tensor:
    """``n_steps`` of Langevin MCMC targeting ``p_t`` with a signal-to-noise step size.

    Song et al. (2021), Algorithm 5::

        g = score(x, t);  z ~ N(0, I)
        e = 2 alpha (snr ||z|| / ||g||)^2
        x <- x + e g + sqrt(2 e) z

    As in the paper's implementation, ``||z||`` and ``||g||`` are per-sample norms averaged over
    the batch: per-sample ratios are unstable in low dimension, where ``||g||`` can be near 0.
    With per-sample seeds (a batch-invariant noise source) the ratio is taken per sample instead,
    the one choice under which sample ``i`` does not depend on its batch (sound in high dimension,
    where ``||z||`` and ``||g||`` concentrate).

    Args:
        x: ``[B, *event]``; t, alpha: ``[B]`` (``alpha = a^2`` of the one-step kernel, 1 for VE).
    """
    for _ in range(n_steps):
        g = ctx.score(x, t)
        z = ctx.randn_like(x)
        g_norm, z_norm = batch_norm_sq(g).sqrt(), batch_norm_sq(z).sqrt()
        if not ctx.noise.batch_invariant:
            g_norm, z_norm = g_norm.mean(), z_norm.mean()
        e = append_dims(2 * alpha * (snr * z_norm / g_norm.clamp_min(torch.finfo(x.dtype).tiny)) ** 2, x.ndim)
        x = x + e * g + (2 * e).sqrt() * z
    return x


def _corrector_alpha(sde: SDE, t: Tensor, t_next: Tensor) -> Tensor:
    """``alpha_i = a^2`` of the kernel over the step (``1 - beta_i`` for VP, 1 for VE); 1 without a kernel."""
    if not sde.has_kernel:
        return torch.ones_like(t)
    a, _ = sde.transition_coeffs(t_next, t)
    return a * a


def _snr(snr: Any) -> float:
    return finite_float(snr, "snr", positive=True)


@register
class Langevin(StepSolver):
    """Corrector-only sampling: Langevin MCMC at each time of the grid, no predictor.

    At every grid time ``t_i`` (after ``T``) run ``corrector_steps`` Langevin steps targeting
    ``p_{t_i}`` (:func:`langevin_correct`).

    Args:
        snr: the signal-to-noise ratio ``r`` of the step size.
        corrector_steps: Langevin steps per grid time, ``>= 1`` (with none, nothing would move the prior draw).
    """

    name = "langevin"
    stochastic = True
    order = 1.0
    default_steps = 1000

    def __init__(self, snr: float = 0.16, corrector_steps: int = 1):
        self.snr = _snr(snr)
        self.corrector_steps = integer(corrector_steps, "corrector_steps", minimum=1, maximum=MAX_STEPS)

    def step(self, ctx: SolveContext, x: Tensor, t: Tensor, t_next: Tensor, state: Any) -> Tuple[Tensor, Any]:
        alpha = _corrector_alpha(ctx.sde, t, t_next)
        return langevin_correct(ctx, x, t_next, alpha, self.snr, self.corrector_steps), state


@register
class PredictorCorrector(WrapperSolver):
    """Predictor–corrector sampler (Song et al. 2021, Algorithm 1).

    At every step: ``corrector_steps`` Langevin corrections at ``t``, then one predictor step
    from ``t`` to ``t_next``. Any step solver serves as predictor (by name or object), multistep
    ones included: the predictor's per-solve state is carried through.

    Args:
        predictor: e.g. ``"reverse_diffusion"`` (default), ``"euler_maruyama"``, ``"ancestral"``,
            ``"ddim"``, ``"dpmpp_2m"``; a step-solver object works too.
        corrector: ``"langevin"`` or ``"none"``.
        snr: the corrector's signal-to-noise ratio ``r`` (default 0.16); only with the Langevin corrector.
        corrector_steps: Langevin steps per time step ``M`` (default 1); only with the Langevin corrector.
    """

    name = "pc"
    inner_role = "predictor"

    def __init__(
        self,
        predictor: Union[str, StepSolver] = "reverse_diffusion",
        corrector: Optional[str] = "langevin",
        snr: Optional[float] = None,
        corrector_steps: Optional[int] = None,
    ):
        if isinstance(predictor, str):
            valid = sorted(n for n, c in registry.SOLVERS.items() if issubclass(c, StepSolver) and c is not PredictorCorrector)
            if predictor not in valid:
                raise OptionError(f"unknown predictor {predictor!r}; valid predictors: {', '.join(valid)}")
            predictor = registry.SOLVERS[predictor]()
        if not isinstance(predictor, StepSolver) or isinstance(predictor, PredictorCorrector):
            raise OptionError(f"predictor must be a step solver (not pc itself), got {predictor!r}")
        if corrector not in ("langevin", "none", None):
            raise OptionError(f"unknown corrector {corrector!r}; valid correctors: langevin, none")
        super().__init__(predictor)
        self.corrector = corrector or "none"
        if self.corrector == "none":
            given = [n for n, v in (("snr", snr), ("corrector_steps", corrector_steps)) if v is not None]
            if given:
                raise OptionError(f"{' and '.join(given)} set the Langevin corrector, but corrector='none'; "
                                 "drop them or use corrector='langevin'")
            self.snr, self.corrector_steps = 0.0, 0
        else:
            self.snr = _snr(0.16 if snr is None else snr)
            self.corrector_steps = integer(1 if corrector_steps is None else corrector_steps, "corrector_steps", minimum=0,
                                           maximum=MAX_STEPS)

    @property
    def predictor(self) -> StepSolver:
        """The wrapped predictor."""
        return self.inner

    @property
    def stochastic(self) -> bool:  # type: ignore[override]
        return self.corrector_steps > 0 or self.inner.stochastic

    def step(self, ctx: SolveContext, x: Tensor, t: Tensor, t_next: Tensor, state: Any) -> Tuple[Tensor, Any]:
        if self.corrector_steps:
            alpha = _corrector_alpha(ctx.sde, t, t_next)
            x = langevin_correct(ctx, x, t, alpha, self.snr, self.corrector_steps)
        return self.inner.step(ctx, x, t, t_next, state)


def ladder_ratio(dim: int, max_ratio: float = 1.5) -> float:
    """Song & Ermon (2020), Technique 2: the ratio ``gamma = sigma_{i-1} / sigma_i`` of a geometric noise ladder.

    ``gamma`` solves ``Phi(sqrt(2D) (gamma - 1) + 3 gamma) - Phi(sqrt(2D) (gamma - 1) - 3 gamma) = 1/2``
    for data of ``D = dim`` dimensions, so that a sample at one level is likely under the next. In
    low dimension (``D <= 4``) the condition holds for every ``gamma`` and in moderate dimension its
    root is large; ``max_ratio`` caps the ratio there.
    """
    from scipy.optimize import brentq
    from scipy.stats import norm

    def overlap(g: float) -> float:
        a = math.sqrt(2 * dim) * (g - 1)
        return float(norm.cdf(a + 3 * g) - norm.cdf(a - 3 * g)) - 0.5

    if overlap(max_ratio) >= 0:
        return float(max_ratio)
    return float(brentq(overlap, 1.0 + 1e-12, max_ratio))


def langevin_step_ratio(gamma: float, steps_per_level: int) -> float:
    """Song & Ermon (2020), Technique 4: the step size ``u = alpha_i / sigma_i^2`` for a ladder ratio ``gamma``.

    For Gaussian data, ``T`` Langevin steps ``x <- x + u sigma^2 score + sqrt(2 u) sigma z`` started
    from variance ``gamma^2 sigma^2`` end at variance ``s_T`` with
    ``s_T / sigma^2 = (1 - u)^(2T) (gamma^2 - 2/(2 - u)) + 2/(2 - u)``; ``u`` makes that as close
    to 1 as it can be.
    """
    from scipy.optimize import minimize_scalar

    T = int(steps_per_level)

    def miss(u: float) -> float:
        c = 2.0 / (2.0 - u)
        return abs((1 - u) ** (2 * T) * (gamma * gamma - c) + c - 1.0)

    return float(minimize_scalar(miss, bounds=(1e-9, 0.999), method="bounded", options={"xatol": 1e-10}).x)


@register
class AnnealedLangevin(StepSolver):
    """Annealed Langevin dynamics of NCSN (Song & Ermon 2019, Algorithm 1; defaults of Song & Ermon 2020).

    The noise levels are the times ``t_1 .. t_L`` of the grid after ``T`` (by default the log-SNR
    grid: geometric in ``std/scale``, NCSN's ladder). At level ``i`` with kernel std ``sigma_i``,
    ``steps_per_level`` Langevin steps target ``p_{t_i}``::

        alpha_i = 2 u sigma_i^2
        x <- x + alpha_i / 2 * score(x, t_i) + sqrt(alpha_i) z

    The ladder follows Song & Ermon (2020), Technique 2: the number of levels ``L`` (when
    ``steps`` is not given) from :func:`ladder_ratio` for the data's dimension, with the ratio
    between levels capped at ``max_ratio``. The step is ``alpha_i = step_ratio * sigma_i^2``
    (default ``step_ratio = 1``, i.e. ``u = 1/2``); ``step_ratio=None`` computes ``u`` per level by
    Technique 4 (:func:`langevin_step_ratio`).

    Why not Technique 4 by default: it sizes ``u`` for data concentrated at a point, so that one level's
    chain ends at the level's variance ``sigma_i^2``; below the data's own scale its chain stops following
    the shrinking target and keeps an excess variance (the measurements are in the docs' "How to choose a
    solver", "Annealed Langevin's step size").

    Args:
        steps_per_level: Langevin steps per noise level ``T`` (default 20).
        step_ratio: ``2 u = alpha_i / sigma_i^2`` in ``(0, 4)`` (default 1; NCSN's ``2 eps / sigma_L^2``,
            the 2019 paper's ``2e-5 / 0.01^2 = 0.2``), or ``None`` for Technique 4.
        max_ratio: cap on the ladder ratio ``gamma`` chosen by Technique 2 (default 1.2).
    """

    name = "annealed_langevin"
    stochastic = True
    order = 1.0
    requires_kernel = True
    default_steps = 10
    default_grid = "log_snr"

    def __init__(self, steps_per_level: int = 20, step_ratio: Optional[float] = 1.0, max_ratio: float = 1.2):
        self.steps_per_level = integer(steps_per_level, "steps_per_level", minimum=1, maximum=MAX_STEPS)
        if step_ratio is not None:
            step_ratio = finite_float(step_ratio, "step_ratio")
            if not 0 < step_ratio < 4:
                raise OptionError(f"step_ratio must lie in (0, 4) for a stable Langevin step, got {step_ratio}")
        self.step_ratio = step_ratio
        self.max_ratio = finite_float(max_ratio, "max_ratio")
        if not self.max_ratio > 1:
            raise OptionError(f"max_ratio must be > 1, got {max_ratio}")

    def steps_for(self, sde: SDE, shape: torch.Size, eps: float) -> int:
        """Number of levels ``L`` by Technique 2 for data of ``shape[1:]``: ``log(sigma_max/sigma_min) / log(gamma)``."""
        gamma = ladder_ratio(math.prod(shape[1:]), self.max_ratio)
        s_max, s_min = _noise_levels(sde, eps)
        return max(1, math.ceil(math.log(s_max / s_min) / math.log(gamma)))

    def init(self, ctx: SolveContext, x: Tensor, grid: Tensor) -> Any:
        """The per-level step ratios ``alpha_i / sigma_i^2``, ``[L]`` (Technique 4 unless fixed)."""
        if self.step_ratio is not None:
            return {"i": 0, "ratios": [self.step_ratio] * (grid.shape[0] - 1)}
        r = ctx.sde.noise_to_signal(grid.to(torch.float64)).tolist()
        cache: dict = {}
        ratios = []
        for i in range(1, len(r)):
            gamma = round(r[i - 1] / r[i], 6)
            if gamma not in cache:
                cache[gamma] = 2 * langevin_step_ratio(max(gamma, 1.0), self.steps_per_level)
            ratios.append(cache[gamma])
        return {"i": 0, "ratios": ratios}

    def step(self, ctx: SolveContext, x: Tensor, t: Tensor, t_next: Tensor, state: Any) -> Tuple[Tensor, Any]:
        _, std = ctx.sde.marginal_coeffs(t_next)
        alpha = append_dims(state["ratios"][state["i"]] * std * std, x.ndim)
        for _ in range(self.steps_per_level):
            z = ctx.randn_like(x)
            x = x + 0.5 * alpha * ctx.score(x, t_next) + alpha.sqrt() * z
        return x, {"i": state["i"] + 1, "ratios": state["ratios"]}
