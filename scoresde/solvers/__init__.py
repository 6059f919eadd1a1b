"""Samplers. :data:`SOLVERS` maps each public name to its solver class."""

from typing import Dict, Type

from .base import CountedScore, SampleResult, SolveContext, Solver, sample, solve
from .langevin import AnnealedLangevin, Langevin, PredictorCorrector, langevin_correct
from .ode import DDIM, ProbabilityFlowODE
from .predictors import Ancestral, EulerMaruyama, ReverseDiffusion
from .torchsde_solver import TorchSDE

#: Public name -> solver class. Pass a name (with options as keyword arguments) or an instance
#: of any :class:`Solver` subclass, your own included, to :func:`scoresde.sample`.
SOLVERS: Dict[str, Type[Solver]] = {
    "euler_maruyama": EulerMaruyama,
    "reverse_diffusion": ReverseDiffusion,
    "ancestral": Ancestral,
    "langevin": Langevin,
    "pc": PredictorCorrector,
    "annealed_langevin": AnnealedLangevin,
    "ode": ProbabilityFlowODE,
    "ddim": DDIM,
    "torchsde": TorchSDE,
}

__all__ = [
    "SOLVERS", "Solver", "SolveContext", "SampleResult", "CountedScore", "sample", "solve",
    "EulerMaruyama", "ReverseDiffusion", "Ancestral", "Langevin", "PredictorCorrector",
    "AnnealedLangevin", "ProbabilityFlowODE", "DDIM", "TorchSDE", "langevin_correct",
]
