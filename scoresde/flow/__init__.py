"""The probability-flow engine: one velocity-and-divergence object and one integrate entry.

* :class:`ProbabilityFlow` (:mod:`~scoresde.flow.velocity`): ``v = f - 1/2 g^2 s`` and its divergence
  (exact or Hutchinson), with one non-finite monitor over the velocity and the divergence.
* :func:`integrate_flow` (:mod:`~scoresde.flow.integrate`): shared steps through torchdiffeq
  (:mod:`~scoresde.flow.odeint`, the one adapter) or per-sample steps (:mod:`~scoresde.flow.dopri`, a
  Dormand–Prince written as tableau, controller and loop), in ``t`` or in the log noise level
  (:mod:`~scoresde.flow.timevar`).

:func:`scoresde.log_likelihood`, :func:`scoresde.bits_per_dim`, the ``ode`` sampler and its
``return_log_prob`` all run on it.
"""

from .dopri import DOPRI5, PerSampleResult, StepController, Tableau, odeint_per_sample
from .integrate import STEP_CONTROLS, FlowSolution, check_step_control, integrate_flow
from .odeint import ADAPTIVE_METHODS, DEFAULT_MAX_STEPS, FIXED_METHODS, check_method, odeint_checked
from .timevar import TIME_VARIABLES, LogNoiseLevel, check_time_variable
from .velocity import PROBES, TRACES, Divergence, NonFiniteMonitor, ProbabilityFlow, make_divergence

__all__ = [
    "ProbabilityFlow", "Divergence", "NonFiniteMonitor", "make_divergence", "TRACES", "PROBES",
    "integrate_flow", "FlowSolution", "STEP_CONTROLS", "check_step_control",
    "odeint_per_sample", "PerSampleResult", "Tableau", "DOPRI5", "StepController",
    "odeint_checked", "check_method", "ADAPTIVE_METHODS", "FIXED_METHODS", "DEFAULT_MAX_STEPS",
    "LogNoiseLevel", "TIME_VARIABLES", "check_time_variable",
]
