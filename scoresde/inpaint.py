"""Inpainting and imputation: sample the unknown entries of ``x`` given the known ones.

:func:`inpaint` runs any step solver with the *replacement* method (Song et al. 2021, Appendix I): after
every step from ``t`` to ``s`` the known entries are replaced by a fresh draw of the forward kernel,
``scale(s) x_known + std(s) z``, so the unknown entries are steered by the score evaluated at a state
whose known part is consistent with ``x_known``. ``resample = r > 1`` adds RePaint's jump-backs (Lugmayr
et al. 2022): each step is done ``r`` times, re-noising from ``s`` back to ``t`` with the exact forward
transition in between, which lets the unknown part harmonise with the known part.

The replacement method is biased even with the exact score (the unknown entries are conditioned on
noisy copies of the known ones drawn independently of the path); resampling shrinks the bias and
:func:`scoresde.smc.smc_inpaint` removes it asymptotically. See the "Conditional generation" page.
"""

from __future__ import annotations

from typing import Any, Optional, Union

import torch
from torch import Tensor

from ._utils import append_dims, randn_like
from .errors import IncompatibleSDEError, MaskError, ShapeError
from .score import ScoreFn
from .sde.base import SDE
from .solvers.base import SolveContext, Solver, make_solver


def check_inpainting_inputs(x_known: Tensor, mask: Any) -> "tuple[Tensor, Tensor]":
    """Validate ``x_known`` ``[B, *event]`` and a 0/1 ``mask`` broadcastable to it; return ``(x_known, mask)``.

    The mask comes back as a boolean tensor broadcast to ``x_known``'s shape. Unknown entries of
    ``x_known`` (``mask == 0``) are never read and may hold anything, NaN included.

    Raises:
        ShapeError: ``x_known`` is not a floating tensor ``[B, *event]``, or a known entry is not finite.
        MaskError: ``mask`` does not broadcast to ``x_known`` or holds values other than 0 and 1.
    """
    if not isinstance(x_known, Tensor) or x_known.ndim < 2 or x_known.shape[0] < 1:
        got = tuple(x_known.shape) if isinstance(x_known, Tensor) else type(x_known).__name__
        raise ShapeError(f"x_known must be a tensor [B, *event] with at least one event dimension, got {got}")
    if not x_known.is_floating_point():
        raise ShapeError(f"x_known must be floating point, got {x_known.dtype}")
    mask = torch.as_tensor(mask, device=x_known.device)
    try:
        shape = torch.broadcast_shapes(mask.shape, x_known.shape)
    except RuntimeError:
        shape = None
    if shape != x_known.shape:
        raise MaskError(
            f"mask of shape {tuple(mask.shape)} does not broadcast to x_known's shape {tuple(x_known.shape)}; "
            f"give it the event shape {tuple(x_known.shape[1:])} (shared by the batch) or x_known's full shape"
        )
    if mask.dtype != torch.bool:
        if mask.is_complex() or (mask.numel() and not bool(((mask == 0) | (mask == 1)).all())):
            raise MaskError("mask must hold only 0 and 1 (1 = known entry, 0 = entry to fill in)")
        mask = mask == 1
    mask = mask.expand(x_known.shape)
    if not bool(torch.isfinite(torch.where(mask, x_known, torch.zeros_like(x_known))).all()):
        raise ShapeError("x_known holds NaN or infinite values at known entries (mask == 1)")
    return x_known, mask


def _replace(x: Tensor, known: Tensor, mask: Tensor) -> Tensor:
    """``x`` with its known entries (``mask``) taken from ``known``."""
    return torch.where(mask, known, x)


def noisy_known(sde: SDE, x_known: Tensor, t: Tensor, noise: Tensor) -> Tensor:
    """A draw of the forward kernel ``scale(t) x_known + std(t) z`` at times ``t`` ``[B]`` (``noise`` is ``z``)."""
    scale, std = sde.marginal_coeffs(t)
    return append_dims(scale, x_known.ndim).to(x_known) * x_known + append_dims(std, x_known.ndim).to(x_known) * noise


def jump_back(sde: SDE, x: Tensor, s: Tensor, t: Tensor, noise: Tensor) -> Tensor:
    """Re-noise ``x`` from time ``s`` to ``t > s`` with the exact forward transition ``x_t = a x_s + v z``."""
    a, v = sde.transition_coeffs(s, t)
    return append_dims(a, x.ndim).to(x) * x + append_dims(v, x.ndim).to(x) * noise


