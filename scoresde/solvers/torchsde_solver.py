"""The reverse-time SDE integrated by torchsde's ``sdeint`` and its Itô methods."""

from __future__ import annotations

from typing import List, Optional, Sequence, Union

import torch
import torchsde
from torch import Tensor, nn

from .._validation import choice
from ..errors import NonFiniteError
from ..sde.base import reverse_drift
from .base import Callback, SolveContext, Solver
from .registry import register

#: Itô methods of torchsde usable with diagonal noise, with their weak orders.
TORCHSDE_METHODS = {"euler": 1.0, "milstein": 1.0, "srk": 1.0}


class _ReverseInForwardTime(nn.Module):
    """The reverse SDE in the increasing time ``s = T - t`` that torchsde expects.

    ``dx = -[f(x, T - s) - g^2 score(x, T - s)] ds + g(T - s) dw``; the state is flattened to ``[B, D]``.
    """

    noise_type = "diagonal"
    sde_type = "ito"

    def __init__(self, ctx: SolveContext, event_shape: torch.Size):
        super().__init__()
        self.ctx = ctx
        self.event_shape = event_shape
        self.T = ctx.sde.T

    def f(self, s: Tensor, y: Tensor) -> Tensor:
        x = y.reshape(y.shape[0], *self.event_shape)
        t = (self.T - s).expand(y.shape[0]).to(y.dtype)
        return -reverse_drift(self.ctx.sde, x, t, self.ctx.score(x, t)).reshape(y.shape)

    def g(self, s: Tensor, y: Tensor) -> Tensor:
        t = (self.T - s).expand(y.shape[0]).to(y.dtype)
        return self.ctx.sde.diffusion(t)[:, None].expand_as(y)


class PerSampleBrownian(torchsde.BaseBrownian):
    """One ``torchsde.BrownianInterval`` per sample, each seeded by its own integer: a batch-invariant Brownian motion.

    torchsde's ``BrownianInterval`` draws the whole batch from one seed, so sample ``i``'s path would
    depend on the batch size. Here sample ``i`` has its own interval of shape ``[1, D]`` seeded by
    ``seeds[i]``; a query asks every interval and stacks the answers (``B`` small queries per step:
    negligible next to a network evaluation, noticeable with a cheap closed-form score).

    Args:
        seeds: one non-negative integer per sample, ``[B]``.
        t0, t1, size, dtype, device, levy_area_approximation: as for ``torchsde.BrownianInterval``
            (``size`` is ``(B, D)``).
    """

    def __init__(self, seeds: Tensor, t0: float, t1: float, size: Sequence[int], dtype: torch.dtype,
                 device: Union[str, torch.device], levy_area_approximation: str = "none"):
        B, D = size
        self._paths = [
            torchsde.BrownianInterval(t0=t0, t1=t1, size=(1, D), dtype=dtype, device=device, entropy=int(s),
                                      levy_area_approximation=levy_area_approximation)
            for s in seeds.tolist()
        ]
        self._shape, self._dtype, self._device, self._levy = torch.Size((B, D)), dtype, torch.device(device), levy_area_approximation

    def __call__(self, ta, tb=None, return_U=False, return_A=False):
        parts = [p(ta, tb, return_U=return_U, return_A=return_A) for p in self._paths]
        if isinstance(parts[0], tuple):
            return tuple(torch.cat([q[j] for q in parts]) for j in range(len(parts[0])))
        return torch.cat(parts)

    def __repr__(self) -> str:
        return f"PerSampleBrownian(batch={self._shape[0]}, dim={self._shape[1]})"

    @property
    def dtype(self):
        return self._dtype

    @property
    def device(self):
        return self._device

    @property
    def shape(self):
        return self._shape

    @property
    def levy_area_approximation(self):
        return self._levy


