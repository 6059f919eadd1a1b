"""What every sampler is built on: the solve context, the solver base classes and the one step loop.

Two kinds of solver share one interface:

* :class:`Solver`: anything the driver (:func:`scoresde.solve`) can run. It implements
  :meth:`Solver.integrate`, which runs the whole reverse process over a time grid. The adaptive
  probability-flow ODE (torchdiffeq) and torchsde's methods are of this kind.
* :class:`StepSolver`: a solver defined by its update rule. It implements
  ``init(ctx, x, grid) -> state`` and ``step(ctx, x, t, t_next, state) -> (x, state)``; the one loop in
  :meth:`StepSolver.integrate` owns non-finite tracking, trajectory recording and callbacks. The
  per-solve memory of a solver (the previous model outputs of a multistep method, a step counter)
  lives in ``state``, never on ``self``: a solver object can be reused, shared and nested.
* :class:`WrapperSolver`: a step solver that wraps another (predictor–corrector, inpainting) and
  forwards its capabilities (``order``, ``stochastic``, ``requires_kernel``, grids, defaults).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar, List, Optional, Tuple, Union

import torch
from torch import Tensor

from ..errors import IncompatibleSDEError, NonFiniteError, OptionError, ShapeError
from ..noise import Noise
from ..score import ScoreFn
from ..sde.base import SDE

Callback = Callable[[int, Tensor, Tensor], None]


class CountedScore:
    """A score function that counts its evaluations and checks its output.

    ``nfe`` is the number of calls (each call is one batched network evaluation). Every output
    is checked to be a tensor shaped like its input, on its device and in its dtype (a float64
    score does not silently turn a float32 state into float64); the check reads only metadata,
    never device values.
    """

    def __init__(self, score_fn: ScoreFn):
        if not callable(score_fn):
            raise OptionError(f"score_fn must be callable as score_fn(x, t), got {type(score_fn).__name__}")
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
        if out.device != x.device:
            raise ShapeError(
                f"score_fn(x, t) returned a tensor on {out.device} for x on {x.device}; "
                "move the score function (network) to the sampling device, or pass device= to match it"
            )
        if out.dtype != x.dtype:
            if not out.dtype.is_floating_point:
                raise ShapeError(f"score_fn(x, t) must return a floating-point tensor, got {out.dtype}")
            out = out.to(x.dtype)
        return out


@dataclass
class SampleResult:
    """What :func:`scoresde.solve` returns.

    Attributes:
        samples: the final samples, ``[B, *event]``.
        nfe: number of score evaluations (batched calls), the final denoising step included.
        times: the solver's time grid, ``[steps + 1]``, from ``T`` (or the start of a given grid) down to ``eps``.
        trajectory: states on ``times``, ``[steps + 1, B, *event]``, when recorded, else ``None``.
        log_prob: with ``return_log_prob=True`` (probability-flow ODE), each sample's model
            log-density ``log p_eps(samples)`` in nats, ``[B]``; else ``None``.
    """

    samples: Tensor
    nfe: int
    times: Tensor
    trajectory: Optional[Tensor] = None
    log_prob: Optional[Tensor] = None


@dataclass
class SolveContext:
    """Everything a step may need beyond the state: the SDE, the counted score and the noise source.

    ``return_log_prob`` asks a solver that supports it (``supports_log_prob``) to integrate the
    divergence along the trajectory and store ``log p_eps`` ``[B]`` in ``log_prob``.
    """

    sde: SDE
    score: CountedScore
    noise: Noise
    return_log_prob: bool = False
    log_prob: Optional[Tensor] = None

    @property
    def generator(self) -> Optional[torch.Generator]:
        """The generator behind the noise source, if it has one (prefer :meth:`randn_like`)."""
        return getattr(self.noise, "generator", None)

    def randn_like(self, x: Tensor) -> Tensor:
        """Standard normal noise shaped like ``x``: the only way a solver draws noise."""
        return self.noise.randn_like(x)


class Solver:
    """Anything :func:`scoresde.solve` can run. Subclasses implement :meth:`integrate`.

    Class attributes every solver declares:

    * ``name``: its key in :data:`scoresde.SOLVERS`;
    * ``stochastic``: whether it injects noise;
    * ``order``: weak order for stochastic solvers, global order for deterministic ones;
    * ``requires_kernel``: whether it needs the SDE's closed-form Gaussian kernel;
    * ``adaptive``: whether it chooses its own steps (then a grid only sets the output times);
    * ``default_steps``, ``default_eps`` and ``default_grid``: used when :func:`scoresde.solve` gets ``None``;
    * ``denoise_default``: whether the final Tweedie denoising step is on by default;
    * ``supports_log_prob``: whether it can return each sample's log-density (``return_log_prob``).
    """

    name: ClassVar[str] = ""
    stochastic: ClassVar[bool] = True
    order: float = 1.0
    requires_kernel: ClassVar[bool] = False
    adaptive: ClassVar[bool] = False
    default_steps: ClassVar[int] = 1000
    default_eps: ClassVar[float] = 1e-3
    default_grid: ClassVar[str] = "uniform"
    denoise_default: ClassVar[bool] = True
    supports_log_prob: ClassVar[bool] = False

    def check_sde(self, sde: SDE) -> None:
        """Raise :class:`IncompatibleSDEError` if this solver cannot serve ``sde``."""
        if not isinstance(sde, SDE):
            raise OptionError(f"sde must be a scoresde.SDE, got {type(sde).__name__}")
        if self.requires_kernel and not sde.has_kernel:
            raise IncompatibleSDEError(
                f"solver {self.name!r} needs an SDE with a closed-form Gaussian kernel (marginal_coeffs), "
                f"which {type(sde).__name__} does not provide; use 'euler_maruyama', 'ode' or 'torchsde' instead"
            )

    def steps_for(self, sde: SDE, shape: torch.Size, eps: float) -> int:
        """Number of steps when the caller gives none (``default_steps``; a solver may size it to the data)."""
        return self.default_steps

    def integrate(
        self, ctx: SolveContext, x: Tensor, grid: Tensor, record: bool, callback: Optional[Callback]
    ) -> Tuple[Tensor, Optional[List[Tensor]]]:
        """Run the reverse process from ``grid[0]`` to ``grid[-1]``.

        Args:
            x: the state at ``grid[0]``, ``[B, *event]``.
            grid: decreasing times ``[steps + 1]``.
            record: return the states on ``grid`` as a list too.
            callback: called as ``callback(i, grid[i + 1], x)`` after every step.

        Returns:
            ``(x, states)``: the state at ``grid[-1]`` and, if ``record``, the list of states on ``grid``.
        """
        raise NotImplementedError

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({fields})"


class StepSolver(Solver):
    """A solver defined by its update rule; the one step loop lives in :meth:`integrate`.

    Subclasses implement :meth:`step` and, if they carry memory across steps, :meth:`init`.
    """

    def init(self, ctx: SolveContext, x: Tensor, grid: Tensor) -> Any:
        """Per-solve state before the first step (``None`` for one-step methods).

        Args:
            x: the initial state ``[B, *event]``; grid: the decreasing times ``[steps + 1]``.
        """
        return None

    def step(self, ctx: SolveContext, x: Tensor, t: Tensor, t_next: Tensor, state: Any) -> Tuple[Tensor, Any]:
        """Advance ``x`` ``[B, *event]`` from times ``t`` to ``t_next < t`` (both ``[B]``).

        Returns the new state ``x`` and the updated per-solve ``state``.
        """
        raise NotImplementedError

    def integrate(
        self, ctx: SolveContext, x: Tensor, grid: Tensor, record: bool, callback: Optional[Callback]
    ) -> Tuple[Tensor, Optional[List[Tensor]]]:
        """The one step loop: ``init``, then ``step`` over ``grid``.

        Non-finite values are tracked on the device (no per-step synchronisation) and reported
        with the first offending step and time once the loop ends.
        """
        B = x.shape[0]
        state = self.init(ctx, x, grid)
        states = [x] if record else None
        finite = []  # one 0-d bool per step, kept on the device: no synchronisation inside the loop
        for i in range(grid.shape[0] - 1):
            t, t_next = grid[i].expand(B), grid[i + 1].expand(B)
            x, state = self.step(ctx, x, t, t_next, state)
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


class WrapperSolver(StepSolver):
    """A step solver around another (``inner``), forwarding what it is.

    ``order``, ``stochastic``, ``requires_kernel``, ``check_sde``, ``default_steps``,
    ``default_eps``, ``default_grid`` and ``denoise_default`` come from ``inner``; :meth:`init`
    returns the inner solver's state. Subclasses override :meth:`step` and call
    ``self.inner.step(ctx, x, t, t_next, state)`` where the wrapped update belongs.
    """

    #: What the wrapped solver is called in error messages (``"predictor"`` for predictor–corrector).
    inner_role: ClassVar[str] = "inner solver"

    def __init__(self, inner: StepSolver):
        if not isinstance(inner, StepSolver):
            raise OptionError(
                f"{type(self).__name__} wraps a step solver (one with init/step), got {inner!r}; "
                "adaptive and integrate-style solvers cannot be wrapped"
            )
        self.inner = inner

    @property
    def order(self) -> float:  # type: ignore[override]
        return self.inner.order

    @property
    def stochastic(self) -> bool:  # type: ignore[override]
        return self.inner.stochastic

    @property
    def requires_kernel(self) -> bool:  # type: ignore[override]
        return self.inner.requires_kernel

    @property
    def default_steps(self) -> int:  # type: ignore[override]
        return self.inner.default_steps

    @property
    def default_eps(self) -> float:  # type: ignore[override]
        return self.inner.default_eps

    @property
    def default_grid(self) -> str:  # type: ignore[override]
        return self.inner.default_grid

    @property
    def denoise_default(self) -> bool:  # type: ignore[override]
        return self.inner.denoise_default

    def steps_for(self, sde: SDE, shape: torch.Size, eps: float) -> int:
        return self.inner.steps_for(sde, shape, eps)

    def check_sde(self, sde: SDE) -> None:
        try:
            self.inner.check_sde(sde)
        except IncompatibleSDEError as e:
            raise IncompatibleSDEError(f"{self.name or type(self).__name__} {self.inner_role}: {e}") from None

    def init(self, ctx: SolveContext, x: Tensor, grid: Tensor) -> Any:
        return self.inner.init(ctx, x, grid)

    def step(self, ctx: SolveContext, x: Tensor, t: Tensor, t_next: Tensor, state: Any) -> Tuple[Tensor, Any]:
        return self.inner.step(ctx, x, t, t_next, state)


SolverLike = Union[str, Solver, type]
