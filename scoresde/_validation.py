"""The one validation layer: every public entry and every command-line option checks its values here.

Each validator returns the clean value or raises an error (``OptionError`` by default; a caller may ask
for another :class:`~scoresde.errors.ScoreSDEError` subclass, such as ``ConfigError`` for a training
configuration) naming the argument, what it got and what it needs. None of them coerces silently:

* counts are integers (``3`` and ``3.0`` pass; ``1.7``, ``nan``, ``True`` and ``"3"`` do not);
* numbers are finite (``nan``, ``inf`` and ``1e400`` do not pass) and, where a range is stated, in it;
* booleans are real booleans (``"false"`` is not ``False``); the command line's words
  (``true/false``, ``yes/no``, ``on/off``, ``1/0``) are read by :func:`parse_bool`;
* choices are exact, and a near miss gets a suggestion ("did you mean dpmpp_2m?");
* seeds fit torch's signed 64-bit seed.
"""

from __future__ import annotations

import difflib
import math
import numbers
from typing import Any, Iterable, Optional, Type

from .errors import OptionError, ScoreSDEError

__all__ = [
    "integer", "positive_int", "nonneg_int", "seed_int", "MAX_SEED", "finite_float", "probability", "boolean",
    "parse_bool", "choice", "suggest", "check_generator", "class_count", "MAX_CLASSES", "step_count", "MAX_STEPS",
    "MAX_WEIGHT", "weight", "show",
]

Error = Type[ScoreSDEError]


