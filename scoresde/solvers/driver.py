"""The sampling driver: :func:`solve` and :func:`sample`, and the validation of what they are given.

The driver turns a solver name into an object, resolves the time grid (a name in
:data:`~scoresde.solvers.grids.GRIDS`, a grid object or a tensor of times), draws the prior, runs the
solver's ``integrate`` under ``no_grad`` and applies the final Tweedie denoising step.
"""

from __future__ import annotations

import inspect
from typing import Any, Optional, Sequence, Type, Union

import numpy as np
import torch
from torch import Tensor

from .._utils import as_time, resolve_shape
from .._validation import boolean, finite_float, show, step_count
from ..errors import DataError, IncompatibleSDEError, NonFiniteError, OptionError, ShapeError, TimeRangeError, UnknownSolverError
from ..noise import SeedsLike, make_noise
from ..score import ScoreFn, tweedie_denoise
from ..sde.base import SDE
from .base import Callback, CountedScore, SampleResult, SolveContext, Solver
from .grids import GRIDS, TimeGrid
from .registry import SOLVERS

GridLike = Union[str, TimeGrid, Tensor, Sequence[float]]


def make_solver(solver: Union[str, Solver, Type[Solver]], **options: Any) -> Solver:
    """Turn a solver name (a key of :data:`SOLVERS`), class or instance into an instance, validating the options."""
    if isinstance(solver, Solver):
        if options:
            raise OptionError(
                f"solver options {sorted(options)} were given with a solver object; set them on the object instead"
            )
        return solver
    if isinstance(solver, str):
        if solver not in SOLVERS:
            raise UnknownSolverError(f"unknown solver {solver!r}; valid names are: {', '.join(sorted(SOLVERS))}")
        cls = SOLVERS[solver]
    elif isinstance(solver, type) and issubclass(solver, Solver):
        cls = solver
    else:
        raise UnknownSolverError(
            f"solver must be a name in scoresde.SOLVERS or a Solver, got {solver!r}; valid names are: {', '.join(sorted(SOLVERS))}"
        )
    params = inspect.signature(cls.__init__).parameters
    accepts_kwargs = any(p.kind is p.VAR_KEYWORD for p in params.values())
    valid = [n for n in params if n != "self" and params[n].kind is not params[n].VAR_KEYWORD]
    unknown = [k for k in options if k not in valid]
    if unknown and not accepts_kwargs:
        raise OptionError(f"solver {cls.name!r} got unknown options {unknown}; it accepts: {', '.join(valid) or 'none'}")
    return cls(**options)


def make_grid(grid: Union[str, TimeGrid, type]) -> TimeGrid:
    """Turn a grid name (a key of :data:`GRIDS`), class or object into a grid object."""
    if isinstance(grid, TimeGrid):
        return grid
    if isinstance(grid, str):
        if grid not in GRIDS:
            raise OptionError(f"unknown grid {grid!r}; valid names are: {', '.join(GRIDS)} (or pass a tensor of times)")
        return GRIDS[grid]()
    if isinstance(grid, type) and issubclass(grid, TimeGrid):
        return grid()
    raise OptionError(f"grid must be a name in scoresde.GRIDS, a TimeGrid or a tensor of times, got {grid!r}")


