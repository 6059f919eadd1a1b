"""SDE objects: the abstract :class:`SDE` and the VP, sub-VP and VE SDEs of Song et al. (2021)."""

from .base import SDE, ReverseSDE, ScoreFn, reverse_drift
from .discrete import DiscreteVPSDE
from .ve import VESDE
from .vp import VPSDE, SubVPSDE

__all__ = ["SDE", "ReverseSDE", "ScoreFn", "reverse_drift", "VPSDE", "SubVPSDE", "VESDE", "DiscreteVPSDE"]
