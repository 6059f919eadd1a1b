"""The training progress report on stderr and a JSONL log file."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import IO, Any, Dict, Optional

from ..progress import Progress


class ProgressBar:
    """Training progress: step, loss, throughput and the estimated time left.

    On a terminal a tqdm bar redrawn in place; otherwise (a log file, a pipe) one line every
    ``log_interval`` seconds (see :class:`scoresde.progress.Progress`).

    Args:
        total: the last step.
        initial: the step the bar starts at (a resumed run starts above 0).
        enabled: ``False`` prints nothing; ``None`` or ``True`` prints (bar or periodic lines).
        stream: where to write (stderr by default).
        min_interval: fewest seconds between two redraws of the terminal bar.
        width: characters of the bar.
        log_interval: seconds between two lines when ``stream`` is not a terminal (default 30, or
            ``SCORESDE_PROGRESS_INTERVAL``).
    """

    def __init__(
        self,
        total: int,
        initial: int = 0,
        enabled: Optional[bool] = None,
        stream: Optional[IO[str]] = None,
        min_interval: float = 0.2,
        width: int = 20,
        log_interval: Optional[float] = None,
    ):
        self._progress = Progress(total, "train", "step", initial=initial, enabled=enabled, stream=stream,
                                  min_interval=min_interval, width=width, log_interval=log_interval)
        self.enabled = self._progress.enabled
        self.total, self.step = int(total), int(initial)

    def update(self, step: int, loss: float, examples_per_s: float, force: bool = False) -> None:
        """Record progress; redraw if enough time passed (or now, with ``force``)."""
        self.step = step
        drawn = self._progress.set(step, loss=float(loss), **{"ex/s": f"{examples_per_s:,.0f}"})
        if force and not drawn:
            self._progress.refresh()

    def close(self) -> None:
        """Write the final state and end the line."""
        self._progress.close()


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
