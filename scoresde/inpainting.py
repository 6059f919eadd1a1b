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

from .errors import ShapeError
from .score import ScoreFn
from .sde.base import SDE
from .solvers.inpaint import Inpaint, InpaintState, check_inpainting_inputs, jump_back, noisy_known


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
        solver: any step solver, by name (a key of :data:`scoresde.SOLVERS`), class or object; it is
            wrapped in an :class:`~scoresde.solvers.inpaint.Inpaint` solver.
        steps: solver steps (solver default when ``None``); the score is evaluated about
            ``resample`` times as often.
        generator: the source of all randomness.
        resample: ``r >= 1`` passes per step; ``r > 1`` adds ``r - 1`` RePaint jump-backs per step.
        **options: passed to :func:`scoresde.solve` (``eps``, ``grid``, ``denoise``, ``device``, ``dtype``,
            ``callback``, ``seeds`` — per-sample seeds instead of ``generator``, so that sample ``i`` depends
            only on its seed and its ``x_known``) and to the solver (``eta``, ``snr``, ...).

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
    solve_keys = ("device", "dtype", "eps", "denoise", "record_trajectory", "callback", "grid", "seeds")
    solve_opts = {k: options.pop(k) for k in solve_keys if k in options}
    wrapper = Inpaint(solver, x_known, mask, resample=resample, **options)
    device = solve_opts.pop("device", None) or x_known.device
    dtype = solve_opts.pop("dtype", None) or x_known.dtype
    try:
        res = solve(sde, score_fn, tuple(x_known.shape), solver=wrapper, steps=steps, generator=generator,
                    device=device, dtype=dtype, **solve_opts)
    except ShapeError as e:
        raise ShapeError(f"x_known of shape {tuple(x_known.shape)} does not fit the model: {e}") from None
    return torch.where(mask.to(res.samples.device), x_known.to(res.samples), res.samples)


__all__ = ["inpaint", "Inpaint", "InpaintState", "check_inpainting_inputs", "noisy_known", "jump_back"]
