"""Validators for user-supplied numbers: one place, one wording, used by the API and the CLI alike.

Each returns the clean value or raises ``ValueError`` naming the argument, what it got and what it
needs. None of them truncates: ``1.7`` is not an integer and ``nan`` is not a number of steps.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Optional

from .errors import OptionError


def _is_integral(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, numbers.Integral):
        return True
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:  # 0-d tensor / numpy scalar
        value = value.item()
        return isinstance(value, numbers.Integral) or (isinstance(value, float) and value.is_integer())
    return isinstance(value, float) and math.isfinite(value) and value.is_integer()


def integer(
    value: Any, name: str, minimum: Optional[int] = None, allow_none: bool = False, maximum: Optional[int] = None
) -> Optional[int]:
    """``value`` as an ``int`` in ``[minimum, maximum]`` (``3`` and ``3.0`` pass; ``1.7``, ``nan``, ``True`` and strings do not)."""
    if value is None and allow_none:
        return None
    if not _is_integral(value):
        need = "an integer" if minimum is None else f"an integer >= {minimum}"
        raise OptionError(f"{name} must be {need}, got {value!r}")
    v = int(value.item() if hasattr(value, "item") else value)
    if minimum is not None and v < minimum:
        raise OptionError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if maximum is not None and v > maximum:
        raise OptionError(f"{name} must be an integer <= {maximum}, got {value!r}")
    return v


def positive_int(value: Any, name: str, allow_none: bool = False) -> Optional[int]:
    """``value`` as an integer ``>= 1``."""
    return integer(value, name, minimum=1, allow_none=allow_none)


def nonneg_int(value: Any, name: str, allow_none: bool = False) -> Optional[int]:
    """``value`` as an integer ``>= 0``."""
    return integer(value, name, minimum=0, allow_none=allow_none)


#: Seeds must fit torch's signed 64-bit seed; larger values fail deep inside ``manual_seed``.
MAX_SEED = 2**63 - 1


def seed_int(value: Any, name: str = "seed") -> int:
    """``value`` as a seed in ``[0, 2**63 - 1]``."""
    return integer(value, name, minimum=0, maximum=MAX_SEED)


def check_generator(generator: Any, name: str = "generator") -> None:
    """Raise :class:`OptionError` unless ``generator`` is ``None`` or a ``torch.Generator``.

    A seed is not a generator: ``generator=0`` is refused (use ``torch.Generator().manual_seed(0)``).
    """
    import torch

    if generator is not None and not isinstance(generator, torch.Generator):
        raise OptionError(
            f"{name} must be a torch.Generator or None, got {type(generator).__name__} {generator!r}; "
            "for a seed use torch.Generator().manual_seed(seed)"
        )


def finite_float(value: Any, name: str, positive: bool = False, allow_none: bool = False) -> Optional[float]:
    """``value`` as a finite ``float`` (and ``> 0`` with ``positive``)."""
    if value is None and allow_none:
        return None
    try:
        if isinstance(value, (bool, str)):
            raise TypeError
        v = float(value)
    except (TypeError, ValueError):
        raise OptionError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(v) or (positive and not v > 0):
        raise OptionError(f"{name} must be a {'positive ' if positive else ''}finite number, got {value!r}")
    return v