def _infer_device_dtype(score_fn: ScoreFn, device, dtype, x_init: Optional[Tensor]):
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise OptionError(f"dtype must be a floating-point torch.dtype such as torch.float32, got {show(dtype)}")
    if device is not None:
        try:
            if isinstance(device, bool):
                raise TypeError
            device = torch.device(device)
        except (RuntimeError, TypeError, ValueError, OverflowError):
            raise OptionError(f"device must be a torch.device or a string like 'cpu' or 'cuda', got {show(device)}") from None
    if x_init is not None:
        device, dtype = (device if device is not None else x_init.device), (dtype or x_init.dtype)
    elif device is None or dtype is None:
        params = getattr(score_fn, "parameters", None)
        p = next(iter(params()), None) if callable(params) else None
        if device is None:
            device = p.device if p is not None else torch.device("cpu")
        if dtype is None:  # a half-precision network still gets a float32 sampler state
            full = p is not None and p.dtype in (torch.float32, torch.float64)
            dtype = p.dtype if full else torch.get_default_dtype()
    device = torch.device(device)
    if device.type == "meta":
        raise OptionError("device is 'meta' (shapes without values: given, or where the score function's parameters are), "
                          "which cannot sample; pass device='cpu' or 'cuda', or move the network there")
    if device.type != "cpu":
        try:
            torch.empty(0, device=device)
        except (RuntimeError, AssertionError, ValueError) as e:  # no such device, or torch built without it
            raise OptionError(f"device {str(device)!r} is not available here ({str(e).splitlines()[0][:120]})") from None
    return device, dtype


def _grid_tensor(
    solver: Solver, sde: SDE, grid: Optional[GridLike], steps: Optional[int], eps: Optional[float],
    shape: torch.Size, start_at_T: bool,
) -> Tensor:
    """The decreasing float64 times ``[steps + 1]`` the solver runs on, validated.

    A tensor of times and the times a grid object returns pass the same checks (:func:`_check_times`).
    """
    T = float(sde.T)
    if grid is not None and not isinstance(grid, (str, TimeGrid, type)):  # explicit times
        times = _as_times(grid, "grid must be a name in scoresde.GRIDS, a TimeGrid or a 1-D tensor of times")
        if steps is not None and times.ndim == 1 and times.shape[0] != steps + 1:
            raise ShapeError(f"a grid for steps={steps} must have steps + 1 = {steps + 1} times, got {times.shape[0]}")
        _check_times(times, T, "the grid", start_at_T)
        if eps is not None and abs(float(times[-1]) - eps) > 1e-12:
            raise TimeRangeError(f"eps={eps} differs from the grid's last time {float(times[-1]):.6g}; give one of them")
        return times
    eps = solver.default_eps if eps is None else eps
    if not (0.0 < eps < T):
        raise TimeRangeError(f"eps must lie in (0, T) = (0, {T}), got {eps}")
    if steps is None:
        steps = solver.steps_for(sde, shape, eps)
    g = make_grid(solver.default_grid if grid is None else grid)
    what = f"grid {g!r}"
    times = _as_times(g(sde, steps, eps), f"{what} must return a 1-D tensor of times")
    if times.ndim != 1 or times.shape[0] != steps + 1:
        raise TimeRangeError(f"{what} must give steps + 1 = {steps + 1} times for steps={steps}, got shape {tuple(times.shape)}")
    _check_times(times, T, what, start_at_T=True)
    if abs(float(times[-1]) - eps) > 1e-6 * eps:
        raise TimeRangeError(f"{what} must end at eps = {eps:g}, got {float(times[-1]):.6g}: its last time is where "
                             "sampling stops; end the grid at eps (or pass the tensor of times as grid=)")
    return times


def _as_times(grid: Any, need: str) -> Tensor:
    """``grid`` as a float64 CPU tensor (not yet checked), or :class:`OptionError` with ``need``."""
    try:
        if isinstance(grid, Tensor) and (grid.device.type == "meta" or grid.is_complex()):
            raise TypeError
        return torch.as_tensor(grid, dtype=torch.float64).detach().cpu()
    except (TypeError, ValueError, RuntimeError, OverflowError):
        raise OptionError(f"{need}, got {type(grid).__name__} {show(grid)}") from None


