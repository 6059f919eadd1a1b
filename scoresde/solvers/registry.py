"""The public table of samplers: :data:`SOLVERS` maps each name to its solver class."""

from __future__ import annotations

from typing import Dict, Type

from .base import Solver
from .dpmpp import DPMSolverPP2M, DPMSolverPP2MSDE, DPMSolverPP3M, DPMSolverPP3MSDE
from .edm import EDM
from .ipndm import IPNDM
from .langevin import AnnealedLangevin, Langevin, PredictorCorrector
from .ode import DDIM, ProbabilityFlowODE
from .predictors import Ancestral, EulerMaruyama, ReverseDiffusion
from .torchsde_solver import TorchSDE
from .unipc import UniPC

#: Public name -> solver class. Pass a name (with options as keyword arguments) or an instance
#: of any :class:`~scoresde.solvers.base.Solver` subclass, your own included, to :func:`scoresde.sample`.
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
    "dpmpp_2m": DPMSolverPP2M,
    "dpmpp_3m": DPMSolverPP3M,
    "dpmpp_2m_sde": DPMSolverPP2MSDE,
    "dpmpp_3m_sde": DPMSolverPP3MSDE,
    "unipc": UniPC,
    "ipndm": IPNDM,
    "edm": EDM,
}
