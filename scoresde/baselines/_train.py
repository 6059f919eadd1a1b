"""Shared plumbing of the baselines: input checks, one CPU-budgeted training loop, and checkpoint files.

Every baseline model offers the same small training interface, which :func:`fit` relies on:

* ``model.kind``: ``"vae"``, ``"realnvp"`` or ``"dcgan"`` (the key in :data:`scoresde.baselines.BASELINES`);
* ``model.config``: a dict of plain values with ``type(model)(**model.config)`` rebuilding the architecture;
* ``model.image_shape``: ``(C, H, W)``;
* ``model.configure_optimizers(lr=None) -> tuple of optimizers`` (``lr=None``: the model's default);
* ``model.train_step(x, *optimizers, generator=None) -> dict[str, float]``: one update on a batch ``[B, C, H, W]``.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from .._validation import check_generator, finite_float, positive_int
from ..errors import DataError, OptionError, ShapeError

#: Grey levels of the 8-bit images the baselines model.
LEVELS = 256
#: Model range of the images: level ``k`` sits at ``-1 + 2 k / 255`` (:func:`scoresde.data.to_model_range`).
DATA_RANGE = (-1.0, 1.0)


# --------------------------------------------------------------------------------------------- input checks


def check_image_shape(image_shape: Any, multiple: int = 1, name: str = "image_shape") -> Tuple[int, int, int]:
    """``image_shape`` as ``(C, H, W)`` of positive ints, with ``H`` and ``W`` divisible by ``multiple``.

    Raises:
        OptionError: not three positive integers, or a height/width the network cannot halve often enough.
    """
    try:
        dims = tuple(image_shape)
    except TypeError:
        raise OptionError(f"{name} must be (C, H, W), got {image_shape!r}") from None
    if len(dims) != 3:
        raise OptionError(f"{name} must be (C, H, W), got {image_shape!r}")
    c, h, w = (positive_int(d, f"{name}[{i}]") for i, d in enumerate(dims))
    if h % multiple or w % multiple:
        raise OptionError(f"{name}: height and width must be multiples of {multiple} for this network, got {dims}")
    return c, h, w


def check_images(x: Any, image_shape: Sequence[int], name: str = "x") -> None:
    """Raise :class:`ShapeError` unless ``x`` is a tensor ``[B, *image_shape]`` with ``B >= 1``."""
    if not isinstance(x, Tensor):
        raise ShapeError(f"{name} must be a torch.Tensor [B, {', '.join(map(str, image_shape))}], got {type(x).__name__}")
    if x.ndim != len(image_shape) + 1 or tuple(x.shape[1:]) != tuple(image_shape) or x.shape[0] == 0:
        raise ShapeError(f"{name} must have shape [B, {', '.join(map(str, image_shape))}] with B >= 1, got {tuple(x.shape)}")


def as_levels(x: Tensor, name: str = "x") -> Tensor:
    """8-bit levels ``k`` (int64, shaped like ``x``) of images given as levels or in the model range.

    Integer tensors are taken as levels ``0..255``; floating tensors must lie on the grid
    ``-1 + 2 k / 255`` of :func:`scoresde.data.to_model_range` (within a tenth of a bin).

    Raises:
        DataError: values off the 8-bit grid, out of range, non-finite, or a boolean/complex dtype.
    """
    if x.dtype == torch.bool or x.is_complex():
        raise DataError(f"{name} must hold 8-bit images (levels 0..255 or values in [-1, 1]), got dtype {x.dtype}")
    if not x.is_floating_point():
        if x.numel() and (int(x.min()) < 0 or int(x.max()) > LEVELS - 1):
            raise DataError(f"{name}: integer levels must lie in [0, {LEVELS - 1}], got [{int(x.min())}, {int(x.max())}]")
        return x.long()
    if not bool(torch.isfinite(x).all()):
        raise DataError(f"{name} holds NaN or infinite values")
    lo, hi = DATA_RANGE
    u = (x - lo) * ((LEVELS - 1) / (hi - lo))
    k = torch.round(u)
    if x.numel() and (bool(((u - k).abs() > 0.1).any()) or float(k.min()) < 0 or float(k.max()) > LEVELS - 1):
        raise DataError(
            f"{name} must hold 8-bit images: integer levels 0..255, or floats on the grid -1 + 2k/255 in [-1, 1] "
            "(scoresde.data.to_model_range); quantise generated images with scoresde.data.to_levels first"
        )
    return k.long()


def levels_to_model(k: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """Levels ``k`` to the model range: ``-1 + 2 k / 255`` (the same map as :func:`scoresde.data.to_model_range`)."""
    lo, hi = DATA_RANGE
    return k.to(dtype) * ((hi - lo) / (LEVELS - 1)) + lo


def as_model_range(x: Tensor, dtype: torch.dtype) -> Tensor:
    """Integer levels mapped to ``[-1, 1]``; floating images passed through (cast to ``dtype``)."""
    if x.dtype == torch.bool or x.is_complex():
        raise DataError(f"images must be integer levels or floats in [-1, 1], got dtype {x.dtype}")
    return x.to(dtype) if x.is_floating_point() else levels_to_model(as_levels(x), dtype)


def param_device_dtype(model: nn.Module) -> Tuple[torch.device, torch.dtype]:
    """Device and floating dtype of ``model``'s first parameter."""
    p = next(model.parameters())
    return p.device, p.dtype


