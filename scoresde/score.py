"""The score-function interface and the wrapper that turns networks into score functions.

A score function is any callable ``score_fn(x, t) -> Tensor`` with ``x`` of shape ``[B, *event]``,
``t`` of shape ``[B]`` and an output shaped like ``x``: an estimate of ``grad_x log p_t(x)``.
Exact scores (for Gaussian or mixture data) and trained networks plug into every sampler alike.
"""

from __future__ import annotations

from typing import Literal, Optional

from torch import Tensor, nn

from ._utils import append_dims
from ._validation import boolean, choice
from .errors import IncompatibleSDEError, LabelError, OptionError
from .sde.base import SDE, ScoreFn

Parameterization = Literal["eps", "score", "x0"]
PARAMETERIZATIONS = ("eps", "score", "x0")


class NetworkScore(nn.Module):
    """Wrap a network ``net(x, t)`` so that it is called as a score function.

    Args:
        net: a module called as ``net(x, t)`` with ``x`` ``[B, *event]`` and ``t`` ``[B]``,
            returning a tensor shaped like ``x``.
        sde: the SDE whose kernel ``x_t = scale(t) x_0 + std(t) eps`` relates the parameterizations.
        parameterization: what ``net`` predicts:

            * ``"eps"``: the noise ``eps``; score ``= -eps / std(t)`` (DDPM).
            * ``"score"``: the score itself (NCSN); with ``scale_by_std=True`` the output is
              divided by ``std(t)`` first (the output scaling of NCSN++).
            * ``"x0"``: the clean data; score ``= (scale(t) x0 - x) / std(t)^2``.
        scale_by_std: only for ``"score"``: divide the raw output by ``std(t)``.

    Calling the wrapper returns the score, shaped like ``x``. ``raw(x, t)`` returns the network's
    own output and :meth:`eps` converts it to a noise prediction (what the DSM losses use).

    A class-conditional network (built with ``num_classes=K``) makes this a conditional score
    function ``score(x, t, y)``: ``y`` ``[B]`` integer labels in ``[0, K)``, ``-1`` entries or ``None``
    for the unconditional score (see :mod:`scoresde.guidance`). ``num_classes`` is ``K`` (``None`` for a
    network without classes).
    """

    def __init__(self, net: nn.Module, sde: SDE, parameterization: Parameterization = "eps", scale_by_std: bool = False):
        super().__init__()
        if not callable(net):
            raise OptionError(f"net must be a module called as net(x, t), got {type(net).__name__}")
        if not isinstance(sde, SDE):
            raise OptionError(f"sde must be a scoresde.SDE, got {type(sde).__name__}")
        choice(parameterization, "parameterization", PARAMETERIZATIONS)
        scale_by_std = boolean(scale_by_std, "scale_by_std")
        if parameterization != "score" and scale_by_std:
            raise OptionError("scale_by_std applies only to parameterization='score'")
        if not sde.has_kernel:
            raise IncompatibleSDEError(
                f"{type(sde).__name__} has no closed-form Gaussian kernel, which converting network outputs to scores needs"
            )
        self.net = net
        self.sde = sde
        self.parameterization = parameterization
        self.scale_by_std = scale_by_std

    @property
    def num_classes(self) -> Optional[int]:
        """``K`` of a class-conditional network, else ``None``."""
        net = self.net
        while not hasattr(net, "num_classes") and hasattr(net, "module"):  # DDP / compiled wrappers
            net = net.module
        k = getattr(net, "num_classes", None)
        if k is None and hasattr(self.net, "_orig_mod"):
            k = getattr(self.net._orig_mod, "num_classes", None)
        return None if k is None else int(k)

    @property
    def is_conditional(self) -> bool:
        """Whether the network takes class labels."""
        return self.num_classes is not None

    @property
    def accepts_null_label(self) -> bool:
        """Whether ``y`` may mix labels and ``-1`` (unconditional) entries in one batch."""
        return self.is_conditional

    def _call(self, x: Tensor, t: Tensor, y: Optional[Tensor]) -> Tensor:
        if y is None:
            return self.net(x, t)
        if not self.is_conditional:
            raise LabelError("a class label y was given but the network has no classes; train it with num_classes=K (--conditional)")
        return self.net(x, t, y)

    def raw(self, x: Tensor, t: Tensor, y: Optional[Tensor] = None) -> Tensor:
        """The network's own output ``net(x, t[, y])``, shaped like ``x``."""
        return self._call(x, t, y)

    def forward(self, x: Tensor, t: Tensor, y: Optional[Tensor] = None) -> Tensor:
        """Score ``grad_x log p_t(x [| y])``: ``x`` ``[B, *event]``, ``t`` ``[B]``, ``y`` ``[B]`` or ``None`` -> like ``x``."""
        out = self._call(x, t, y)
        t = t.to(x.dtype)
        if self.parameterization == "eps":
            return eps_to_score(self.sde, out, t)
        if self.parameterization == "x0":
            return x0_to_score(self.sde, x, out, t)
        if self.scale_by_std:
            return out / append_dims(self.sde.marginal_coeffs(t)[1], x.ndim).to(out.dtype)
        return out

    def eps(self, x: Tensor, t: Tensor, y: Optional[Tensor] = None) -> Tensor:
        """Noise prediction ``eps = -std(t) score``, shaped like ``x``."""
        if self.parameterization == "eps":
            return self._call(x, t, y)
        return score_to_eps(self.sde, self.forward(x, t, y), t.to(x.dtype))


