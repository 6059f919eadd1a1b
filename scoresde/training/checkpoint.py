"""Atomic, code-free checkpoints.

A run directory holds ``latest.pt``. Writing goes to a temporary file in the same directory,
which is flushed and ``fsync``-ed and then renamed over ``latest.pt`` with :func:`os.replace`
(atomic on POSIX and Windows), so a process killed mid-write leaves the previous checkpoint
intact. Loading uses ``torch.load(weights_only=True)``, which only rebuilds tensors and plain
containers and never runs code from the file; the configuration is stored as a JSON string and
RNG states as byte tensors so nothing else is needed.

Layout of the stored dict (version 1)::

    format      "scoresde-checkpoint"
    version     1
    step        int, optimizer steps done
    config      JSON string of the resolved TrainConfig
    model       the network's state dict
    ema         {"decay", "num_updates", "state": state dict}
    optimizer   AdamW state dict
    rng         {"world_size", "data", "sampler_perm", "sampler_pos", "ranks": [{"torch", "cuda", "noise"}]}
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any, Dict, Union

import torch

from ..errors import CheckpointError

FORMAT = "scoresde-checkpoint"
VERSION = 1
LATEST = "latest.pt"
_REQUIRED = ("format", "version", "step", "config", "model", "ema")

PathLike = Union[str, "os.PathLike[str]"]


def checkpoint_file(path: PathLike) -> Path:
    """The checkpoint file for ``path``: ``path/latest.pt`` for a directory, ``path`` otherwise."""
    p = Path(path).expanduser()
    return p / LATEST if p.is_dir() else p


def save_checkpoint(state: Dict[str, Any], path: PathLike) -> Path:
    """Write ``state`` atomically to ``path`` (a file, or a directory meaning ``path/latest.pt``).

    The bytes go to ``.<name>.tmp.<pid>`` next to the target, are flushed and ``fsync``-ed, and
    then atomically renamed over the target; the directory entry is ``fsync``-ed too. Until the
    rename, the previous file at ``path`` stays complete and loadable.

    Returns:
        The path of the written file.
    """
    target = checkpoint_file(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    state = {"format": FORMAT, "version": VERSION, **state}
    tmp = target.parent / f".{target.name}.tmp.{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise
    _fsync_dir(target.parent)
    return target


def load_checkpoint(path: PathLike) -> Dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` without executing code from it.

    Args:
        path: a checkpoint file or a run directory (meaning ``path/latest.pt``).

    Returns:
        The stored dict (tensors on CPU).

    Raises:
        CheckpointError: the file is missing, truncated, not a scoresde checkpoint, holds
            objects other than tensors and plain containers, or lacks required entries.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise CheckpointError(f"no checkpoint at {p}")
    f = checkpoint_file(p)
    if not f.is_file():
        raise CheckpointError(f"no checkpoint in {p} (expected {f.name})")
    try:
        state = torch.load(f, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "Unsupported global" in str(e) or "Unsupported class" in str(e):
            raise CheckpointError(
                f"{f} holds objects other than tensors and plain containers, which are not loaded for safety "
                f"({_unpickler_reason(e)})"
            ) from None
        raise CheckpointError(f"{f} is not a readable checkpoint (truncated or corrupt?): {_unpickler_reason(e)}") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, KeyError, AttributeError) as e:
        raise CheckpointError(f"{f} is not a readable checkpoint (truncated or corrupt?): {_first_line(e)}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{f} is not a scoresde checkpoint")
    if state.get("version") != VERSION:
        raise CheckpointError(f"{f} has checkpoint format version {state.get('version')!r}; this scoresde reads version {VERSION}")
    missing = [k for k in _REQUIRED if k not in state]
    if missing:
        raise CheckpointError(f"{f} is incomplete: missing {missing}")
    return state


def remove_stale_temporaries(directory: PathLike, name: str = LATEST) -> None:
    """Delete temporary files a killed writer of ``directory/name`` may have left behind."""
    d = Path(directory)
    if d.is_dir():
        for tmp in d.glob(f".{name}.tmp.*"):
            try:
                tmp.unlink()
            except OSError:
                pass


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _unpickler_reason(e: BaseException) -> str:
    for line in str(e).splitlines():
        if "WeightsUnpickler error" in line:
            return line.split("WeightsUnpickler error:")[-1].strip().split(" was not an allowed global")[0] or "unpickling failed"
    return _first_line(e)


def _first_line(e: BaseException) -> str:
    s = str(e).strip().splitlines()
    return s[0] if s else type(e).__name__
