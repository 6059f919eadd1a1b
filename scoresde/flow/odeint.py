"""The one adapter to torchdiffeq, shared by the probability-flow ODE sampler and the likelihood.

It owns the method tables, the options (stop exactly at the end time, the grid of a fixed-step
method), the default cap on adaptive steps and the translation of torchdiffeq's assertion
failures into scoresde errors that name the option to change.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from torch import Tensor
from torchdiffeq import odeint

from .._validation import finite_float, positive_int
from ..errors import IntegrationError, NonFiniteError, OptionError

#: Fixed-step methods and their orders; ``heun`` is torchdiffeq's ``heun2``.
FIXED_METHODS = {"euler": 1, "midpoint": 2, "heun": 2, "heun2": 2, "heun3": 3, "rk4": 4}
#: Adaptive methods and their orders.
ADAPTIVE_METHODS = {"dopri5": 5, "dopri8": 8, "bosh3": 3, "fehlberg2": 2, "adaptive_heun": 2}
#: Default cap on the steps (accepted and rejected) of an adaptive method: finite, so that tight
#: tolerances or a stiff model stop with an error instead of running for hours.
DEFAULT_MAX_STEPS = 10_000
_TORCHDIFFEQ_NAME = {"heun": "heun2"}

__all__ = ["FIXED_METHODS", "ADAPTIVE_METHODS", "DEFAULT_MAX_STEPS", "check_method", "odeint_checked", "ode_failure"]


def check_method(method: str, rtol: float = 1e-5, atol: float = 1e-5) -> bool:
    """Validate an ODE method name and tolerances; return whether the method is adaptive."""
    if not isinstance(method, str) or (method not in FIXED_METHODS and method not in ADAPTIVE_METHODS):
        valid = ", ".join(list(ADAPTIVE_METHODS) + list(FIXED_METHODS))
        raise OptionError(f"unknown ODE method {method!r}; valid methods: {valid}")
    for name, v in (("rtol", rtol), ("atol", atol)):
        finite_float(v, name, positive=True)
    return method in ADAPTIVE_METHODS


def odeint_checked(
    func: Callable[[Tensor, Any], Any],
    y0: Any,
    t: Tensor,
    method: str,
    *,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    max_steps: Optional[int] = DEFAULT_MAX_STEPS,
    grid: Optional[Tensor] = None,
    on_failure: Optional[Callable[[], None]] = None,
) -> Any:
    """Integrate ``dy/dt = func(t, y)`` through torchdiffeq and return the states at the times ``t``.

    Args:
        func: the right-hand side, ``func(t, y)`` with ``t`` a 0-d tensor and ``y`` a tensor or tuple.
        y0: the initial state at ``t[0]`` (a tensor or a tuple of tensors).
        t: output times (increasing or decreasing), ``[n >= 2]``.
        method: a key of :data:`FIXED_METHODS` or :data:`ADAPTIVE_METHODS`.
        rtol, atol: tolerances of an adaptive method.
        max_steps: cap on adaptive steps; ``None`` lifts it. The error at the cap names the option.
        grid: the step grid of a fixed-step method (defaults to ``t``).
        on_failure: called before a failure is translated (e.g. to raise a more precise
            non-finite error from a monitor of the right-hand side).

    Returns:
        What ``torchdiffeq.odeint`` returns: the states stacked over ``t``.

    Raises:
        IntegrationError: step-size underflow, or more than ``max_steps`` steps.
        NonFiniteError: torchdiffeq found NaN or infinity in the state.
    """
    adaptive = check_method(method, rtol, atol)
    options: dict = {}
    kwargs: dict = {}
    if adaptive:
        options["step_t"] = t[-1:]  # end a step exactly at the final time: never evaluate past it
        if max_steps is not None:
            options["max_num_steps"] = positive_int(max_steps, "max_steps")
        kwargs = dict(rtol=float(rtol), atol=float(atol))
    else:
        steps_grid = t if grid is None else grid
        options["grid_constructor"] = lambda f, y, tt: steps_grid
    try:
        return odeint(func, y0, t, method=_TORCHDIFFEQ_NAME.get(method, method), options=options, **kwargs)
    except AssertionError as e:  # torchdiffeq reports failures with asserts
        if on_failure is not None:
            on_failure()
        raise ode_failure(e, method, max_steps) from None


def ode_failure(e: AssertionError, method: str, max_steps: Optional[int]) -> Exception:
    """Translate torchdiffeq's assertion failures into a clear scoresde error."""
    msg = str(e)
    if "max_num_steps" in msg:
        return IntegrationError(
            f"ODE integration ({method}) exceeded max_steps={max_steps}; raise max_steps (None lifts the cap) "
            "or loosen rtol/atol"
        )
    if "non-finite" in msg:
        return NonFiniteError(f"ODE integration ({method}): non-finite values in the state; check the score function")
    if "underflow" in msg:
        return IntegrationError(
            f"ODE integration ({method}): step size underflow ({msg}); loosen rtol/atol, raise eps, or check the score function"
        )
    return IntegrationError(f"ODE integration ({method}) failed: {msg[:200]}")
