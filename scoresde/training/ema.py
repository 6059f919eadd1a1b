"""Exponential moving average of a network's weights (used for sampling and evaluation)."""

from __future__ import annotations

import copy
from typing import Any, Dict

import torch
from torch import nn

from ..errors import CheckpointError, OptionError


class EMA:
    """A frozen copy of ``net`` whose parameters track an exponential moving average.

    After each optimizer step, :meth:`update` applies ``theta_ema <- d theta_ema + (1 - d) theta``
    with ``d = min(decay, (1 + n) / (10 + n))`` after ``n`` updates: the warm-up of the decay keeps
    the average from being dominated by the random initialisation in short runs. Buffers (e.g.
    normalisation statistics) are copied, not averaged.

    Args:
        net: the trained network (not wrapped in DDP or ``torch.compile``).
        decay: the asymptotic decay ``d`` in ``[0, 1)``.

    Attributes:
        module: the averaged network, in eval mode, without gradients.
        num_updates: how many times :meth:`update` ran.
    """

    def __init__(self, net: nn.Module, decay: float = 0.999):
        if not 0.0 <= decay < 1.0:
            raise OptionError(f"EMA decay must lie in [0, 1), got {decay}")
        self.decay = float(decay)
        self.module = copy.deepcopy(net).eval().requires_grad_(False)
        self.num_updates = 0
        self._params = list(self.module.parameters())
        self._buffers = list(self.module.buffers())

    def current_decay(self) -> float:
        """The decay the next :meth:`update` will use."""
        n = self.num_updates
        return min(self.decay, (1.0 + n) / (10.0 + n))

    @torch.no_grad()
    def update(self, net: nn.Module) -> None:
        """Move the average towards ``net``'s current weights."""
        d = self.current_decay()
        params = [p.detach() for p in net.parameters()]
        if len(self._params) != len(params):
            raise OptionError("EMA.update got a network with a different parameter list")
        if params:
            # theta_ema <- theta_ema + (1 - d) (theta - theta_ema)
            torch._foreach_lerp_(self._params, params, 1.0 - d)
        for b_ema, b in zip(self._buffers, net.buffers()):
            b_ema.copy_(b)
        self.num_updates += 1

    def state_dict(self) -> Dict[str, Any]:
        """``{"decay", "num_updates", "state"}`` with ``state`` the averaged module's state dict."""
        return {"decay": self.decay, "num_updates": self.num_updates, "state": self.module.state_dict()}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (the decay stays as constructed)."""
        try:
            self.module.load_state_dict(state["state"])
            self.num_updates = int(state["num_updates"])
        except (KeyError, RuntimeError, TypeError) as e:
            raise CheckpointError(f"the checkpoint's EMA weights do not fit the network: {e}") from None
