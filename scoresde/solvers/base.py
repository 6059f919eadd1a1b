"""Solver base classes and the one sampling driver.

Each solver is a small class whose :meth:`Solver.step` holds only its update rule and which
declares what it is (``stochastic``, ``order``, whether it needs a closed-form kernel). The
driver :func:`solve` owns the time grid, the loop, NFE counting, non-finite checks, trajectory
recording, callbacks and the final denoising step.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Dict, List, Optional, Sequence, Type, Union

import torch
from torch import Tensor

from .._utils import as_time, resolve_shape
from ..errors import IncompatibleSDEError, NonFiniteError, ShapeError, TimeRangeError, UnknownSolverError
from ..score import ScoreFn, tweedie_denoise
from ..sde.base import SDE

Callback = Callable[[int, Tensor, Tensor], None]


class CountedScore:
    """A score function that counts its evaluations and checks its output shape.

    ``nfe`` is the number of calls (each call is one batched network evaluation). Every output
    is checked to be shaped like its input; the check reads only metadata, never device values.
    """

    def __init__(self, score_fn: ScoreFn):
        if not callable(score_fn):
            raise TypeError(f"score_fn must be callable as score_fn(x, t), got {type(score_fn).__name__}")
        self.score_fn = score_fn
        self.nfe = 0

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        self.nfe += 1
        out = self.score_fn(x, t)
        if not isinstance(out, Tensor) or out.shape != x.shape:
            got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ShapeError(
                f"score_fn(x, t) must return a tensor shaped like x {tuple(x.shape)}, got {got}; "
                "check that the network's output matches its input shape"
            )
        return out


@dataclass
class SampleResult:
    """What :func:`solve` returns.

    Attributes:
        samples: the final samples, ``[B, *event]``.
        nfe: number of score evaluations (batched calls), the final denoising step included.
        times: the solver's time grid, ``[steps + 1]``, from ``T`` down to ``eps``.
        trajectory: states on ``times``, ``[steps + 1, B, *event]``, when recorded, else ``None``.
    """

    samples: Tensor
    nfe: int
    times: Tensor
    trajectory: Optional[Tensor] = None


@dataclass
class SolveContext:
    """Everything a step may need beyond the state: the SDE, the counted score and the noise source."""

    sde: SDE
    score: CountedScore
    generator: Optional[torch.Generator]


class Solver:
    """Abstract sampler. Subclasses implement :meth:`step` (or :meth:`integrate`).

    Class attributes every solver declares:

    * ``name``: its key in :data:`scoresde.SOLVERS`;
    * ``stochastic``: whether it injects noise;
    * ``order``: weak order for stochastic solvers, global order for deterministic ones;
    * ``requires_kernel``: whether it needs the SDE's closed-form Gaussian kernel;
    * ``default_steps`` and ``default_eps``: used when :func:`solve` gets ``None``;
    * ``denoise_default``: whether the final Tweedie denoising step is on by default.
    """

    name: ClassVar[str] = ""
    stochastic: ClassVar[bool] = True
    order: float = 1.0
    requires_kernel: ClassVar[bool] = False
    default_steps: ClassVar[int] = 1000
    default_eps: ClassVar[float] = 1e-3
    denoise_default: ClassVar[bool] = True

    def __init__(self) -> None:
        self.nfe = 0  # NFE of the last solve with this object

    # --------------------------------------------------------------- hooks
    def check_sde(self, sde: SDE) -> None:
        """Raise :class:`IncompatibleSDEError` if this solver cannot serve ``sde``."""
        if not isinstance(sde, SDE):
            raise TypeError(f"sde must be a scoresde.SDE, got {type(sde).__name__}")
        if self.requires_kernel and not sde.has_kernel:
            raise IncompatibleSDEError(
                f"solver {self.name!r} needs an SDE with a closed-form Gaussian kernel (marginal_coeffs), "
                f"which {type(sde).__name__} does not provide; use 'euler_maruyama', 'ode' or 'torchsde' instead"
            )

    def time_grid(self, sde: SDE, steps: int, eps: float, device: torch.device, dtype: torch.dtype) -> Tensor:
        """Times ``[steps + 1]`` from ``T`` down to ``eps`` (uniform by default)."""
        return torch.linspace(sde.T, eps, steps + 1, device=device, dtype=dtype)

    def step(self, ctx: SolveContext, x: Tensor, t: Tensor, t_next: Tensor) -> Tensor:
        """Advance ``x`` ``[B, *event]`` from times ``t`` to ``t_next < t`` (both ``[B]``)."""
        raise NotImplementedError

    def integrate(
        self, ctx: SolveContext, x: Tensor, grid: Tensor, record: bool, callback: Optional[Callback]
    ) -> "tuple[Tensor, Optional[List[Tensor]]]":
        """Run :meth:`step` over ``grid``; returns the final state and, if ``record``, all states.

        Non-finite values are tracked on the device (no per-step synchronisation) and reported
        with the first offending step and time once the loop ends.
        """
        B = x.shape[0]
        states = [x] if record else None
        finite = []  # one 0-d bool per step, kept on the device: no synchronisation inside the loop
        for i in range(grid.shape[0] - 1):
            t, t_next = grid[i].expand(B), grid[i + 1].expand(B)
            x = self.step(ctx, x, t, t_next)
            finite.append(torch.isfinite(x).all())
            if states is not None:
                states.append(x)
            if callback is not None:
                callback(i, grid[i + 1], x)
        bad = (~torch.stack(finite)).nonzero() if finite else []
        if len(bad):
            i = int(bad[0])
            raise NonFiniteError(
                f"solver {self.name!r}: non-finite values appeared at step {i} "
                f"(t = {float(grid[i]):.6g} -> {float(grid[i + 1]):.6g}); "
                "check the score function for NaN/inf, or use more steps or a larger eps"
            )
        return x, states

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if k != "nfe" and not k.startswith("_"))
        return f"{type(self).__name__}({fields})"


def _infer_device_dtype(score_fn: ScoreFn, device, dtype, x_init: Optional[Tensor]):
    if x_init is not None:
        return (torch.device(device) if device is not None else x_init.device), (dtype or x_init.dtype)
    if device is None or dtype is None:
        params = getattr(score_fn, "parameters", None)
        p = next(iter(params()), None) if callable(params) else None
        if device is None:
            device = p.device if p is not None else torch.device("cpu")
        if dtype is None:  # a half-precision network still gets a float32 sampler state
            full = p is not None and p.dtype in (torch.float32, torch.float64)
            dtype = p.dtype if full else torch.get_default_dtype()
    return torch.device(device), dtype


def make_solver(solver: Union[str, Solver, Type[Solver]], registry: Dict[str, Type[Solver]], **options: Any) -> Solver:
    """Turn a solver name, class or instance into an instance, validating the options."""
    if isinstance(solver, Solver):
        if options:
            raise TypeError(
                f"solver options {sorted(options)} were given with a solver object; set them on the object instead"
            )
        return solver
    if isinstance(solver, str):
        if solver not in registry:
            raise UnknownSolverError(f"unknown solver {solver!r}; valid names are: {', '.join(sorted(registry))}")
        cls = registry[solver]
    elif isinstance(solver, type) and issubclass(solver, Solver):
        cls = solver
    else:
        raise UnknownSolverError(
            f"solver must be a name in scoresde.SOLVERS or a Solver, got {solver!r}; valid names are: {', '.join(sorted(registry))}"
        )
    params = inspect.signature(cls.__init__).parameters
    accepts_kwargs = any(p.kind is p.VAR_KEYWORD for p in params.values())
    valid = [n for n in params if n != "self" and params[n].kind is not params[n].VAR_KEYWORD]
    unknown = [k for k in options if k not in valid]
    if unknown and not accepts_kwargs:
        raise TypeError(f"solver {cls.name!r} got unknown options {unknown}; it accepts: {', '.join(valid) or 'none'}")
    return cls(**options)


def solve(
    sde: SDE,
    score_fn: ScoreFn,
    shape: Sequence[int],
    solver: Union[str, Solver, Type[Solver]] = "euler_maruyama",
    steps: Optional[int] = None,
    generator: Optional[torch.Generator] = None,
    device: Optional[Union[str, torch.device]] = None,
    dtype: Optional[torch.dtype] = None,
    *,
    eps: Optional[float] = None,
    denoise: Optional[bool] = None,
    x_init: Optional[Tensor] = None,
    record_trajectory: bool = False,
    callback: Optional[Callback] = None,
    **solver_options: Any,
) -> SampleResult:
    """Sample from the model by integrating backwards from the prior; return samples and statistics.

    Args:
        sde: the forward SDE.
        score_fn: ``score_fn(x, t) -> Tensor`` shaped like ``x`` (``x`` ``[B, *event]``, ``t`` ``[B]``).
        shape: sample shape ``[B, *event]``.
        solver: a name in :data:`scoresde.SOLVERS`, a :class:`Solver` class, or a solver object.
        steps: number of solver steps (per-solver default when ``None``).
        generator: the source of all randomness (prior draw and solver noise).
        device, dtype: where and in what precision to sample; default to ``x_init``'s, then to the
            score function's parameters', then to CPU and the default dtype.
        eps: the final time (per-solver default, usually ``1e-3``).
        denoise: apply the final Tweedie step ``x <- (x + std^2 score) / scale`` at ``eps``
            (default: the solver's ``denoise_default`` when the SDE has a kernel).
        x_init: start from this ``[B, *event]`` tensor at ``T`` instead of a prior draw.
        record_trajectory: keep the states on the time grid in :attr:`SampleResult.trajectory`.
        callback: called as ``callback(i, t_next, x)`` after every step.
        **solver_options: passed to the solver class when ``solver`` is a name or class.

    Returns:
        A :class:`SampleResult`.

    Raises:
        UnknownSolverError: ``solver`` is not a name in :data:`scoresde.SOLVERS` or a :class:`Solver`.
        IncompatibleSDEError: the solver (or ``denoise=True``) needs a closed-form kernel the SDE lacks.
        ShapeError: a bad ``shape`` or ``x_init``, or a score function whose output is not shaped like ``x``.
        TimeRangeError: ``eps`` outside ``(0, T)``.
        NonFiniteError: NaN or infinity appeared during sampling.
    """
    from . import SOLVERS

    solver_obj = make_solver(solver, SOLVERS, **solver_options)
    solver_obj.check_sde(sde)
    shape = resolve_shape(shape if x_init is None else x_init.shape)
    device, dtype = _infer_device_dtype(score_fn, device, dtype, x_init)
    if not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating-point dtype, got {dtype}")
    if steps is None:
        steps = solver_obj.default_steps
    elif isinstance(steps, bool) or int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    steps = int(steps)
    eps = solver_obj.default_eps if eps is None else float(eps)
    if not (0.0 < eps < sde.T):
        raise TimeRangeError(f"eps must lie in (0, T) = (0, {sde.T}), got {eps}")
    if denoise is None:
        denoise = solver_obj.denoise_default and sde.has_kernel
    elif denoise and not sde.has_kernel:
        raise IncompatibleSDEError(
            f"denoise=True needs a closed-form Gaussian kernel, which {type(sde).__name__} lacks; pass denoise=False"
        )

    score = CountedScore(score_fn)
    ctx = SolveContext(sde=sde, score=score, generator=generator)
    with torch.no_grad():
        if x_init is None:
            x = sde.prior_sample(shape, generator=generator, device=device, dtype=dtype)
        else:
            if x_init.shape != shape:
                raise ShapeError(f"x_init must have shape {tuple(shape)}, got {tuple(x_init.shape)}")
            x = x_init.to(device=device, dtype=dtype)
        grid = solver_obj.time_grid(sde, steps, eps, device, dtype)
        x, states = solver_obj.integrate(ctx, x, grid, record_trajectory, callback)
        if denoise:
            x = tweedie_denoise(sde, score, x, as_time(grid[-1], x, check_range=False))
            if not bool(torch.isfinite(x).all()):
                raise NonFiniteError(f"non-finite values after the final denoising step at t = {float(grid[-1]):.6g}")
    solver_obj.nfe = score.nfe
    trajectory = torch.stack(states) if states is not None else None
    return SampleResult(samples=x, nfe=score.nfe, times=grid, trajectory=trajectory)


def sample(
    sde: SDE,
    score_fn: ScoreFn,
    shape: Sequence[int],
    solver: Union[str, Solver, Type[Solver]] = "euler_maruyama",
    steps: Optional[int] = None,
    generator: Optional[torch.Generator] = None,
    device: Optional[Union[str, torch.device]] = None,
    dtype: Optional[torch.dtype] = None,
    **options: Any,
) -> Tensor:
    """Draw samples ``[B, *event]`` from the model; see :func:`solve` for every argument.

    The number of score evaluations of the call is left on the solver object as ``solver.nfe``
    (pass a solver object to read it) and is returned by :func:`solve`.

    Example:
        >>> import torch, scoresde
        >>> sde = scoresde.VPSDE()
        >>> score = lambda x, t: -x  # N(0, I) data: the diffused marginal stays N(0, I)
        >>> x = scoresde.sample(sde, score, (4, 2), solver="ddim", steps=10, generator=torch.Generator().manual_seed(0))
        >>> x.shape
        torch.Size([4, 2])
    """
    return solve(sde, score_fn, shape, solver, steps, generator, device, dtype, **options).samples
