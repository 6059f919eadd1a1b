"""Inpainting as a wrapper solver: any step solver, with the known entries of the state held fixed.

The replacement method (Song et al. 2021, Appendix I) with RePaint's resampling (Lugmayr et al. 2022).
:func:`scoresde.inpaint` builds an :class:`Inpaint` around a named solver and runs the driver.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Tuple

import numpy as np
import torch
from torch import Tensor

from .._utils import append_dims
from .._validation import integer
from ..errors import IncompatibleSDEError, MaskError, OptionError, ShapeError
from ..sde.base import SDE
from .base import SolveContext, StepSolver, WrapperSolver
from .driver import make_solver


def check_inpainting_inputs(x_known: Tensor, mask: Any) -> Tuple[Tensor, Tensor]:
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
    if x_known.device.type == "meta":
        raise ShapeError("x_known is a meta tensor (a shape without values); give it on the CPU or a GPU")
    mask = _as_mask(mask, x_known.device)
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


def _as_mask(mask: Any, device: torch.device) -> Tensor:
    """``mask`` (a tensor, array, number or nested list) as a tensor on ``device``; text and other objects are refused."""
    if isinstance(mask, (str, bytes)) or (isinstance(mask, Tensor) and mask.device.type == "meta"):
        raise MaskError(f"mask must be a 0/1 tensor (or array) broadcastable to x_known, got {type(mask).__name__} {mask!r}"[:200])
    try:
        if not isinstance(mask, Tensor):  # through NumPy: 1e-300 stays float64 (not 0 in torch's float32)
            arr = np.asarray(mask)
            if arr.dtype.kind not in "biuf":
                raise TypeError
            mask = torch.from_numpy(arr)
        return mask.to(device)
    except (TypeError, ValueError, RuntimeError, OverflowError):
        raise MaskError(f"mask must be a 0/1 tensor (or array) broadcastable to x_known, got {type(mask).__name__}") from None


def noisy_known(sde: SDE, x_known: Tensor, t: Tensor, noise: Tensor) -> Tensor:
    """A draw of the forward kernel ``scale(t) x_known + std(t) z`` at times ``t`` ``[B]`` (``noise`` is ``z``)."""
    scale, std = sde.marginal_coeffs(t)
    return append_dims(scale, x_known.ndim).to(x_known) * x_known + append_dims(std, x_known.ndim).to(x_known) * noise


def jump_back(sde: SDE, x: Tensor, s: Tensor, t: Tensor, noise: Tensor) -> Tensor:
    """Re-noise ``x`` from time ``s`` to ``t > s`` with the exact forward transition ``x_t = a x_s + v z``."""
    a, v = sde.transition_coeffs(s, t)
    return append_dims(a, x.ndim).to(x) * x + append_dims(v, x.ndim).to(x) * noise


@dataclass
class InpaintState:
    """Per-solve state of :class:`Inpaint`: the inner solver's state and whether the start was conditioned."""

    inner: Any
    started: bool = False


class Inpaint(WrapperSolver):
    """A step solver wrapped to keep the known entries of ``x`` fixed (replacement method, RePaint resampling).

    Before the first step the known entries of the prior draw are replaced by a draw of the forward
    kernel at the first time. One step from ``t`` to ``s`` is then, ``r = resample`` times::

        x <- inner.step(x, t, s)                                   # the wrapped update on the whole state
        x[known] <- scale(s) x_known[known] + std(s) z             # replacement by the forward kernel
        x <- a(s, t) x + v(s, t) z'   (all passes but the last)    # RePaint: jump back to t

    Every pass starts from the inner solver's state at ``t`` (a multistep method's history stays that
    of the earlier times); the last pass's state is kept. Capabilities (``order``, ``stochastic``, the
    default steps, ``eps`` and grid) are the inner solver's; the SDE must have a closed-form kernel.

    Args:
        inner: a step solver, by name (a key of :data:`scoresde.SOLVERS`), class or object.
        x_known: ``[B, *event]``; entries where ``mask == 0`` are ignored.
        mask: 0/1 (or boolean) broadcastable to ``x_known``; 1 = known.
        resample: passes per step (``>= 1``).
        **options: options of the inner solver when given by name or class.
    """

    name = "inpaint"
    inner_role = "inner solver"

    def __init__(self, inner: Any, x_known: Tensor, mask: Any, resample: int = 1, **options: Any):
        resample = integer(resample, "resample", minimum=1, maximum=1000,
                           need="an integer >= 1 (1 = no jump-backs) and <= 1000")
        inner = make_solver(inner, **options)
        if not isinstance(inner, StepSolver):
            raise OptionError(
                f"inpainting wraps step solvers; {inner.name!r} integrates on its own (adaptive ODE, torchsde): "
                "use e.g. 'ancestral', 'reverse_diffusion', 'euler_maruyama', 'pc' or 'ddim'"
            )
        super().__init__(inner)
        self.x_known, self.mask = check_inpainting_inputs(x_known, mask)
        self.resample = int(resample)

    @property
    def requires_kernel(self) -> bool:  # type: ignore[override]
        return True

    def check_sde(self, sde: SDE) -> None:
        super().check_sde(sde)
        if not sde.has_kernel:
            raise IncompatibleSDEError(
                f"inpainting draws the known entries from the forward kernel, which {type(sde).__name__} does not have"
            )

    def _known(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        if x.shape != self.x_known.shape:
            raise ShapeError(f"inpainting: x_known has shape {tuple(self.x_known.shape)} but the state is {tuple(x.shape)}")
        return self.x_known.to(x), self.mask.to(x.device)

    def init(self, ctx: SolveContext, x: Tensor, grid: Tensor) -> InpaintState:
        return InpaintState(inner=self.inner.init(ctx, x, grid))

    def step(self, ctx: SolveContext, x: Tensor, t: Tensor, t_next: Tensor, state: InpaintState) -> Tuple[Tensor, InpaintState]:
        known, mask = self._known(x)
        if not state.started:  # condition the starting state: known entries from the forward kernel at t
            x = torch.where(mask, noisy_known(ctx.sde, known, t, ctx.randn_like(x)), x)
        inner_state = state.inner
        for r in range(self.resample):
            x, new_state = self.inner.step(ctx, x, t, t_next, state.inner)  # the wrapped update
            x = torch.where(mask, noisy_known(ctx.sde, known, t_next, ctx.randn_like(x)), x)  # replacement
            if r < self.resample - 1:
                x = jump_back(ctx.sde, x, t_next, t, ctx.randn_like(x))  # RePaint: back to t
            else:
                inner_state = new_state
        return x, InpaintState(inner=inner_state, started=True)


__all__ = ["Inpaint", "InpaintState", "check_inpainting_inputs", "noisy_known", "jump_back"]
