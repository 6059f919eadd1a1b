"""Progress reports for long commands: a redrawn bar on a terminal, periodic lines elsewhere.

One small class serves training, sampling, likelihoods and evaluation:

* on a terminal, a single line redrawn in place (at most every ``min_interval`` s) with the count,
  the rate, the elapsed time and the estimated time left (ETA): a `tqdm <https://tqdm.github.io>`_
  bar, so :func:`tqdm.tqdm.write` prints above it without breaking it;
* when the stream is not a terminal (a log file, a pipe, a CI job), one complete line every
  ``log_interval`` s (``SCORESDE_PROGRESS_INTERVAL`` overrides the default of 30 s), so that logs
  show progress without being flooded (no carriage returns, no partial lines);
* nothing at all when disabled (``--quiet``).

Both modes render the same text through :meth:`tqdm.tqdm.format_meter`, e.g.
``sample 15/60 (25%) 3.1 step/s elapsed 0:05 ETA 0:15 NFE 16`` (a terminal adds a ``width``-character
bar after the label).

Work without a known count (an adaptive ODE solver) reports the fraction of the integration
covered instead: see :class:`ScoreProgress`, which wraps a score function, counts its evaluations
(NFE) and follows the current time ``t``.
"""

from __future__ import annotations

import math
import os
import sys
import time
from typing import IO, Any, Callable, Dict, Optional, Tuple

import torch
from torch import Tensor
from tqdm import tqdm

__all__ = ["Progress", "ScoreProgress", "format_duration"]

#: Default seconds between two lines when the stream is not a terminal.
DEFAULT_LOG_INTERVAL = 30.0


def format_duration(seconds: float) -> str:
    """``75 -> '1:15'``, ``3725 -> '1:02:05'``; ``'?'`` for unknown (NaN or infinite) durations."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _is_terminal(stream: IO[str]) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _log_interval() -> float:
    value = os.environ.get("SCORESDE_PROGRESS_INTERVAL")
    if value:
        try:
            v = float(value)
            if math.isfinite(v) and v >= 0:
                return v
        except ValueError:
            pass
    return DEFAULT_LOG_INTERVAL


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:.3g}"


def _literal(text: str) -> str:
    """``text`` escaped for a ``str.format`` template (the ``bar_format`` of :meth:`tqdm.format_meter`)."""
    return text.replace("{", "{{").replace("}", "}}")


class _TerminalBar(tqdm):
    """The tqdm bar of a :class:`Progress` on a terminal: tqdm throttles, draws and clears; the text is the owner's."""

    monitor_interval = 0  # no monitor thread: redraws come from the owner's updates (miniters=0)

    def __init__(self, owner: "Progress", **kwargs: Any):
        self._owner = owner
        super().__init__(**kwargs)

    def __str__(self) -> str:
        ncols = self.format_dict["ncols"]  # follows the terminal's width (dynamic_ncols)
        return self._owner._render(bar=True, ncols=ncols or None, ascii=self.ascii)


