"""Small tensor helpers shared across the package."""

from __future__ import annotations

import math
import numbers
import os
from typing import Sequence, Union

import torch
from torch import Tensor

from ._validation import _is_integral
from .errors import OptionError, ResourceLimitError, ShapeError, TimeRangeError

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
    # Times are always floating point: an integer x must not truncate t = 0.5 to 0.
    dtype = x.dtype if x.is_floating_point() else torch.get_default_dtype()
    if not isinstance(t, Tensor):
        if isinstance(t, bool) or not isinstance(t, numbers.Real):
            raise TimeRangeError(f"t must be a number or a tensor of times, got {type(t).__name__}")
        t = torch.full((B,), float(t), device=x.device, dtype=dtype)
    elif t.ndim == 0:
        t = t.to(device=x.device, dtype=dtype).expand(B)
    elif t.shape != (B,):
        raise ShapeError(f"t must have shape [B] = [{B}] (one time per sample), got {tuple(t.shape)}")
    else:
        t = t.to(device=x.device, dtype=dtype)
    if check_range:
        check_time_range(t, T)
    return t


def check_time_range(t: Tensor, T: float = 1.0) -> None:
    """Raise :class:`TimeRangeError` if any entry of ``t`` lies outside ``[0, T]`` or is NaN.

    This reads one boolean back from the device; call it at API boundaries, not in hot loops.
    """
    if not t.numel():
        return
    if bool(((t >= 0) & (t <= T)).all()):  # one read-back; NaN fails both comparisons
        return
    if bool(torch.isnan(t).any()):
        raise TimeRangeError(f"t holds NaN ({int(torch.isnan(t).sum())} of {t.numel()} entries); times must lie in [0, {T}]")
    lo, hi = float(t.min()), float(t.max())
    raise TimeRangeError(f"t must lie in [0, T] = [0, {T}], got values in [{lo:.6g}, {hi:.6g}]")


def resolve_shape(shape: Union[Sequence[int], torch.Size], itemsize: int = 4) -> torch.Size:
    """Validate a sample shape ``[B, *event]`` given as a sequence of positive ints.

    Strings (``"42"`` is not ``(4, 2)``), non-integral entries (``2.5``), bools and NaN are refused,
    not truncated; so is a shape whose tensor of ``itemsize``-byte entries would exceed
    :func:`memory_limit_bytes` (:class:`~scoresde.errors.ResourceLimitError`).
    """
    if isinstance(shape, (str, bytes)) or not isinstance(shape, (Sequence, torch.Size)):
        raise ShapeError(f"shape must be a sequence of ints like (B, D) or (B, C, H, W), got {shape!r}")
    entries = []
    for s in shape:
        if isinstance(s, Tensor) and s.numel() == 1 and not s.is_floating_point() and s.dtype != torch.bool:
            s = int(s)
        if isinstance(s, bool) or not _is_integral(s):
            raise ShapeError(f"shape must be a sequence of ints like (B, D) or (B, C, H, W), got {shape!r} (entry {s!r})")
        entries.append(int(s))
    size = torch.Size(entries)
    if len(size) < 2 or any(s <= 0 for s in size):
        raise ShapeError(f"shape must be (B, *event) with every entry positive and at least one event dim, got {tuple(size)}")
    check_memory(math.prod(size) * itemsize, f"a tensor of shape {tuple(size)}")
    return size


# --------------------------------------------------------------------------- memory bounds
#: Environment variable that sets the memory bound (bytes) used by :func:`check_memory`.
MEMORY_LIMIT_ENV = "SCORESDE_MAX_BYTES"


def memory_limit_bytes() -> int:
    """Largest allocation (bytes) a single request may ask for.

    ``$SCORESDE_MAX_BYTES`` when set, else the machine's physical memory (asking for more can only
    swap or be killed). Used to refuse absurd networks, arrays and sample shapes up front.
    """
    env = os.environ.get(MEMORY_LIMIT_ENV)
    if env:
        try:
            return max(1, int(float(env)))
        except ValueError:
            raise OptionError(f"${MEMORY_LIMIT_ENV} must be a number of bytes, got {env!r}") from None
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):  # not POSIX: a generous fixed bound
        return 64 * 2**30


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if n < 1024 or unit == "PB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} PB"  # pragma: no cover


def check_memory(nbytes: int, what: str, hint: str = "") -> None:
    """Raise :class:`ResourceLimitError` if ``nbytes`` exceeds :func:`memory_limit_bytes`."""
    limit = memory_limit_bytes()
    if nbytes > limit:
        raise ResourceLimitError(
            f"{what} would need {_human(nbytes)}, more than the limit of {_human(limit)} "
            f"(the machine's memory, or ${MEMORY_LIMIT_ENV}); refused before allocating" + (f". {hint}" if hint else "")
        )