@register
class TorchSDE(Solver):
    """Reverse-time SDE through ``torchsde.sdeint`` on a fixed grid of ``steps`` steps.

    Args:
        method: a torchsde Itô method for diagonal noise: ``"euler"`` (default), ``"milstein"``
            or ``"srk"``.

    The Brownian motion is a ``torchsde.BrownianInterval`` seeded from the generator, so the
    same generator seed gives the same samples. With per-sample seeds (``solve(..., seeds=...)``)
    each sample gets its own interval (:class:`PerSampleBrownian`), so its path does not depend on
    the batch.
    """

    name = "torchsde"
    stochastic = True
    default_steps = 1000

    def __init__(self, method: str = "euler"):
        self.method = choice(method, "torchsde method", list(TORCHSDE_METHODS))

    @property
    def order(self) -> float:  # type: ignore[override]
        return TORCHSDE_METHODS[self.method]

    def integrate(
        self, ctx: SolveContext, x: Tensor, grid: Tensor, record: bool, callback: Optional[Callback]
    ) -> "tuple[Tensor, Optional[List[Tensor]]]":
        B, event = x.shape[0], x.shape[1:]
        T = ctx.sde.T
        s_grid = T - grid.double()  # increasing from 0 to T - eps; float64 keeps torchsde's step count exact
        y0 = x.reshape(B, -1)
        levy = "space-time" if self.method == "srk" else "none"
        if ctx.noise.batch_invariant:  # per-sample seeds: one Brownian path per sample
            bm = PerSampleBrownian(ctx.noise.sample_seeds(), float(s_grid[0]), float(s_grid[-1]), y0.shape, y0.dtype,
                                   y0.device, levy)
        else:
            bm = torchsde.BrownianInterval(
                t0=float(s_grid[0]),
                t1=float(s_grid[-1]),
                size=y0.shape,
                dtype=y0.dtype,
                device=y0.device,
                entropy=ctx.noise.seed(),
                levy_area_approximation=levy,
            )
        sde = _ReverseInForwardTime(ctx, event)
        options = {"grad_free": True} if self.method == "milstein" else None
        ds = s_grid.diff()
        if bool((ds - ds.mean()).abs().max() <= 64 * torch.finfo(grid.dtype).eps * T):  # uniform: one call
            # A hair above the grid spacing, so that rounding never adds a sliver of a step at the end
            # (torchsde shortens its last step to land on the final time).
            dt = float(s_grid[-1] - s_grid[0]) / (grid.shape[0] - 1) * (1 + 1e-9)
            s_eval = s_grid if (record or callback is not None) else s_grid[[0, -1]]
            ys = torchsde.sdeint(sde, y0, s_eval, bm=bm, method=self.method, dt=dt, options=options)
        else:  # any other grid: one step per interval, on one Brownian path
            ys_list = [y0]
            for i in range(grid.shape[0] - 1):
                dt = float(ds[i]) * (1 + 1e-9)
                ys_list.append(torchsde.sdeint(sde, ys_list[-1], s_grid[i:i + 2], bm=bm, method=self.method, dt=dt,
                                               options=options)[-1])
            ys = torch.stack(ys_list if (record or callback is not None) else [ys_list[0], ys_list[-1]])
        ys = ys.reshape(ys.shape[0], B, *event)
        self._check_finite(ys, grid if ys.shape[0] == grid.shape[0] else grid[[0, -1]])
        if callback is not None:
            for i in range(1, ys.shape[0]):
                callback(i - 1, grid[i], ys[i])
        return ys[-1], (list(ys) if record else None)

    def _check_finite(self, ys: Tensor, times: Tensor) -> None:
        finite = torch.isfinite(ys.reshape(ys.shape[0], -1)).all(dim=1)
        if not bool(finite.all()):
            i = int((~finite).nonzero()[0])
            raise NonFiniteError(
                f"solver 'torchsde' ({self.method}): non-finite values by t = {float(times[i]):.6g}; "
                "check the score function or use more steps"
            )
