"""Small tensor helpers shared across the package."""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
from torch import Tensor

from .errors import ShapeError, TimeRangeError

Number = Union[float, int]


def append_dims(v: Tensor, ndim: int) -> Tensor:
    """Append trailing singleton dimensions to ``v`` until it has ``ndim`` dimensions.

    Turns a per-sample coefficient of shape ``[B]`` into ``[B, 1, ..., 1]`` so it broadcasts
    against data of shape ``[B, *event]`` whatever the event rank.
    """
    missing = ndim - v.ndim
    if missing < 0:
        raise ShapeError(f"cannot broadcast a tensor of {v.ndim} dims to {ndim} dims")
    return v.reshape(*v.shape, *([1] * missing))


def batch_sum(x: Tensor) -> Tensor:
    """Sum over all non-batch dimensions: ``[B, *event] -> [B]``."""
    return x.reshape(x.shape[0], -1).sum(dim=1)


def batch_norm_sq(x: Tensor) -> Tensor:
    """Squared Euclidean norm of each sample: ``[B, *event] -> [B]``."""
    return batch_sum(x * x)


def event_numel(x: Tensor) -> int:
    """Number of elements in one sample of ``x`` (``x`` is ``[B, *event]``)."""
    n = 1
    for s in x.shape[1:]:
        n *= s
    return n


def check_batch(x: Tensor, name: str = "x") -> None:
    """Raise :class:`ShapeError` unless ``x`` is a floating tensor ``[B, *event]`` with ``B >= 1``."""
    if not isinstance(x, Tensor):
        raise ShapeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim < 1 or x.shape[0] == 0:
        raise ShapeError(f"{name} must have shape [B, *event] with B >= 1, got {tuple(x.shape)}")


def as_time(t: Union[Tensor, Number], x: Tensor, T: float = 1.0, check_range: bool = True) -> Tensor:
    """Return ``t`` as a tensor of shape ``[B]`` on ``x``'s device and dtype.

    ``t`` may be a Python number, a 0-d tensor (broadcast to the batch) or a ``[B]`` tensor.
    Raises :class:`ShapeError` for any other shape and :class:`TimeRangeError` for times
    outside ``[0, T]``.
    """
    B = x.shape[0]
    if not isinstance(t, Tensor):
        t = torch.full((B,), float(t), device=x.device, dtype=x.dtype)
    elif t.ndim == 0:
        t = t.to(device=x.device, dtype=x.dtype).expand(B)
    elif t.shape != (B,):
        raise ShapeError(f"t must have shape [B] = [{B}] (one time per sample), got {tuple(t.shape)}")
    else:
        t = t.to(device=x.device, dtype=x.dtype)
    if check_range:
        check_time_range(t, T)
    return t


def check_time_range(t: Tensor, T: float = 1.0) -> None:
    """Raise :class:`TimeRangeError` if any entry of ``t`` lies outside ``[0, T]``.

    This reads one boolean back from the device; call it at API boundaries, not in hot loops.
    """
    if t.numel() and (bool((t < 0).any()) or bool((t > T).any())):
        lo, hi = float(t.min()), float(t.max())
        raise TimeRangeError(f"t must lie in [0, T] = [0, {T}], got values in [{lo:.6g}, {hi:.6g}]")


def resolve_shape(shape: Union[Sequence[int], torch.Size]) -> torch.Size:
    """Validate a sample shape ``[B, *event]`` given as a sequence of positive ints."""
    try:
        size = torch.Size([int(s) for s in shape])
    except (TypeError, ValueError):
        raise ShapeError(f"shape must be a sequence of ints like (B, D) or (B, C, H, W), got {shape!r}") from None
    if len(size) < 2 or any(s <= 0 for s in size):
        raise ShapeError(f"shape must be (B, *event) with every entry positive and at least one event dim, got {tuple(size)}")
    return size


def seed_from_generator(generator: Optional[torch.Generator]) -> int:
    """Draw a 62-bit integer seed from ``generator`` (or the global RNG when ``None``)."""
    device = generator.device if generator is not None else "cpu"
    return int(torch.randint(0, 2**62, (1,), generator=generator, device=device).item())


def randn(
    shape: Sequence[int],
    generator: Optional[torch.Generator] = None,
    device: Optional[Union[torch.device, str]] = None,
    dtype: Optional[torch.dtype] = None,
) -> Tensor:
    """Standard normal noise of ``shape`` drawn from ``generator``.

    The noise is drawn on the generator's own device (so a CPU generator gives the same bits
    whatever the target device) and then moved to ``device`` if that differs.
    """
    if generator is None or torch.device(generator.device).type == torch.device(device or "cpu").type:
        return torch.randn(tuple(shape), generator=generator, device=device, dtype=dtype)
    return torch.randn(tuple(shape), generator=generator, device=generator.device, dtype=dtype).to(device)


def randn_like(x: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
    """Standard normal noise shaped like ``x`` (same device and dtype) drawn from ``generator``."""
    return randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
