"""SDE objects: the abstract :class:`SDE` and the VP, sub-VP and VE SDEs of Song et al. (2021)."""

from .base import SDE, ReverseSDE, ScoreFn
from .ve import VESDE
from .vp import VPSDE, SubVPSDE

__all__ = ["SDE", "ReverseSDE", "ScoreFn", "VPSDE", "SubVPSDE", "VESDE"]