def as_score_fn(
    net: nn.Module, sde: SDE, parameterization: Parameterization = "eps", scale_by_std: bool = False
) -> NetworkScore:
    """Shorthand for :class:`NetworkScore` (``net`` predicts noise, score or ``x0``)."""
    return NetworkScore(net, sde, parameterization, scale_by_std)


# ---------------------------------------------------------------------------- conversions
# With the kernel x_t = scale(t) x_0 + std(t) eps, the score, the noise prediction, the data
# prediction x_0 (Tweedie's posterior mean, EDM's denoiser D(x / scale; std / scale)) are one
# quantity written four ways. These are the only places the conversions are written.
# Shapes: x, score, eps, x0 are [B, *event]; t is [B].


def score_to_eps(sde: SDE, score: Tensor, t: Tensor) -> Tensor:
    """Noise prediction ``eps = -std(t) score``."""
    return -append_dims(sde.marginal_coeffs(t)[1], score.ndim).to(score.dtype) * score


def eps_to_score(sde: SDE, eps: Tensor, t: Tensor) -> Tensor:
    """Score ``-eps / std(t)`` from a noise prediction."""
    return -eps / append_dims(sde.marginal_coeffs(t)[1], eps.ndim).to(eps.dtype)


def eps_to_x0(sde: SDE, x: Tensor, eps: Tensor, t: Tensor) -> Tensor:
    """Data prediction ``x0 = (x - std(t) eps) / scale(t)`` from a noise prediction."""
    scale, std = sde.marginal_coeffs(t)
    return (x - append_dims(std, x.ndim) * eps) / append_dims(scale, x.ndim)


def score_to_x0(sde: SDE, x: Tensor, score: Tensor, t: Tensor) -> Tensor:
    """Data prediction (Tweedie) ``x0 = (x + std(t)^2 score) / scale(t)``."""
    scale, std = sde.marginal_coeffs(t)
    return (x + append_dims(std * std, x.ndim) * score) / append_dims(scale, x.ndim)


def x0_to_score(sde: SDE, x: Tensor, x0: Tensor, t: Tensor) -> Tensor:
    """Score ``(scale(t) x0 - x) / std(t)^2`` from a data prediction."""
    scale, std = sde.marginal_coeffs(t)
    return (append_dims(scale, x.ndim).to(x0.dtype) * x0 - x) / append_dims(std * std, x.ndim).to(x0.dtype)


def tweedie_denoise(sde: SDE, score_fn: ScoreFn, x: Tensor, t: Tensor) -> Tensor:
    """Tweedie's posterior mean ``E[x_0 | x_t] = (x + std(t)^2 score(x, t)) / scale(t)``.

    Args:
        x: noisy samples ``[B, *event]`` at times ``t`` ``[B]``.

    Returns:
        The denoised estimate, shaped like ``x``.
    """
    return score_to_x0(sde, x, score_fn(x, t), t)
