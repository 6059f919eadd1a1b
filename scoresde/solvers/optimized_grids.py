"""Time grids optimised for a given score function.

:class:`GITS` places the few steps of a sampler where a fine-step teacher says they cost least:
the geometry-inspired time scheduling of Chen et al. (2024), "On the Trajectory Regularity of
ODE-based Diffusion Sampling" (ICML 2024). It is fitted once on a score function (a few hundred
evaluations on a small batch) and then passed to :func:`scoresde.solve` as ``grid=``; it is not in
:data:`scoresde.GRIDS` because a name cannot carry the fit.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import torch
from torch import Tensor

from .._utils import append_dims
from .._validation import finite_float, positive_int
from ..errors import IncompatibleSDEError, NotFittedError, OptionError, TimeRangeError
from ..score import ScoreFn, score_to_x0
from ..sde.base import SDE
from .grids import TimeGrid

__all__ = ["GITS"]


class GITS(TimeGrid):
    """A time grid chosen by dynamic programming over a teacher trajectory (GITS, Chen et al. 2024).

    Fitting (:meth:`fit`) solves the probability-flow ODE accurately (RK4 on ``fine_steps`` steps of
    a fine grid, uniform in log-SNR by default) from ``samples`` prior draws, keeping the teacher's
    states ``x_j`` at the fine times ``tau_0 = T > ... > tau_M = eps``. For every pair ``i < j`` it
    takes one first-order exponential-integrator (DDIM) step from the teacher's ``x_i`` to
    ``tau_j``,

        x_hat_j = (std_j / std_i) x_i + (scale_j - scale_i std_j / std_i) x0(x_i, tau_i),

    and records its local error ``c_ij``, the batch mean of a root-mean-square over coordinates:

    * ``cost_in="denoised"`` (default): ``|x0(x_hat_j, tau_j) - x0(x_j, tau_j)|``, the error as the
      data sees it, through the posterior mean (Tweedie) at ``tau_j``. A step that sends a sample
      towards another mode costs the distance between the modes, however noisy ``tau_j`` is.
      Fitting costs about ``M^2 / 2`` score evaluations of the batch.
    * ``cost_in="state"``: ``|x_hat_j - x_j| / sqrt(data_std^2 scale_j^2 + std_j^2)``, the paper's
      state error relative to the marginal's scale for data of standard deviation ``data_std``
      (so that the same error weighs the same on VP and VE). About ``5 M`` evaluations.

    Asked for ``steps`` steps, :meth:`times` returns the path ``0 = i_0 < i_1 < ... < i_steps = M``
    that minimises ``sum_k c_{i_{k-1} i_k}`` (a shortest path with exactly ``steps`` edges, found by
    dynamic programming): the fine times where a ``steps``-step sampler stays closest to the
    teacher. The paper's observation is that sampling trajectories are nearly the same curve for
    every starting point, so a grid fitted on a small batch serves every sample. The cost is first
    order (DDIM); the same grid can serve other solvers, but it is chosen for DDIM's errors.

    Args:
        fine_steps: number of steps of the teacher's fine grid (the candidates the grid picks from);
            must be at least the largest ``steps`` asked for.
        samples: batch size of the teacher trajectory.
        fine_grid: the fine grid, a :class:`TimeGrid` or a name in :data:`scoresde.GRIDS`
            (default ``"log_snr"``).
        cost_in: ``"denoised"`` or ``"state"`` (see above).
        data_std: the data's standard deviation for ``cost_in="state"``.

    Example:
        >>> import torch, scoresde
        >>> from scoresde.solvers.optimized_grids import GITS
        >>> sde = scoresde.VPSDE()
        >>> score = lambda x, t: -x  # N(0, I) data
        >>> grid = GITS(fine_steps=32, samples=64).fit(sde, score, (2,), generator=torch.Generator().manual_seed(0))
        >>> res = scoresde.solve(sde, score, (8, 2), solver="ddim", steps=4, grid=grid)
        >>> res.times.shape
        torch.Size([5])
    """

    name = "gits"
    requires_kernel = True

    def __init__(
        self,
        fine_steps: int = 128,
        samples: int = 1024,
        fine_grid: Union[str, TimeGrid] = "log_snr",
        cost_in: str = "denoised",
        data_std: float = 0.5,
    ):
        self.fine_steps = positive_int(fine_steps, "fine_steps")
        self.samples = positive_int(samples, "samples")
        self.fine_grid = fine_grid
        if cost_in not in ("denoised", "state"):
            raise OptionError(f"cost_in must be 'denoised' or 'state', got {cost_in!r}")
        self.cost_in = cost_in
        self.data_std = finite_float(data_std, "data_std", positive=True)
        self._sde: Optional[SDE] = None
        self._eps: Optional[float] = None
        self._fine_times: Optional[Tensor] = None  # [M + 1], float64, T first
        self._cost: Optional[Tensor] = None  # [M + 1, M + 1], float64, inf where j <= i

    @property
    def fitted(self) -> bool:
        """Whether :meth:`fit` has run."""
        return self._cost is not None

    @property
    def cost(self) -> Tensor:
        """The local-error matrix ``c_ij`` ``[M + 1, M + 1]`` (``inf`` where ``j <= i``); needs :meth:`fit`."""
        self._check_fitted()
        return self._cost

    @property
    def fine_times(self) -> Tensor:
        """The teacher's fine times ``[M + 1]`` (float64, decreasing from ``T`` to ``eps``); needs :meth:`fit`."""
        self._check_fitted()
        return self._fine_times

    def fit(
        self,
        sde: SDE,
        score_fn: ScoreFn,
        event_shape: Sequence[int],
        eps: float = 1e-3,
        generator: Optional[torch.Generator] = None,
        device: Optional[Union[str, torch.device]] = None,
        dtype: torch.dtype = torch.float64,
    ) -> "GITS":
        """Fit the grid to ``score_fn`` under ``sde`` between ``T`` and ``eps``; returns ``self``.

        Args:
            sde: the forward SDE (needs a closed-form kernel).
            score_fn: ``score_fn(x [B, *event], t [B]) -> [B, *event]``.
            event_shape: the shape of one sample, e.g. ``(2,)`` or ``(3, 32, 32)``.
            eps: the last time of the grids this fit serves (the solver's ``eps``).
            generator: source of the teacher's prior draws.
            device, dtype: where and in what precision to run the teacher.
        """
        from .driver import make_grid, solve  # the driver imports the grids: import it when fitting

        if not sde.has_kernel:
            raise IncompatibleSDEError(
                f"GITS fits its grid with the kernel's scale and std, which {type(sde).__name__} lacks"
            )
        eps = float(eps)
        if not 0.0 < eps < sde.T:
            raise TimeRangeError(f"eps must lie in (0, T) = (0, {sde.T}), got {eps}")
        fine = make_grid(self.fine_grid)(sde, self.fine_steps, eps)
        teacher = solve(
            sde,
            score_fn,
            (self.samples, *event_shape),
            solver="ode",
            method="rk4",
            grid=fine,
            denoise=False,
            record_trajectory=True,
            generator=generator,
            device=device,
            dtype=dtype,
        )
        xs = teacher.trajectory  # [M + 1, B, *event]
        M, B = self.fine_steps, self.samples
        d = math.prod(event_shape)
        tau = fine.to(xs.device, xs.dtype)
        scale, std = sde.marginal_coeffs(tau)  # [M + 1] each

        def x0(x: Tensor, j: Tensor) -> Tensor:  # posterior means of x [J, B, *event] at times tau[j]
            t = tau[j].repeat_interleave(B)
            flat = x.reshape(len(j) * B, *event_shape)
            return score_to_x0(sde, flat, score_fn(flat, t), t).reshape(x.shape)

        with torch.no_grad():
            x0_teacher = torch.stack([x0(xs[i : i + 1], torch.tensor([i]))[0] for i in range(M + 1)])
            cost = torch.full((M + 1, M + 1), math.inf, dtype=torch.float64)
            for i in range(M):
                j = torch.arange(i + 1, M + 1)
                r = std[j] / std[i]  # [J]
                a = scale[j] - scale[i] * r
                x_hat = append_dims(r, xs.ndim) * xs[i] + append_dims(a, xs.ndim) * x0_teacher[i]  # [J, B, *event]
                if self.cost_in == "denoised":
                    err, norm = x0(x_hat, j) - x0_teacher[j], torch.ones_like(std[j])
                else:
                    err, norm = x_hat - xs[j], (scale[j] ** 2 * self.data_std**2 + std[j] ** 2).sqrt()
                rms = err.reshape(len(j), B, d).pow(2).mean(-1).sqrt().mean(-1) / norm  # [J]
                cost[i, j] = rms.double().cpu()
        self._sde, self._eps, self._fine_times, self._cost = sde, eps, fine.clone(), cost
        return self

    def path(self, steps: int) -> Tensor:
        """Indices ``[steps + 1]`` into :attr:`fine_times` of the cheapest path with ``steps`` steps."""
        self._check_fitted()
        steps = positive_int(steps, "steps")
        M = self._cost.shape[0] - 1
        if steps > M:
            raise OptionError(f"GITS was fitted with fine_steps={M}; it cannot place {steps} steps: refit with more")
        C = self._cost
        best = torch.full((M + 1,), math.inf, dtype=torch.float64)
        best[0] = 0.0
        back = []
        for _ in range(steps):
            total = best[:, None] + C  # [from, to]
            best, arg = total.min(dim=0)
            back.append(arg)
        idx = [M]
        for arg in reversed(back):
            idx.append(int(arg[idx[-1]]))
        return torch.tensor(idx[::-1])

    def times(self, sde: SDE, steps: int, eps: float) -> Tensor:
        self._check_fitted()
        if sde is not self._sde and repr(sde) != repr(self._sde):
            raise IncompatibleSDEError(f"this GITS grid was fitted for {self._sde!r}, not {sde!r}: fit it for this SDE")
        if not math.isclose(eps, self._eps, rel_tol=1e-9, abs_tol=0.0):
            raise TimeRangeError(f"this GITS grid was fitted for eps={self._eps}, not eps={eps}: fit it with this eps")
        return self._fine_times[self.path(steps)]

    def _check_fitted(self) -> None:
        if self._cost is None:
            raise NotFittedError("GITS grid is not fitted: call grid.fit(sde, score_fn, event_shape) first")

    def __repr__(self) -> str:
        state = "fitted" if self.fitted else "not fitted"
        return (
            f"GITS(fine_steps={self.fine_steps}, samples={self.samples}, fine_grid={self.fine_grid!r}, "
            f"cost_in={self.cost_in!r}, {state})"
        )