class Progress:
    """Progress of ``total`` units of work, with rate and ETA.

    Args:
        total: units of work in all (steps, examples, ...); ``None`` when unknown.
        desc: a short label printed first (``"train"``, ``"sample"``, ...).
        unit: the name of one unit (``"step"``, ``"img"``), used in the rate. With ``unit="%"`` and
            ``total=100`` the count reads as a percentage (``37.5%``).
        initial: units already done (a resumed training run); the rate counts only the work after it.
        enabled: ``False`` prints nothing; ``True`` or ``None`` prints (a bar on a terminal,
            periodic lines otherwise).
        stream: where to write (default: stderr).
        min_interval: fewest seconds between two redraws of the terminal bar.
        log_interval: seconds between two lines when ``stream`` is not a terminal (default: the
            environment variable ``SCORESDE_PROGRESS_INTERVAL``, else 30). The first line comes
            after one interval, a last one at :meth:`close`.
        width: characters of the bar.

    Use :meth:`update` (``n`` more units done, optional extra fields such as the loss), or
    :meth:`set` (absolute count); :meth:`close` writes the final state and ends the line. A
    ``Progress`` is also a context manager that closes on exit. The rate and the ETA are averages
    since the start (no smoothing).
    """

    def __init__(
        self,
        total: Optional[float],
        desc: str = "",
        unit: str = "it",
        initial: float = 0,
        enabled: Optional[bool] = None,
        stream: Optional[IO[str]] = None,
        min_interval: float = 0.2,
        log_interval: Optional[float] = None,
        width: int = 20,
    ):
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled is not False
        self.terminal = _is_terminal(self.stream)
        self.total = None if total is None else float(total)
        self.desc, self.unit, self.width = desc, unit, int(width)
        self.n = self.initial = float(initial)
        self.fields: Dict[str, Any] = {}
        self.min_interval = float(min_interval)
        self.log_interval = _log_interval() if log_interval is None else float(log_interval)
        self.start = time.monotonic()
        self._next_line = self.start + self.log_interval  # non-terminal: when the next line is due
        self._written = False
        self._closed = False
        self._bar: Optional[_TerminalBar] = None
        if self.enabled and self.terminal:
            self._bar = _TerminalBar(
                self,
                total=self.total,
                initial=self.n,
                desc=desc,
                unit=unit,
                file=self.stream,
                mininterval=self.min_interval,
                miniters=0,
                smoothing=0,
                leave=True,
                dynamic_ncols=True,
            )

    # ---------------------------------------------------------------- recording
    def update(self, n: float = 1, **fields: Any) -> bool:
        """Record ``n`` more units of work and (optionally) fields to show, e.g. ``loss=0.031``.

        Returns whether this call drew the bar or wrote a line.
        """
        return self.set(self.n + n, **fields)

    def set(self, n: float, **fields: Any) -> bool:
        """Record that ``n`` units are done in all (and fields to show, as in :meth:`update`).

        Returns whether this call drew the bar or wrote a line.
        """
        self.n = float(n)
        if fields:
            self.fields.update(fields)
        if self._bar is not None:
            return bool(self._bar.update(self.n - self._bar.n))  # tqdm redraws at most every min_interval s
        if self.enabled and not self._closed:
            now = time.monotonic()
            if now >= self._next_line:
                self._next_line = now + self.log_interval
                self._write_line()
                return True
        return False

    def record(self, n: float, **fields: Any) -> None:
        """Record like :meth:`set` without drawing: the next :meth:`set`, :meth:`refresh` or :meth:`close` shows it."""
        self.n = float(n)
        if fields:
            self.fields.update(fields)

    def refresh(self) -> None:
        """Show the current state now, whatever the interval (a redraw, or one more line)."""
        if self._bar is not None:
            self._bar.refresh()
        elif self.enabled and not self._closed:
            self._next_line = time.monotonic() + self.log_interval
            self._write_line()

    def close(self) -> None:
        """Write the final state (on a terminal, end the line). Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.close()  # the final redraw and the line ending
        elif self.enabled and (self.n > self.initial or self._written):
            self._write_line()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ---------------------------------------------------------------- figures
    @property
    def elapsed(self) -> float:
        """Seconds since the start."""
        return time.monotonic() - self.start

    @property
    def rate(self) -> float:
        """Units per second since the start (NaN before any work)."""
        dt = self.elapsed
        done = self.n - self.initial
        return done / dt if dt > 0 and done > 0 else math.nan

    @property
    def eta(self) -> float:
        """Estimated seconds left (NaN when unknown)."""
        if self.total is None:
            return math.nan
        rate = self.rate
        return max(0.0, self.total - self.n) / rate if rate > 0 else math.nan

    def line(self) -> str:
        """The current progress as one line of text (without a line ending; with the bar on a terminal)."""
        return self._render(bar=self.terminal)

    # ---------------------------------------------------------------- output
    def _render(self, bar: bool, ncols: Optional[int] = None, ascii: Any = None) -> str:
        """The text of the current state through :meth:`tqdm.format_meter` (which draws ``{bar}`` and fits ``ncols``)."""
        elapsed, rate, total = self.elapsed, self.rate, self.total
        done = min(1.0, max(0.0, self.n / total)) if total else 0.0
        parts = [_literal(self.desc)] if self.desc else []
        if total:
            if bar:
                parts.append("[{bar:%d}]" % max(1, self.width))
            if self.unit == "%" and total == 100:
                parts.append(f"{100 * done:.1f}%")
            else:
                parts.append(f"{_num(self.n)}/{_num(total)} ({100 * done:.0f}%)")
        else:
            parts.append(f"{_num(self.n)} {_literal(self.unit)}")
        if math.isfinite(rate):
            unit = _literal(self.unit)
            parts.append(f"{rate:.3g} {unit}/s" if rate >= 1 else f"{1 / rate:.3g} s/{unit}")
        parts.append(f"elapsed {format_duration(elapsed)}")
        if total:
            parts.append(f"ETA {format_duration(self.eta)}")
        for k, v in self.fields.items():
            parts.append(_literal(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"))
        return tqdm.format_meter(
            done * total if total else self.n, total, elapsed, ncols=ncols, ascii=ascii, bar_format=" ".join(parts)
        )

    def _write_line(self) -> None:
        self.stream.write(self._render(bar=False) + "\n")
        self.stream.flush()
        self._written = True


# ---------------------------------------------------------------------- progress of adaptive solvers
def _carried_sde(score_fn: Any) -> Any:
    """The SDE a score function carries (``NetworkScore.sde``), or ``None``."""
    from .sde import SDE

    sde = getattr(score_fn, "sde", None)
    return sde if isinstance(sde, SDE) else None


def _progress_variable(sde: Any, t_start: float, t_end: float) -> Tuple[str, Callable[[Tensor], Tensor]]:
    """``(name, u)``: the variable ``u(t)`` in which :class:`ScoreProgress` measures the fraction done.

    The half log-SNR ``log(scale(t) / std(t))`` of ``sde`` when it has a kernel and is finite and
    distinct at both ends; else ``log t`` when both ends are positive; else ``t``.
    """
    if sde is not None and getattr(sde, "has_kernel", False):
        ends = sde.log_snr(torch.tensor([t_start, t_end], dtype=torch.float64))
        if bool(torch.isfinite(ends).all()) and float(ends[0]) != float(ends[1]):
            return "log_snr", sde.log_snr
    if t_start > 0 and t_end > 0 and t_start != t_end:
        return "log_t", torch.log
    return "t", lambda t: t


class ScoreProgress:
    """A score function that reports progress: it counts evaluations (NFE) and follows the time.

    For solvers that choose their own steps (the adaptive probability-flow ODE, the likelihood's ODE),
    where no step count is known in advance. The progress is the fraction of the integration covered,
    in percent, shown with the NFE and the current ``t``. Adaptive steps are not spread evenly in
    ``t``, so the fraction is measured in a variable ``u(t)`` in which the work is closer to uniform:

    * the half log-SNR ``lambda(t) = log(scale(t) / std(t))`` of ``sde`` (when given, or carried by the
      score function as ``score_fn.sde``, as :class:`scoresde.NetworkScore` does). On VP likelihoods
      (exact Gaussian mixtures in 2-D and 64-D, a small trained and a random network) the largest gap
      between the fraction and the share of evaluations done was 0.22-0.30 in ``lambda`` against
      0.46-0.61 in ``log t``, which runs ahead (90 % at ``t = 0.3`` with a fifth of the evaluations
      to come) because the steps near ``t = eps`` are few and long once the solver is past its start;
    * else ``log t`` when both ends are positive;
    * else ``t`` itself.

    ``u(t) - u(t_start)`` over ``u(t_end) - u(t_start)`` is the fraction of one integration. When the
    solver steps each sample on its own (per-sample step control), the fraction is the batch's mean:
    the samples absent from a call (finished ones) count as done.

    Args:
        score_fn: the score function ``score_fn(x, t)`` (``x`` ``[B, *event]``, ``t`` ``[B]``).
        progress: the :class:`Progress` to update; its ``total`` should be 100 (percent).
        t_start, t_end: the ends of the integration (``T`` and ``eps`` for sampling, the reverse for
            likelihoods).
        base: a percentage already done by earlier pieces of work (e.g. earlier batches) and
            ``share`` the percentage this piece covers.
        passes: integrations over ``[t_start, t_end]`` in this piece (see :meth:`segment`).
        sde: the SDE whose log-SNR measures the progress (default: ``score_fn.sde`` if any).

    The wrapper forwards ``parameters()`` (so device inference still works) and is called exactly
    like the wrapped function. Per call it reads ``t`` back to the CPU once (one number when the batch
    shares its time; a GPU stream synchronises there, as for any read of ``t``) and adds a few
    element-wise operations on it there, some tens of microseconds.
    """

    def __init__(
        self,
        score_fn: Callable[[Tensor, Tensor], Tensor],
        progress: Progress,
        t_start: float,
        t_end: float,
        base: float = 0.0,
        share: float = 100.0,
        passes: int = 1,
        sde: Any = None,
    ):
        self.score_fn, self.progress = score_fn, progress
        self.t_start, self.t_end = float(t_start), float(t_end)
        self.sde = sde if sde is not None else _carried_sde(score_fn)
        #: ``"log_snr"``, ``"log_t"`` or ``"t"``: the variable the fraction is measured in.
        self.variable, self._u = _progress_variable(self.sde, self.t_start, self.t_end)
        ends = self._u(torch.tensor([self.t_start, self.t_end], dtype=torch.float64))
        self._u_start, self._u_span = float(ends[0]), float(ends[1] - ends[0])
        self.nfe = 0
        self.segment(base, share, passes)

    def segment(self, base: float, share: float, passes: int = 1) -> None:
        """Start the next piece of work (e.g. a batch) covering ``share`` percent from ``base`` in ``passes``
        integrations from ``t_start`` to ``t_end`` (e.g. several dequantization draws)."""
        self.base, self.share, self.passes = float(base), float(share), max(1, int(passes))
        self.pass_index = 0
        self._start_pass()

    def _start_pass(self) -> None:
        self.reached = 0.0  # the furthest fraction of the current integration
        self._calls = 0  # evaluations in the current integration
        self._batch = 0  # samples in the current integration (the most seen in one call)
        self._probe = self._before_probe = 0.0  # the second evaluation's fraction and what it raised (_advance)

    def parameters(self):
        params = getattr(self.score_fn, "parameters", None)
        return params() if callable(params) else iter(())

    def fraction(self, t: Tensor) -> Tensor:
        """The fraction of one integration at times ``t`` (any shape), in ``[0, 1]``, same shape."""
        if not self._u_span:
            return torch.ones_like(t)
        return ((self._u(t) - self._u_start) / self._u_span).nan_to_num(0.0).clamp(0.0, 1.0)

    def _observe(self, t: Tensor) -> Tuple[float, float]:
        """``(the batch's mean fraction, the first time)`` of a call at times ``t`` ``[b]``.

        The times are read back once (in float64, on the CPU); one time broadcast over the batch
        (shared step control) is read as one number.
        """
        t = t.detach().reshape(-1)
        b = t.numel()
        self._batch = max(self._batch, b)
        shared = b == 1 or t.stride(0) == 0
        tv = (t[:1] if shared else t).to("cpu", torch.float64)
        f = self.fraction(tv)
        done = float(f[0]) * b if shared else float(f.sum())
        return (done + self._batch - b) / self._batch, float(tv[0])

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        self.nfe += 1
        frac, t0 = self._observe(t)
        self._calls += 1
        if frac <= 1e-6 and self.reached > 0.5 and self.pass_index + 1 < self.passes:
            self.pass_index += 1  # a new integration over the same interval started
            self._start_pass()
            self._calls, self._batch = 1, int(t.numel())
        else:
            self._advance(frac)
        done = self.base + self.share * (self.pass_index + self.reached) / self.passes
        if self._calls == 2:  # a probe's advance is shown once the next evaluation confirms it
            self.progress.record(done, NFE=self.nfe, t=f"{t0:.3g}")
        else:
            self.progress.set(done, NFE=self.nfe, t=f"{t0:.3g}")
        return self.score_fn(x, t)

    def _advance(self, frac: float) -> None:
        """Count the furthest fraction evaluated so far, less the adaptive solvers' initial-step probe.

        Adaptive solvers evaluate ahead and step back (trial stages, rejected steps): the furthest
        point counts. Their second evaluation, though, is a probe that chooses the first step size
        (torchdiffeq's and :func:`scoresde.flow.odeint_per_sample`'s) and may land anywhere up to the
        far end: its advance is recorded without being drawn and withdrawn when the third evaluation
        falls back below it.
        """
        if self._calls == 2:
            self._before_probe, self._probe = self.reached, frac
        elif self._calls == 3 and frac < self._probe:
            self.reached = self._before_probe
        self.reached = max(self.reached, frac)
