"""A plain progress bar on stderr and a JSONL log file."""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import IO, Any, Dict, Optional


class ProgressBar:
    """A one-line progress bar: step, loss and throughput, redrawn at most every ``min_interval`` s.

    Args:
        total: the last step.
        initial: the step the bar starts at (a resumed run starts above 0).
        enabled: draw at all; ``None`` means "only when ``stream`` is a terminal".
        stream: where to draw (stderr by default).
    """

    def __init__(
        self,
        total: int,
        initial: int = 0,
        enabled: Optional[bool] = None,
        stream: Optional[IO[str]] = None,
        min_interval: float = 0.2,
        width: int = 24,
    ):
        self.stream = stream if stream is not None else sys.stderr
        if enabled is None:
            enabled = bool(getattr(self.stream, "isatty", lambda: False)())
        self.enabled = enabled
        self.total, self.step = int(total), int(initial)
        self.min_interval, self.width = min_interval, width
        self._last_draw = -math.inf
        self._drawn = False

    def update(self, step: int, loss: float, examples_per_s: float, force: bool = False) -> None:
        """Record progress; redraw if enough time passed (or ``force``)."""
        self.step = step
        now = time.monotonic()
        if not self.enabled or (not force and now - self._last_draw < self.min_interval):
            return
        self._last_draw = now
        frac = min(1.0, step / self.total) if self.total else 1.0
        filled = int(round(frac * self.width))
        bar = "#" * filled + "-" * (self.width - filled)
        line = f"\r[{bar}] {step}/{self.total} loss {loss:.4g} {examples_per_s:,.0f} ex/s"
        self.stream.write(line + " " * 4)
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        """End the line the bar was drawn on."""
        if self.enabled and self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False


class JSONLLogger:
    """Append one JSON object per line to ``path`` (flushed after every line).

    Non-finite floats are written as the strings ``"nan"``, ``"inf"``, ``"-inf"`` so that every
    line stays valid JSON.
    """

    def __init__(self, path: Path, enabled: bool = True):
        self.path = Path(path)
        self.enabled = enabled
        self._f: Optional[IO[str]] = None
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._f = open(self.path, "a", encoding="utf-8")  # noqa: SIM115  (held open for the run, closed by close())

    def write(self, record: Dict[str, Any]) -> None:
        """Append ``record`` as one line."""
        if self._f is None:
            return
        self._f.write(json.dumps({k: _jsonable(v) for k, v in record.items()}) + "\n")
        self._f.flush()

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None


def _jsonable(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v
