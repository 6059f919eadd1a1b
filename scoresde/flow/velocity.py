"""The probability-flow velocity and its divergence, with one non-finite monitor.

For a forward SDE ``dx = f(x, t) dt + g(t) dw`` and a score ``s(x, t)`` the probability-flow ODE is

    dx/dt = v(x, t) = f(x, t) - 1/2 g(t)^2 s(x, t),

and along any of its trajectories ``d/dt log p_t(x(t)) = -div_x v(x(t), t)`` (Chen et al. 2018; Song et
al. 2021). :class:`ProbabilityFlow` evaluates ``v`` and, when asked, ``div_x v``: exactly (one
vector-Jacobian product per dimension, batched in chunks) or by the Hutchinson–Skilling estimate
``e^T (dv/dx) e`` with probes ``E[e e^T] = I``. Every evaluation costs one forward pass of the score and
one batched VJP. A score that cannot be differentiated in ``x`` is refused (its divergence would
silently be zero), and a non-finite velocity or divergence is recorded on the device, without a
synchronisation, and reported once the integration ends.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Tuple

import torch
from torch import Tensor

from .._utils import batch_sum, check_memory, event_numel
from ..errors import NonFiniteError, OptionError
from ..sde.base import SDE, ScoreFn, reverse_drift

__all__ = ["TRACES", "PROBES", "ProbabilityFlow", "Divergence", "DifferentiabilityCheck", "NonFiniteMonitor"]

#: Ways of computing the divergence of the probability-flow velocity.
TRACES = ("exact", "hutchinson")
#: Distributions of the Hutchinson–Skilling probes.
PROBES = ("rademacher", "gaussian")

#: Default bound on the number of cotangent entries per batched VJP of the exact trace.
EXACT_CHUNK_ELEMENTS = 2**22
_OUT_OF_MEMORY = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


class Divergence:
    """``div_x v`` from the graph of ``v = v(x)``: exact (basis-vector VJPs) or Hutchinson probes.

    Calls return ``[n, b]``: ``n = 1`` for the exact trace, ``n = n_probes`` for Hutchinson. Cotangents are
    pushed through one batched backward pass (``is_grads_batched``) when ``vectorize``; a score whose
    backward cannot be vectorised falls back to a loop over the cotangents. ``vectorize=False`` (one plain
    backward per cotangent) keeps results bitwise independent of the batch.

    Args:
        trace: ``"exact"`` or ``"hutchinson"``.
        probes: the Hutchinson probes ``[n, B, *event]`` (``None`` for the exact trace).
        chunk_size: dimensions per batched VJP of the exact trace.
    """

    def __init__(self, trace: str, probes: Optional[Tensor], chunk_size: int = 1, vectorize: bool = True):
        self.trace = trace
        self.probes = probes
        self.chunk_size = chunk_size
        self.vectorize = vectorize
        self._cotangents: dict = {}

    @property
    def n(self) -> int:
        """Rows of the result: the number of probes (1 for the exact trace)."""
        return 1 if self.probes is None else self.probes.shape[0]

    def __call__(self, v: Tensor, x: Tensor, index: Optional[Tensor] = None) -> Tensor:
        """The divergence ``[n, b]`` of ``v`` ``[b, *event]`` with respect to ``x`` (``index``: the samples' rows of the probes)."""
        if self.trace == "hutchinson":
            e = self.probes if index is None else self.probes.index_select(1, index)
            if not v.requires_grad:  # v does not depend on x
                return v.new_zeros(e.shape[0], x.shape[0])
            eJ = self._vjp(v, x, e, retain_last=False)  # e^T J for every probe, then a dot product with e
            return batch_sum((eJ * e).reshape(e.shape[0] * x.shape[0], *e.shape[2:])).reshape(e.shape[0], x.shape[0])
        return self._exact(v, x)

    def _exact(self, v: Tensor, x: Tensor) -> Tensor:
        """``sum_i e_i^T J e_i`` over basis vectors ``e_i``, in chunks of ``chunk_size`` dimensions: ``[1, b]``."""
        B, D = x.shape[0], event_numel(x)
        div = v.new_zeros(B)
        if not v.requires_grad:
            return div.unsqueeze(0)
        cache = B * D * D <= EXACT_CHUNK_ELEMENTS  # keep the basis cotangents across evaluations if small
        for i0 in range(0, D, self.chunk_size):
            i1 = min(D, i0 + self.chunk_size)
            idx = torch.arange(i1 - i0, device=x.device)
            cot = self._cotangents.get((i0, B)) if cache else None
            if cot is None:  # e_i for i in [i0, i1), repeated over the batch: [i1 - i0, B, *event]
                cot = v.new_zeros(i1 - i0, B, D)
                cot[idx, :, i0 + idx] = 1
                cot = cot.reshape(i1 - i0, *x.shape)
                if cache:
                    self._cotangents[(i0, B)] = cot
            eJ = self._vjp(v, x, cot, retain_last=i1 < D).reshape(i1 - i0, B, D)
            div = div + eJ[idx, :, i0 + idx].sum(0)  # J_ii for i in the chunk
        return div.unsqueeze(0)

    def _vjp(self, v: Tensor, x: Tensor, cot: Tensor, retain_last: bool) -> Tensor:
        """``cot[k]^T dv/dx`` for every ``k``: ``cot`` ``[n, B, *event]`` -> ``[n, B, *event]``."""
        n = cot.shape[0]
        if n == 1:
            g = torch.autograd.grad(v, x, cot[0], retain_graph=retain_last, allow_unused=True)[0]
            return (torch.zeros_like(x) if g is None else g).unsqueeze(0)
        if self.vectorize:
            try:
                # retain_graph: keep the graph usable by the loop below should vectorising fail
                g = torch.autograd.grad(v, x, cot, retain_graph=True, is_grads_batched=True, allow_unused=True)[0]
                return torch.zeros_like(cot) if g is None else g
            except _OUT_OF_MEMORY:
                raise
            except RuntimeError:  # an op without a batching rule (e.g. .item() in a backward): loop from now on
                self.vectorize = False
        out = []
        for k in range(n):
            g = torch.autograd.grad(v, x, cot[k], retain_graph=retain_last or k < n - 1, allow_unused=True)[0]
            out.append(torch.zeros_like(x) if g is None else g)
        return torch.stack(out)


class NonFiniteMonitor:
    """Records, on the device and without synchronising, the first time (in call order) with a non-finite
    velocity or divergence; :meth:`raise_if_bad` reports it once the integration has ended.

    A sum is NaN or infinite when any of its terms is (a finite sum that overflows is reported too, which
    only matters once the integration has already failed).
    """

    def __init__(self, like: Tensor, what: str, quantity: str = "velocity or divergence"):
        self.what, self.quantity = what, quantity
        self.first_bad_t = torch.full((), float("nan"), device=like.device, dtype=torch.float64)

    def update(self, t: Tensor, v: Tensor, div: Optional[Tensor]) -> None:
        """Note ``t`` (a 0-d time) if ``v`` or ``div`` holds NaN or infinity and nothing was noted before.

        An evaluation at a NaN time (an adaptive solver's step that already underflowed) is not noted: the
        solver's own error reports it.
        """
        total = v.sum() if div is None else v.sum() + div.sum()
        bad = ~torch.isfinite(total) & torch.isnan(self.first_bad_t) & ~torch.isnan(t)
        self.first_bad_t = torch.where(bad, t.detach().to(self.first_bad_t), self.first_bad_t)

    def raise_if_bad(self) -> None:
        """Raise :class:`~scoresde.errors.NonFiniteError` naming the first bad time, if there was one."""
        if not bool(torch.isnan(self.first_bad_t)):
            raise NonFiniteError(
                f"{self.what}: non-finite {self.quantity} at t = {float(self.first_bad_t):.6g}; "
                "check the score function for NaN/inf or raise eps"
            )


class DifferentiabilityCheck:
    """Wraps the score and, on its first call with ``x`` requiring grad, checks that it is differentiable in ``x``.

    The divergence is computed by autograd through the score. A score computed under ``torch.no_grad()``,
    ``torch.inference_mode()``, detached or through NumPy returns a tensor without a graph, and its
    divergence would silently come out as zero. The rule: if the output does not require grad while ``x``
    does, the score is evaluated once more at a perturbed ``x``; if the output changes, the score depends
    on ``x`` without being differentiable and :class:`~scoresde.errors.OptionError` is raised. If it does
    not change, the score is constant in ``x`` (its divergence really is zero) and is accepted.
    """

    def __init__(self, score: Callable[[Tensor, Tensor], Tensor]):
        self.score = score
        self.checked = False

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        s = self.score(x, t)
        if self.checked or not x.requires_grad:
            return s
        self.checked = True
        if isinstance(s, Tensor) and s.requires_grad and not s.is_inference():
            return s
        with torch.no_grad():
            x_other = x.detach() + 1e-2 * (1.0 + x.detach().abs())
            s_other = self.score(x_other, t)
        if isinstance(s, Tensor) and isinstance(s_other, Tensor) and s.shape == s_other.shape and torch.equal(s.detach(), s_other):
            return s  # constant in x: its divergence is zero and autograd agrees
        raise OptionError(
            "score_fn(x, t) is not differentiable in x (it returned a tensor without an autograd graph, as under "
            "torch.no_grad(), torch.inference_mode(), .detach() or a NumPy round trip) although its value depends on x: "
            "the log-density needs the divergence of the score, which autograd cannot compute then. Call the network "
            "with gradients enabled inside score_fn; its parameters may stay requires_grad=False"
        )


class ProbabilityFlow:
    """The velocity ``v = f - 1/2 g^2 s`` of the probability-flow ODE and, optionally, its divergence.

    Args:
        sde: the forward SDE.
        score_fn: ``score_fn(x, t)``; ``x`` ``[b, *event]``, ``t`` ``[b]``.
        divergence: a :class:`Divergence` (``None``: the velocity only).
        score_dtype: run the score in this dtype (``x`` and ``t`` cast to it, its output cast back).
        what: how errors name the computation (``"likelihood ODE (dopri5)"``).

    Calling it as ``flow(x, t, index)`` (``x`` ``[b, *event]``, ``t`` ``[b]``, ``index`` ``[b]`` the samples'
    positions in the batch, for their probes; ``report_t`` the 0-d time to report a non-finite value at) returns ``(v, div)``: ``v`` like ``x`` and ``div`` ``[n, b]``
    or ``None``, both detached. The monitor records the first non-finite value.
    """

    def __init__(self, sde: SDE, score_fn: ScoreFn, divergence: Optional[Divergence] = None,
                 score_dtype: Optional[torch.dtype] = None, what: str = "probability-flow ODE"):
        self.sde = sde
        self.divergence = divergence
        score = DifferentiabilityCheck(score_fn) if divergence is not None else score_fn
        if score_dtype is not None:
            inner = score
            score = lambda x, t: inner(x.to(score_dtype), t.to(score_dtype)).to(x.dtype)  # noqa: E731
        self.score = score
        self.what = what
        self.monitor: Optional[NonFiniteMonitor] = None

    @property
    def with_divergence(self) -> bool:
        """Whether calls return the divergence too."""
        return self.divergence is not None

    def __call__(self, x: Tensor, t: Tensor, index: Optional[Tensor] = None,
                 report_t: Optional[Tensor] = None) -> Tuple[Tensor, Optional[Tensor]]:
        if self.monitor is None:
            self.monitor = NonFiniteMonitor(x, self.what, "velocity" if self.divergence is None else "velocity or divergence")
        if self.divergence is None:
            v, d = reverse_drift(self.sde, x, t, self.score(x, t), 0.5), None
        else:
            with torch.enable_grad():
                xg = x.detach().requires_grad_(True)
                v = reverse_drift(self.sde, xg, t, self.score(xg, t), 0.5)  # the one forward pass
                d = self.divergence(v, xg, index).detach()  # the one (batched) VJP, [n, b]
            v = v.detach()
        self.monitor.update(report_t if report_t is not None else t.amin(), v, d)
        return v, d

    def raise_if_bad(self) -> None:
        """Raise if any evaluation produced a non-finite velocity or divergence."""
        if self.monitor is not None:
            self.monitor.raise_if_bad()


def make_divergence(trace: str, x: Tensor, noise: Any = None, probe: str = "rademacher", n_probes: int = 1,
                    chunk_size: Optional[int] = None, vectorize: bool = True) -> Divergence:
    """The divergence operator for ``x`` ``[B, *event]``: exact, or Hutchinson with ``n_probes`` probes per sample.

    Probes come from ``noise`` (a :class:`scoresde.noise.Noise`): probe ``k`` of sample ``i`` is draw ``k``
    of its probe stream. Memory for the probes or the exact trace's cotangents is checked first.
    """
    if trace not in TRACES:
        raise OptionError(f"trace must be one of {TRACES}, got {trace!r}")
    if probe not in PROBES:
        raise OptionError(f"probe must be one of {PROBES}, got {probe!r}")
    itemsize = x.element_size()
    if trace == "hutchinson":
        check_memory(n_probes * x.numel() * itemsize * 3, f"{n_probes} Hutchinson probes for x of shape {tuple(x.shape)}",
                     "Use fewer probes (n_probes) or a smaller batch")
        return Divergence("hutchinson", noise.probes(n_probes, x, probe), vectorize=vectorize)
    B, D = x.shape[0], event_numel(x)
    if chunk_size is None:
        chunk_size = max(1, min(D, EXACT_CHUNK_ELEMENTS // (B * D)))
    chunk = min(chunk_size, D)
    check_memory(chunk * x.numel() * itemsize * 3, f"exact-trace cotangents of {chunk} x {tuple(x.shape)}",
                 "Pass a smaller chunk_size or batch")
    return Divergence("exact", None, chunk_size=chunk, vectorize=vectorize)
