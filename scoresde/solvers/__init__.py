"""Samplers. :data:`SOLVERS` maps each public name to its solver class, :data:`GRIDS` each grid name to its class."""

# Every solver module is imported here: each registers its classes in SOLVERS (registry.register).
from .base import CountedScore, SampleResult, SolveContext, Solver, StepSolver, WrapperSolver
from .dpmpp import DPMSolverPP, DPMSolverPP2M, DPMSolverPP2MSDE, DPMSolverPP3M, DPMSolverPP3MSDE
from .driver import make_grid, make_solver, sample, solve
from .edm import EDM
from .grids import GRIDS, Karras, LogSNR, Quadratic, TimeGrid, Uniform
from .ipndm import IPNDM
from .langevin import AnnealedLangevin, Langevin, PredictorCorrector, langevin_correct
from .ode import DDIM, ProbabilityFlowODE
from .predictors import Ancestral, EulerMaruyama, ReverseDiffusion
from .registry import SOLVERS, register
from .torchsde_solver import TorchSDE
from .unipc import UniPC

__all__ = [
    "SOLVERS", "register", "GRIDS", "Solver", "StepSolver", "WrapperSolver", "SolveContext", "SampleResult", "CountedScore",
    "sample", "solve", "make_solver", "make_grid",
    "TimeGrid", "Uniform", "Quadratic", "LogSNR", "Karras",
    "EulerMaruyama", "ReverseDiffusion", "Ancestral", "Langevin", "PredictorCorrector",
    "AnnealedLangevin", "ProbabilityFlowODE", "DDIM", "TorchSDE", "langevin_correct",
    "DPMSolverPP", "DPMSolverPP2M", "DPMSolverPP3M", "DPMSolverPP2MSDE", "DPMSolverPP3MSDE", "UniPC", "IPNDM", "EDM",
]