def show(value: Any, limit: int = 80) -> str:
    """A one-line, bounded ``repr`` of ``value`` for error messages (a tensor's repr spans lines)."""
    text = " ".join(repr(value).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_integral(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, numbers.Integral):
        return True
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:  # 0-d tensor / numpy scalar
        if getattr(value, "dtype", None) is not None and str(value.dtype) in ("torch.bool", "bool"):
            return False
        try:
            value = value.item()
        except (RuntimeError, NotImplementedError, ValueError, TypeError):  # a meta tensor has no value
            return False
        return isinstance(value, numbers.Integral) and not isinstance(value, bool) or (
            isinstance(value, float) and math.isfinite(value) and value.is_integer())
    return isinstance(value, float) and math.isfinite(value) and value.is_integer()


def integer(
    value: Any, name: str, minimum: Optional[int] = None, allow_none: bool = False, maximum: Optional[int] = None,
    error: Error = OptionError, need: Optional[str] = None,
) -> Optional[int]:
    """``value`` as an ``int`` in ``[minimum, maximum]`` (``3`` and ``3.0`` pass; ``1.7``, ``nan``, ``True`` and strings do not).

    ``need`` words the requirement in errors (default ``"an integer >= minimum and <= maximum"``).
    """
    if value is None and allow_none:
        return None
    if need is None:
        if minimum is not None and maximum is not None:
            need = f"an integer >= {minimum} and <= {maximum}"
        elif maximum is not None:
            need = f"an integer <= {maximum}"
        else:
            need = "an integer" if minimum is None else f"an integer >= {minimum}"
    if not _is_integral(value):
        raise error(f"{name} must be {need}, got {show(value)}")
    v = int(value.item() if hasattr(value, "item") else value)
    if minimum is not None and v < minimum:
        raise error(f"{name} must be {need}, got {show(value)}")
    if maximum is not None and v > maximum:
        raise error(f"{name} must be {need}, got {show(value)}")
    return v


def positive_int(value: Any, name: str, allow_none: bool = False, error: Error = OptionError,
                 need: Optional[str] = None) -> Optional[int]:
    """``value`` as an integer ``>= 1``."""
    return integer(value, name, minimum=1, allow_none=allow_none, error=error, need=need)


def nonneg_int(value: Any, name: str, allow_none: bool = False, error: Error = OptionError,
               need: Optional[str] = None) -> Optional[int]:
    """``value`` as an integer ``>= 0``."""
    return integer(value, name, minimum=0, allow_none=allow_none, error=error, need=need)


#: Seeds must fit torch's signed 64-bit seed; larger values fail deep inside ``manual_seed``.
MAX_SEED = 2**63 - 1


def seed_int(value: Any, name: str = "seed", error: Error = OptionError) -> int:
    """``value`` as a seed in ``[0, 2**63 - 1]``."""
    return integer(value, name, minimum=0, maximum=MAX_SEED, error=error)


#: The most classes a label set or a class-conditional network may have (a label of 10**12 is a corrupt file).
MAX_CLASSES = 10**6


def class_count(value: Any, name: str = "num_classes", allow_none: bool = False, minimum: int = 1,
                error: Error = OptionError) -> Optional[int]:
    """``value`` as a number of classes ``K`` in ``[minimum, MAX_CLASSES]`` (``2.5``, ``True`` and ``"4"`` do not pass)."""
    return integer(value, name, minimum=minimum, maximum=MAX_CLASSES, allow_none=allow_none, error=error,
                   need=f"an integer >= {minimum} and <= {MAX_CLASSES:,}")


#: The most solver steps one solve may take (beyond it the grid alone is gigabytes and the run days).
MAX_STEPS = 10**6


def step_count(value: Any, name: str = "steps", allow_none: bool = False, error: Error = OptionError) -> Optional[int]:
    """``value`` as a number of steps in ``[1, MAX_STEPS]``."""
    return integer(value, name, minimum=1, maximum=MAX_STEPS, allow_none=allow_none, error=error,
                   need=f"an integer >= 1 and <= {MAX_STEPS:,}")


def finite_float(
    value: Any, name: str, positive: bool = False, allow_none: bool = False, minimum: Optional[float] = None,
    maximum: Optional[float] = None, error: Error = OptionError,
) -> Optional[float]:
    """``value`` as a finite ``float`` (``> 0`` with ``positive``; in ``[minimum, maximum]`` when given).

    Strings and booleans are refused (``"0.5"`` is not a number here; the command line parses its text first).
    """
    if value is None and allow_none:
        return None
    try:
        if isinstance(value, (bool, str, bytes)) or (hasattr(value, "dtype") and str(value.dtype) in ("torch.bool", "bool")):
            raise TypeError
        v = float(value)
    except (TypeError, ValueError, OverflowError, RuntimeError):
        raise error(f"{name} must be a number, got {show(value)}") from None
    if not math.isfinite(v) or (positive and not v > 0):
        raise error(f"{name} must be a {'positive ' if positive else ''}finite number, got {show(value)}")
    if (minimum is not None and v < minimum) or (maximum is not None and v > maximum):
        lo = "-inf" if minimum is None else f"{minimum:g}"
        hi = "inf" if maximum is None else f"{maximum:g}"
        raise error(f"{name} must lie in [{lo}, {hi}], got {show(value)}")
    return v


def probability(value: Any, name: str, allow_none: bool = False, error: Error = OptionError) -> Optional[float]:
    """``value`` as a finite number in ``[0, 1]``."""
    return finite_float(value, name, allow_none=allow_none, minimum=0.0, maximum=1.0, error=error)


#: The largest guidance weight or scale in absolute value (beyond it the guided score is the guidance term alone,
#: scaled past what float32 can hold).
MAX_WEIGHT = 1e4


def weight(value: Any, name: str, minimum: float = -MAX_WEIGHT, maximum: float = MAX_WEIGHT,
           error: Error = OptionError) -> float:
    """A guidance weight or scale: a finite number in ``[minimum, maximum]`` (default ``|w| <= 1e4``)."""
    return finite_float(value, name, minimum=minimum, maximum=maximum, error=error)


def boolean(value: Any, name: str, allow_none: bool = False, error: Error = OptionError) -> Optional[bool]:
    """``value`` as a ``bool``: only ``True`` and ``False`` pass (``1``, ``"false"`` and ``"yes"`` do not)."""
    if value is None and allow_none:
        return None
    numpy_bool = type(value).__module__ == "numpy" and type(value).__name__ in ("bool_", "bool")  # a real boolean too
    if not isinstance(value, bool) and not numpy_bool:
        raise error(f"{name} must be True or False, got {show(value)}")
    return bool(value)


_TRUE_WORDS = ("true", "yes", "on", "1")
_FALSE_WORDS = ("false", "no", "off", "0")


def parse_bool(text: str, name: str, error: Error = OptionError) -> bool:
    """A command-line word as a bool: ``true/yes/on/1`` or ``false/no/off/0`` (any case); anything else is refused."""
    word = str(text).strip().lower()
    if word in _TRUE_WORDS:
        return True
    if word in _FALSE_WORDS:
        return False
    raise error(f"{name} must be true or false (or yes/no, on/off, 1/0), got {show(text)}")


def suggest(value: Any, valid: Iterable[str]) -> str:
    """``"; did you mean X?"`` for the closest valid name (case- and punctuation-insensitive), or ``""``."""
    valid = [str(v) for v in valid]
    key = lambda s: "".join(c for c in str(s).lower().replace("+", "p") if c.isalnum())  # noqa: E731  (dpm++ ~ dpmpp)
    by_key = {key(v): v for v in valid}
    k = key(value)
    if not k:
        return ""
    if k in by_key:
        return f"; did you mean {by_key[k]}?"
    prefixed = sorted((v for v in by_key if len(k) >= 3 and v.startswith(k)), key=len)
    if prefixed:
        return f"; did you mean {by_key[prefixed[0]]}?"
    close = difflib.get_close_matches(k, list(by_key), n=1, cutoff=0.6)
    return f"; did you mean {by_key[close[0]]}?" if close else ""


def choice(value: Any, name: str, valid: Iterable[str], allow_none: bool = False, error: Error = OptionError) -> Any:
    """``value`` if it is one of ``valid`` (exactly), else an error listing them, with a suggestion for a near miss."""
    valid = list(valid)
    if value is None and allow_none:
        return None
    if isinstance(value, str) and value in valid:
        return value
    hint = suggest(value, valid)
    raise error(f"{name} must be one of {', '.join(map(str, valid))}; got {show(value)}" + (f" ({hint[2:]})" if hint else ""))


def check_generator(generator: Any, name: str = "generator") -> None:
    """Raise :class:`OptionError` unless ``generator`` is ``None`` or a ``torch.Generator``.

    A seed is not a generator: ``generator=0`` is refused (use ``torch.Generator().manual_seed(0)``).
    """
    import torch

    if generator is not None and not isinstance(generator, torch.Generator):
        raise OptionError(
            f"{name} must be a torch.Generator or None, got {type(generator).__name__} {show(generator)}; "
            "for a seed use torch.Generator().manual_seed(seed)"
        )