def num_parameters(model: nn.Module) -> int:
    """Number of trainable scalars in ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# --------------------------------------------------------------------------------------------- training loop


@dataclass
class FitResult:
    """What :func:`fit` did.

    Attributes:
        steps: optimizer steps taken.
        seconds: wall-clock seconds spent in the loop.
        cpu_seconds: process CPU seconds (all threads, ``time.process_time``) spent in the loop.
        losses: for each entry of the model's ``train_step`` dict (``"loss"``; ``"loss_d"``, ``"loss_g"`` for
            the GAN; ...), its value at every step.
        stopped_by: ``"steps"`` or ``"budget"``.
    """

    steps: int
    seconds: float
    cpu_seconds: float
    losses: Dict[str, List[float]] = field(default_factory=dict)
    stopped_by: str = "steps"


def _batches(n: int, batch_size: int, generator: Optional[torch.Generator]):
    """Index batches ``[batch_size]`` (CPU, int64) of shuffled epochs over ``range(n)``; the last partial batch is dropped."""
    gen_device = generator.device if generator is not None else "cpu"
    while True:
        perm = torch.randperm(n, generator=generator, device=gen_device).cpu()
        for i in range(0, n - batch_size + 1, batch_size):
            yield perm[i : i + batch_size]


def fit(
    model: nn.Module,
    data: Any,
    *,
    steps: Optional[int] = None,
    budget_seconds: Optional[float] = None,
    batch_size: int = 128,
    lr: Optional[float] = None,
    generator: Optional[torch.Generator] = None,
    progress: bool = False,
    progress_every: float = 30.0,
    step_options: Optional[Dict[str, Any]] = None,
) -> FitResult:
    """Train a baseline for a number of steps and/or a CPU-time budget.

    The budget bounds **process CPU seconds** (``time.process_time()``, summed over the process's
    threads), which a busy shared machine does not inflate the way it inflates wall time; on ``n``
    fully used cores it runs out ``n`` times faster than the wall clock. The budget is checked
    before each step, so the loop stops cleanly after the step that crosses it (one step late at
    most). Wall seconds are reported as well.

    Args:
        model: a :class:`~scoresde.baselines.ConvVAE`, :class:`~scoresde.baselines.RealNVP` or
            :class:`~scoresde.baselines.DCGAN` (anything with ``configure_optimizers`` and ``train_step``).
        data: images ``[N, C, H, W]`` (floats in ``[-1, 1]`` on the 8-bit grid, or integer levels), or an
            object with such a ``.data`` tensor (a :class:`scoresde.data.Dataset`).
        steps: stop after this many optimizer steps.
        budget_seconds: stop once the loop has used this many process CPU seconds.
        batch_size: images per step (shuffled epochs drawn from ``generator``; at most ``N``).
        lr: learning rate (``None``: the model's default).
        generator: source of all the loop's randomness (batch order, the model's noise).
        progress: print a line to stderr about every ``progress_every`` wall seconds
            (step, mean losses since the last line, steps per second, CPU seconds used).
        progress_every: seconds between progress lines.
        step_options: keyword arguments of the model's ``train_step`` (e.g. ``{"kl_weight": 0.5}`` for the VAE).

    Returns:
        A :class:`FitResult`; the model is left in eval mode.

    Raises:
        OptionError: neither ``steps`` nor ``budget_seconds`` given, or a bad value for either,
            ``batch_size``, ``lr`` or ``generator``.
        ShapeError: ``data`` does not match ``model.image_shape``.
    """
    steps = positive_int(steps, "steps", allow_none=True)
    budget = finite_float(budget_seconds, "budget_seconds", positive=True, allow_none=True)
    if steps is None and budget is None:
        raise OptionError("fit needs steps or budget_seconds (or both) to know when to stop")
    batch_size = positive_int(batch_size, "batch_size")
    progress_every = finite_float(progress_every, "progress_every", positive=True)
    check_generator(generator)
    x_all = getattr(data, "data", data)
    check_images(x_all, model.image_shape, "data")
    if batch_size > x_all.shape[0]:
        raise OptionError(f"batch_size ({batch_size}) is larger than the data set ({x_all.shape[0]} images)")
    opts = model.configure_optimizers(lr)
    losses: Dict[str, List[float]] = {}
    model.train()
    t0, c0 = time.perf_counter(), time.process_time()
    last_print, last_step, done, stopped_by = t0, 0, 0, "steps"
    for idx in _batches(x_all.shape[0], batch_size, generator):
        if steps is not None and done >= steps:
            break
        if budget is not None and time.process_time() - c0 >= budget:
            stopped_by = "budget"
            break
        out = model.train_step(x_all[idx.to(x_all.device)], *opts, generator=generator, **(step_options or {}))
        for name, value in out.items():
            losses.setdefault(name, []).append(float(value))
        done += 1
        now = time.perf_counter()
        if progress and now - last_print >= progress_every:
            _print_progress(done, steps, losses, done - last_step, now - last_print, time.process_time() - c0, budget)
            last_print, last_step = now, done
    model.eval()
    return FitResult(done, time.perf_counter() - t0, time.process_time() - c0, losses, stopped_by)


def _print_progress(step, steps, losses, n_recent, dt, cpu, budget) -> None:
    means = ", ".join(f"{k} {sum(v[-n_recent:]) / n_recent:.4f}" for k, v in losses.items())
    of_steps = f"/{steps}" if steps is not None else ""
    of_budget = f" of {budget:.0f}" if budget is not None else ""
    print(f"step {step}{of_steps}: {means} ({n_recent / dt:.2f} steps/s, {cpu:.0f}{of_budget} CPU s)",
          file=sys.stderr, flush=True)


def nats_to_bits_per_dim(nats: Tensor, dims: int) -> Tensor:
    """``nats / (dims ln 2)``: a per-image negative log-likelihood in nats as bits per dimension."""
    return nats / (dims * math.log(2.0))