def _check_times(times: Tensor, T: float, what: str, start_at_T: bool) -> None:
    """Raise unless ``times`` is 1-D, finite, strictly decreasing, inside ``(0, T]`` and (``start_at_T``) starts at ``T``."""
    if times.ndim != 1 or times.shape[0] < 2:
        raise ShapeError(f"{what}: a grid of times must be 1-D with steps + 1 >= 2 entries, got shape {tuple(times.shape)}")
    if not bool(torch.isfinite(times).all()):
        raise TimeRangeError(f"{what} holds NaN or infinite times")
    if not bool((times.diff() < 0).all()):
        raise TimeRangeError(f"{what} must be strictly decreasing (from T towards eps), got {_show(times)}")
    if not (0 < float(times[-1]) and float(times[0]) <= T * (1 + 1e-12)):
        raise TimeRangeError(f"{what}: times must lie in (0, T] = (0, {T}], got [{float(times[-1]):.6g}, {float(times[0]):.6g}]")
    if start_at_T and abs(float(times[0]) - T) > 1e-9 * T:
        raise TimeRangeError(
            f"{what} must start at T = {T} when sampling from the prior, got {float(times[0]):.6g}; "
            "to start later, pass x_init (the state at the grid's first time)"
        )


def _show(times: Tensor) -> str:
    """A short text of a tensor of times."""
    vals = [f"{v:.4g}" for v in times[:6].tolist()]
    return "[" + ", ".join(vals) + (", ...]" if times.shape[0] > 6 else "]")


