"""Progress reports for long commands: a redrawn bar on a terminal, periodic lines elsewhere.

One small class serves training, sampling, likelihoods and evaluation:

* on a terminal, a single line redrawn in place (at most every ``min_interval`` s) with the count,
  the rate, the elapsed time and the estimated time left (ETA);
* when the stream is not a terminal (a log file, a pipe, a CI job), one complete line every
  ``log_interval`` s (``SCORESDE_PROGRESS_INTERVAL`` overrides the default of 30 s), so that logs
  show progress without being flooded;
* nothing at all when disabled (``--quiet``).

Work without a known count (an adaptive ODE solver) reports the fraction of the time interval
covered instead: see :class:`ScoreProgress`, which wraps a score function, counts its evaluations
(NFE) and follows the current time ``t``.
"""

from __future__ import annotations

import math
import os
import sys
import time
from typing import IO, Any, Callable, Dict, Optional

from torch import Tensor

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


class Progress:
    """Progress of ``total`` units of work, with rate and ETA.

    Args:
        total: units of work in all (steps, examples, ...); ``None`` when unknown.
        desc: a short label printed first (``"train"``, ``"sample"``, ...).
        unit: the name of one unit (``"step"``, ``"img"``), used in the rate.
        initial: units already done (a resumed training run).
        enabled: ``False`` prints nothing; ``True`` or ``None`` prints (a bar on a terminal,
            periodic lines otherwise).
        stream: where to write (default: stderr).
        min_interval: fewest seconds between two redraws of the terminal bar.
        log_interval: seconds between two lines when ``stream`` is not a terminal (default: the
            environment variable ``SCORESDE_PROGRESS_INTERVAL``, else 30).
        width: characters of the bar.

    Use :meth:`update` (``n`` more units done, optional extra fields such as the loss), or
    :meth:`set` (absolute count); :meth:`close` writes the final state and ends the line.
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
        self._last = -math.inf if self.terminal else self.start  # non-terminal: the first line after log_interval
        self._drawn = False
        self._closed = False

    # ---------------------------------------------------------------- recording
    def update(self, n: float = 1, **fields: Any) -> None:
        """Record ``n`` more units of work and (optionally) fields to show, e.g. ``loss=0.031``."""
        self.set(self.n + n, **fields)

    def set(self, n: float, **fields: Any) -> None:
        """Record that ``n`` units are done in all."""
        self.n = float(n)
        self.fields.update(fields)
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last >= (self.min_interval if self.terminal else self.log_interval):
            self._last = now
            self._write(now)

    def close(self) -> None:
        """Write the final state (on a terminal, end the line). Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if not self.enabled:
            return
        if self.terminal:
            if self._drawn or self.n > self.initial:
                self._write(time.monotonic())
                self.stream.write("\n")
                self.stream.flush()
        elif self.n > self.initial or self._drawn:
            self._write(time.monotonic())

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
        """The current progress as one line of text (without a line ending)."""
        parts = [self.desc] if self.desc else []
        if self.total:
            frac = min(1.0, max(0.0, self.n / self.total))
            if self.terminal:
                filled = int(round(frac * self.width))
                parts.append("[" + "#" * filled + "-" * (self.width - filled) + "]")
            if self.unit == "%" and self.total == 100:
                parts.append(f"{100 * frac:.1f}%")
            else:
                parts.append(f"{_num(self.n)}/{_num(self.total)} ({100 * frac:.0f}%)")
        else:
            parts.append(f"{_num(self.n)} {self.unit}")
        rate = self.rate
        if math.isfinite(rate):
            parts.append(f"{rate:.3g} {self.unit}/s" if rate >= 1 else f"{1 / rate:.3g} s/{self.unit}")
        parts.append(f"elapsed {format_duration(self.elapsed)}")
        if self.total:
            parts.append(f"ETA {format_duration(self.eta)}")
        for k, v in self.fields.items():
            parts.append(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}")
        return " ".join(parts)

    def _write(self, now: float) -> None:
        text = self.line()
        if self.terminal:
            self.stream.write("\r" + text + "\x1b[K")  # clear what is left of a longer previous line
        else:
            self.stream.write(text + "\n")
        self.stream.flush()
        self._drawn = True


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:.3g}"


class ScoreProgress:
    """A score function that reports progress: it counts evaluations (NFE) and follows the time.

    For solvers that choose their own steps (the adaptive probability-flow ODE, the likelihood's ODE),
    where no step count is known in advance. The progress is the fraction of the time interval
    covered in percent, shown with the NFE and the current ``t``. When both ends are positive the
    fraction is measured in ``log t`` (``log(t / t_start) / log(t_end / t_start)``): adaptive solvers
    take their small steps near ``t = 0``, so a linear fraction would stall there and the ETA mislead.

    Args:
        score_fn: the score function ``score_fn(x, t)`` (``x`` ``[B, *event]``, ``t`` ``[B]``).
        progress: the :class:`Progress` to update; its ``total`` should be 100 (percent).
        t_start, t_end: the ends of the integration (``T`` and ``eps`` for sampling, the reverse for
            likelihoods).
        base: a percentage already done by earlier pieces of work (e.g. earlier batches) and
            ``share`` the percentage this piece covers.

    The wrapper forwards ``parameters()`` (so device inference still works) and is called exactly
    like the wrapped function; it adds one comparison per call and no synchronisation beyond
    reading the scalar ``t[0]``.
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
    ):
        self.score_fn, self.progress = score_fn, progress
        self.t_start, self.t_end = float(t_start), float(t_end)
        self.nfe = 0
        self.segment(base, share, passes)

    def segment(self, base: float, share: float, passes: int = 1) -> None:
        """Start the next piece of work (e.g. a batch) covering ``share`` percent from ``base`` in ``passes``
        integrations from ``t_start`` to ``t_end`` (e.g. several dequantization draws)."""
        self.base, self.share, self.passes = float(base), float(share), max(1, int(passes))
        self.t_reached = self.t_start
        self.pass_index = 0

    def parameters(self):
        params = getattr(self.score_fn, "parameters", None)
        return params() if callable(params) else iter(())

    def _fraction(self, t: float) -> float:
        if self.t_start > 0 and self.t_end > 0 and t > 0:
            span = math.log(self.t_end / self.t_start)
            return math.log(t / self.t_start) / span if span else 1.0
        span = self.t_end - self.t_start
        return (t - self.t_start) / span if span else 1.0

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        self.nfe += 1
        t0 = float(t.reshape(-1)[0])
        frac = self._fraction(t0)
        reached = self._fraction(self.t_reached)
        if frac <= 1e-9 and reached > 0.5 and self.pass_index + 1 < self.passes:
            self.pass_index += 1  # a new integration over the same interval started
            self.t_reached = self.t_start
        elif frac > reached:  # adaptive solvers probe back and forth: report the furthest time reached
            self.t_reached = t0
        done = (self.pass_index + min(1.0, max(0.0, self._fraction(self.t_reached)))) / self.passes
        self.progress.set(self.base + self.share * done, NFE=self.nfe, t=f"{t0:.3g}")
        return self.score_fn(x, t)
