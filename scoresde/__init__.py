"""scoresde: score-based generative modelling with stochastic differential equations.

Conventions: data at ``t = 0``, prior at ``t = T = 1``; ``x`` is ``[B, *event]`` and ``t`` is
``[B]``; a score function is any callable ``score_fn(x, t)`` returning a tensor shaped like ``x``.
"""

from . import errors, guidance, noise
from ._utils import append_dims
from ._version import __version__  # noqa: F401  (the package version)
from .errors import (
    DataError,
    DistributedError,
    IncompatibleSDEError,
    IntegrationError,
    LabelError,
    MaskError,
    NonFiniteError,
    OptionError,
    OutputError,
    ResourceLimitError,
    RunLockedError,
    ScoreSDEError,
    ShapeError,
    TimeRangeError,
    UnknownSolverError,
)
from .inpainting import inpaint
from .likelihood import BitsPerDimResult, LikelihoodResult, bits_per_dim, log_likelihood
from .noise import GeneratorNoise, Noise, SeededNoise
from .score import NetworkScore, as_score_fn, tweedie_denoise
from .sde import SDE, VESDE, VPSDE, ReverseSDE, SubVPSDE
from .smc import SMCResult, smc_inpaint
from .solvers import GRIDS, SOLVERS, CountedScore, SampleResult, Solver, StepSolver, WrapperSolver, sample, solve

__all__ = [
    "append_dims",
    "SDE", "ReverseSDE", "VPSDE", "SubVPSDE", "VESDE",
    "NetworkScore", "as_score_fn", "tweedie_denoise",
    "SOLVERS", "GRIDS", "Solver", "StepSolver", "WrapperSolver", "SampleResult", "CountedScore", "sample", "solve",
    "errors", "noise", "ScoreSDEError", "ShapeError", "TimeRangeError", "UnknownSolverError",
    "IncompatibleSDEError", "NonFiniteError", "IntegrationError", "DataError", "OptionError",
    "ResourceLimitError", "RunLockedError", "OutputError", "DistributedError",
    "LikelihoodResult", "BitsPerDimResult", "log_likelihood", "bits_per_dim",
    "Noise", "GeneratorNoise", "SeededNoise",
    "guidance", "inpaint", "smc_inpaint", "SMCResult", "LabelError", "MaskError",
]