class Inpaint(Solver):
    """A step solver wrapped to keep the known entries of ``x`` fixed (replacement method, RePaint resampling).

    One step from ``t`` to ``s`` is, ``r = resample`` times::

        x <- inner.step(x, t, s)                                   # the wrapped solver's update
        x[known] <- scale(s) x_known[known] + std(s) z             # replacement by the forward kernel
        x <- a(s, t) x + v(s, t) z'   (all passes but the last)    # jump back to t

    Capabilities (``order``, ``stochastic``, the default steps, ``eps`` and grid) are the inner solver's.

    Args:
        inner: a step solver, by name, class or object.
        x_known: ``[B, *event]``; mask: boolean ``[B, *event]`` (see :func:`check_inpainting_inputs`).
        resample: passes per step (``>= 1``).
        **options: options of the inner solver when given by name or class.
    """

    name = "inpaint"
    requires_kernel = True

    def __init__(self, inner: Any, x_known: Tensor, mask: Tensor, resample: int = 1, **options: Any):
        super().__init__()
        from .solvers import SOLVERS

        if isinstance(resample, bool) or int(resample) != resample or resample < 1:
            raise ValueError(f"resample must be a positive integer (1 = no jump-backs), got {resample!r}")
        self.inner = make_solver(inner, SOLVERS, **options)
        if type(self.inner).integrate is not Solver.integrate:
            raise TypeError(
                f"inpainting wraps step solvers; {self.inner.name!r} integrates on its own (adaptive ODE, torchsde): "
                "use e.g. 'ancestral', 'reverse_diffusion', 'euler_maruyama', 'pc' or 'ddim'"
            )
        self.x_known, self.mask = check_inpainting_inputs(x_known, mask)
        self.resample = int(resample)
        self.stochastic = self.inner.stochastic
        self.order = self.inner.order
        self.default_steps = self.inner.default_steps
        self.default_eps = self.inner.default_eps
        self.denoise_default = self.inner.denoise_default

    def check_sde(self, sde: SDE) -> None:
        self.inner.check_sde(sde)
        super().check_sde(sde)

    def time_grid(self, sde: SDE, steps: int, eps: float, device: torch.device, dtype: torch.dtype) -> Tensor:
        return self.inner.time_grid(sde, steps, eps, device, dtype)

    def _known(self, x: Tensor) -> "tuple[Tensor, Tensor]":
        if x.shape != self.x_known.shape:
            raise ShapeError(f"inpainting x_known has shape {tuple(self.x_known.shape)} but the state is {tuple(x.shape)}")
        return self.x_known.to(x), self.mask.to(x.device)

    def start(self, ctx: SolveContext, x: Tensor, t: Tensor) -> Tensor:
        """Replace the known entries of the prior draw by a draw of the forward kernel at ``T``."""
        known, mask = self._known(x)
        return _replace(x, noisy_known(ctx.sde, known, t, randn_like(x, ctx.generator)), mask)

    def step(self, ctx: SolveContext, x: Tensor, t: Tensor, t_next: Tensor) -> Tensor:
        known, mask = self._known(x)
        for r in range(self.resample):
            x = self.inner.step(ctx, x, t, t_next)  # the wrapped update on the whole state
            x = _replace(x, noisy_known(ctx.sde, known, t_next, randn_like(x, ctx.generator)), mask)
            if r < self.resample - 1:  # RePaint: jump back to t with the forward transition
                x = jump_back(ctx.sde, x, t_next, t, randn_like(x, ctx.generator))
        return x

    def integrate(self, ctx: SolveContext, x: Tensor, grid: Tensor, record: bool, callback: Any):
        x = self.start(ctx, x, grid[0].expand(x.shape[0]))
        return super().integrate(ctx, x, grid, record, callback)


def inpaint(
    sde: SDE,
    score_fn: ScoreFn,
    x_known: Tensor,
    mask: Union[Tensor, Any],
    solver: Any = "ancestral",
    steps: Optional[int] = None,
    generator: Optional[torch.Generator] = None,
    resample: int = 1,
    **options: Any,
) -> Tensor:
    """Sample the entries of ``x_known`` where ``mask == 0`` given those where ``mask == 1``.

    Args:
        sde: the forward SDE; it needs a closed-form Gaussian kernel (the replacement draws from it).
        score_fn: the model's (unconditional, or guided) score ``(x, t) -> like x``.
        x_known: ``[B, *event]``; entries where ``mask == 0`` are ignored (NaN allowed).
        mask: 0/1 (or boolean), broadcastable to ``x_known``: ``[*event]`` shared by the batch or
            ``[B, *event]`` per sample. 1 marks a known entry.
        solver: any step solver, by name (a key of :data:`scoresde.SOLVERS`), class or object.
        steps: solver steps (solver default when ``None``); the score is evaluated about
            ``resample`` times as often.
        generator: the source of all randomness.
        resample: ``r >= 1`` passes per step; ``r > 1`` adds ``r - 1`` RePaint jump-backs per step.
        **options: passed to :func:`scoresde.solve` (``eps``, ``denoise``, ``device``, ``dtype``,
            ``callback``, ...) and to the solver (``eta``, ``snr``, ...).

    Returns:
        Samples ``[B, *event]`` whose known entries equal ``x_known`` exactly.

    Raises:
        MaskError: a mask of the wrong shape or not 0/1.
        ShapeError: a bad ``x_known``, or one whose shape the model rejects.
        IncompatibleSDEError: an SDE without a closed-form kernel.
        TypeError: a solver that is not a step solver (adaptive ODE, torchsde).
    """
    from .solvers import solve

    x_known, mask = check_inpainting_inputs(x_known, mask)
    if not sde.has_kernel:
        raise IncompatibleSDEError(
            f"inpainting draws the known entries from the forward kernel, which {type(sde).__name__} does not have"
        )
    solve_keys = ("device", "dtype", "eps", "denoise", "record_trajectory", "callback", "grid")
    solve_opts = {k: options.pop(k) for k in solve_keys if k in options}
    wrapper = Inpaint(solver, x_known, mask, resample=resample, **options)
    device = solve_opts.pop("device", None) or x_known.device
    dtype = solve_opts.pop("dtype", None) or x_known.dtype
    try:
        res = solve(sde, score_fn, tuple(x_known.shape), solver=wrapper, steps=steps, generator=generator,
                    device=device, dtype=dtype, **solve_opts)
    except ShapeError as e:
        raise ShapeError(f"x_known of shape {tuple(x_known.shape)} does not fit the model: {e}") from None
    return _replace(res.samples, x_known.to(res.samples), mask.to(res.samples.device))


__all__ = ["inpaint", "Inpaint", "check_inpainting_inputs", "noisy_known", "jump_back"]