def solve(
    sde: SDE,
    score_fn: ScoreFn,
    shape: Optional[Sequence[int]],
    solver: Union[str, Solver, Type[Solver]] = "euler_maruyama",
    steps: Optional[int] = None,
    generator: Optional[torch.Generator] = None,
    device: Optional[Union[str, torch.device]] = None,
    dtype: Optional[torch.dtype] = None,
    *,
    grid: Optional[GridLike] = None,
    eps: Optional[float] = None,
    denoise: Optional[bool] = None,
    x_init: Optional[Tensor] = None,
    record_trajectory: bool = False,
    callback: Optional[Callback] = None,
    seeds: Optional[SeedsLike] = None,
    return_log_prob: bool = False,
    **solver_options: Any,
) -> SampleResult:
    """Sample from the model by integrating backwards from the prior; return samples and statistics.

    Args:
        sde: the forward SDE.
        score_fn: ``score_fn(x, t) -> Tensor`` shaped like ``x`` (``x`` ``[B, *event]``, ``t`` ``[B]``).
        shape: sample shape ``[B, *event]`` (may be ``None`` when ``x_init`` is given).
        solver: a name in :data:`scoresde.SOLVERS`, a :class:`Solver` class, or a solver object.
        steps: number of solver steps (per-solver default when ``None``; the grid's length when
            ``grid`` is a tensor).
        generator: the source of all randomness (prior draw and solver noise).
        device, dtype: where and in what precision to sample; default to ``x_init``'s, then to the
            score function's parameters', then to CPU and the default dtype.
        grid: the time grid: a name in :data:`scoresde.GRIDS` (``"uniform"``, ``"quadratic"``,
            ``"log_snr"``, ``"karras"``), a :class:`~scoresde.solvers.grids.TimeGrid` object (e.g.
            ``Karras(rho=5)``), or a 1-D tensor of ``steps + 1`` strictly decreasing times from ``T``
            (or, with ``x_init``, any start in ``(0, T]``) to ``eps``. Default: the solver's ``default_grid``.
        eps: the final time (per-solver default, usually ``1e-3``; the last time of a tensor grid).
        denoise: apply the final Tweedie step ``x <- (x + std^2 score) / scale`` at ``eps``
            (default: the solver's ``denoise_default`` when the SDE has a kernel).
        x_init: start from this ``[B, *event]`` tensor at the grid's first time instead of a prior draw.
        record_trajectory: keep the states on the time grid in :attr:`SampleResult.trajectory`.
        callback: called as ``callback(i, t_next, x)`` after every step.
        seeds: one integer seed per sample, ``[B]`` (a tensor, a list of ints or a range), instead of
            ``generator``: every draw (prior, solver noise, Brownian motion) of sample ``i`` is a
            function of ``seeds[i]`` only, so sample ``i`` is the same in any batch, in any order and
            on any number of processes (see :class:`scoresde.noise.SeededNoise`). The adaptive
            probability-flow ODE (``dopri5``) then steps each sample on its own (per-sample step
            control); its other adaptive methods keep one step for the batch, which is not batch-invariant.
        return_log_prob: also integrate the divergence along the trajectory and return each sample's
            model log-density in :attr:`SampleResult.log_prob` (solvers with ``supports_log_prob``:
            the probability-flow ODE). Implies ``denoise=False`` (the density is that of the samples
            returned, at ``eps``).
        **solver_options: passed to the solver class when ``solver`` is a name or class.

    Returns:
        A :class:`SampleResult`.

    Raises:
        UnknownSolverError: ``solver`` is not a name in :data:`scoresde.SOLVERS` or a :class:`Solver`.
        IncompatibleSDEError: the solver, the grid (or ``denoise=True``) needs a closed-form kernel the SDE lacks.
        ShapeError: a bad ``shape``, ``x_init`` or grid length, or a score function whose output is
            not shaped like ``x`` or not on its device.
        TimeRangeError: ``eps`` outside ``(0, T)``; a grid (a tensor of times, or the times a grid object
            returns) that is not strictly decreasing, leaves ``(0, T]``, does not start at ``T`` when sampling
            from the prior, or (a grid object) does not end at ``eps``; times that collapse in ``dtype``.
        ValueError: ``steps`` that is not an integer in ``[1, 10**6]``; ``steps``/``grid`` with an adaptive
            solver that chooses its own steps (unless recording the trajectory or calling back); a flag
            (``return_log_prob``, ``record_trajectory``, ``denoise``) that is not a real boolean; a ``device``
            that is ``meta`` or not available; an ``x_init`` holding NaN or infinity (``DataError``).
        TypeError: a ``generator`` that is not a ``torch.Generator``, a non-floating ``dtype``, an
            ``x_init`` that is not a tensor, ``seeds`` that are not integers.
        ValueError: both ``generator`` and ``seeds``; ``return_log_prob`` with a solver that cannot
            return it, with ``denoise=True``, or with a start other than ``T``.
        NonFiniteError: NaN or infinity appeared during sampling.
    """
    solver_obj = make_solver(solver, **solver_options)
    solver_obj.check_sde(sde)
    return_log_prob = boolean(return_log_prob, "return_log_prob")
    record_trajectory = boolean(record_trajectory, "record_trajectory")
    denoise = boolean(denoise, "denoise", allow_none=True)
    if callback is not None and not callable(callback):
        raise OptionError(f"callback must be callable as callback(i, t, x), got {type(callback).__name__}")
    if return_log_prob and not solver_obj.supports_log_prob:
        raise OptionError(
            f"return_log_prob=True needs a solver that integrates the divergence (solver='ode'); {solver_obj.name!r} cannot"
        )
    if x_init is not None:
        if isinstance(x_init, np.ndarray):
            raise OptionError("x_init must be a torch.Tensor, got a NumPy array; convert it with torch.from_numpy(x_init)")
        if not isinstance(x_init, Tensor):
            raise OptionError(f"x_init must be a torch.Tensor [B, *event], got {type(x_init).__name__}")
        if not x_init.dtype.is_floating_point:
            raise OptionError(f"x_init must be a floating-point tensor, got {x_init.dtype}")
        if x_init.device.type == "meta":
            raise OptionError("x_init is a meta tensor (a shape without values); give a tensor on the CPU or a GPU")
        if not bool(torch.isfinite(x_init).all()):
            raise DataError("x_init holds NaN or infinite values; give the finite state at the grid's first time")
        if shape is not None and resolve_shape(shape) != x_init.shape:
            raise ShapeError(f"shape {tuple(resolve_shape(shape))} and x_init's shape {tuple(x_init.shape)} differ; give one")
        shape = resolve_shape(x_init.shape)
    elif shape is None:
        raise ShapeError("give the sample shape (B, *event) or x_init")
    else:
        shape = resolve_shape(shape)
    noise = make_noise(generator, seeds, shape[0])
    device, dtype = _infer_device_dtype(score_fn, device, dtype, x_init)
    steps = step_count(steps, "steps", allow_none=True)
    eps = finite_float(eps, "eps", allow_none=True)
    if solver_obj.adaptive and (steps is not None or grid is not None) and not (record_trajectory or callback):
        raise OptionError(
            f"solver {solver_obj.name!r} ({getattr(solver_obj, 'method', 'adaptive')}) chooses its own steps: steps and grid "
            "only set the output times of a recorded trajectory or callback. Set rtol/atol to control its accuracy, "
            "or pick a fixed-step method (e.g. method='rk4') to use steps"
        )
    times = _grid_tensor(solver_obj, sde, grid, steps, eps, shape, start_at_T=x_init is None)
    in_dtype = times.to(dtype)
    if not (bool((in_dtype.diff() < 0).all()) and float(in_dtype[-1]) > 0):
        raise TimeRangeError(f"the grid's times are not strictly decreasing and positive in {dtype} (eps = "
                             f"{float(times[-1]):.3g}, {times.shape[0] - 1} steps): raise eps, use fewer steps or dtype=torch.float64")
    if return_log_prob:
        if denoise:
            raise OptionError("return_log_prob=True gives the density of the undenoised samples at eps; pass denoise=False or leave it")
        if abs(float(times[0]) - float(sde.T)) > 1e-9 * float(sde.T):
            raise OptionError("return_log_prob=True needs the trajectory to start at T (the prior), not at a later x_init time")
        denoise = False
    if denoise is None:
        denoise = solver_obj.denoise_default and sde.has_kernel
    elif denoise and not sde.has_kernel:
        raise IncompatibleSDEError(
            f"denoise=True needs a closed-form Gaussian kernel, which {type(sde).__name__} lacks; pass denoise=False"
        )

    score = CountedScore(score_fn)
    ctx = SolveContext(sde=sde, score=score, noise=noise, return_log_prob=bool(return_log_prob))
    with torch.no_grad():
        if x_init is None:
            x = noise.prior(sde, shape, device, dtype)
        else:
            x = x_init.to(device=device, dtype=dtype)
        grid_t = times.to(device=device, dtype=dtype)
        x, states = solver_obj.integrate(ctx, x, grid_t, record_trajectory, callback)
        if denoise:
            x = tweedie_denoise(sde, score, x, as_time(grid_t[-1], x, check_range=False))
            if not bool(torch.isfinite(x).all()):
                raise NonFiniteError(f"non-finite values after the final denoising step at t = {float(grid_t[-1]):.6g}")
    trajectory = torch.stack(states) if states is not None else None
    return SampleResult(samples=x, nfe=score.nfe, times=grid_t, trajectory=trajectory, log_prob=ctx.log_prob)


def sample(
    sde: SDE,
    score_fn: ScoreFn,
    shape: Optional[Sequence[int]],
    solver: Union[str, Solver, Type[Solver]] = "euler_maruyama",
    steps: Optional[int] = None,
    generator: Optional[torch.Generator] = None,
    device: Optional[Union[str, torch.device]] = None,
    dtype: Optional[torch.dtype] = None,
    **options: Any,
) -> Tensor:
    """Draw samples ``[B, *event]`` from the model; see :func:`solve` for every argument (``seeds=`` included).

    Example:
        >>> import torch, scoresde
        >>> sde = scoresde.VPSDE()
        >>> score = lambda x, t: -x  # N(0, I) data: the diffused marginal stays N(0, I)
        >>> x = scoresde.sample(sde, score, (4, 2), solver="ddim", steps=10, generator=torch.Generator().manual_seed(0))
        >>> x.shape
        torch.Size([4, 2])
    """
    return solve(sde, score_fn, shape, solver, steps, generator, device, dtype, **options).samples
