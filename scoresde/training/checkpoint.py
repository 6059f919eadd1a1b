"""Atomic, code-free checkpoints.

A run directory holds ``latest.pt``. Writing goes to a temporary file in the same directory,
which is flushed and ``fsync``-ed and then renamed over ``latest.pt`` with :func:`os.replace`
(atomic on POSIX and Windows), so a process killed mid-write leaves the previous checkpoint
intact. Loading uses ``torch.load(weights_only=True)``, which only rebuilds tensors and plain
containers and never runs code from the file; the configuration is stored as a JSON string and
RNG states as byte tensors so nothing else is needed.

Every checkpoint carries a ``digest``: the SHA-256 of its contents (every tensor's dtype, shape and
bytes and every other value, walked in a fixed order). :func:`load_checkpoint` recomputes it and
refuses a file whose contents changed after writing (flipped bits in the weights, say), so
sampling, likelihoods and resumed runs never start from damaged weights. Files that need code
execution to load (pickled Python objects) are refused outright.

Layout of the stored dict (version 2; version 1 is read without the integrity check)::

    format      "scoresde-checkpoint"
    version     1
    step        int, optimizer steps done
    config      JSON string of the resolved TrainConfig
    model       the network's state dict
    ema         {"decay", "num_updates", "state": state dict}
    optimizer   AdamW state dict
    rng         {"world_size", "data", "sampler_perm", "sampler_pos", "ranks": [{"torch", "cuda", "noise"}]}
    digest      hex SHA-256 of all the other entries (see :func:`payload_digest`)
"""

from __future__ import annotations

import hashlib
import math
import os
import pickle
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any, Dict, Iterator, Union

import torch

from .._utils import check_memory
from ..errors import CheckpointError, OutputError

FORMAT = "scoresde-checkpoint"
VERSION = 2
#: Versions :func:`load_checkpoint` reads (version 1 files carry no digest).
READABLE_VERSIONS = (1, 2)
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
    rename, the previous file at ``path`` stays complete and loadable. The stored dict gets the
    entries ``format``, ``version`` and ``digest`` (:func:`payload_digest` of the rest).

    Returns:
        The path of the written file.

    Raises:
        OutputError: the file cannot be written (disk full, read-only directory, a file where
            the directory should be); the previous checkpoint is left intact.
    """
    target = checkpoint_file(path)
    state = {k: v for k, v in state.items() if k != "digest"}
    state = {**state, "format": FORMAT, "version": VERSION}
    state["digest"] = payload_digest(state)
    tmp = target.parent / f".{target.name}.tmp.{os.getpid()}"
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException as e:
        try:
            tmp.unlink()
        except OSError:
            pass
        if isinstance(e, OSError) and not isinstance(e, OutputError):
            raise OutputError(
                f"cannot write the checkpoint {target}: {e.strerror or e} (the previous checkpoint, if any, is intact)"
            ) from None
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
    _check_archive_size(f)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes on pickle protocols; failures raise below
            state = torch.load(f, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if _needs_code(e):
            raise CheckpointError(_refused_message(f, e)) from None
        if "Weights only load failed" in str(e):  # a pickle the safe loader cannot read: damaged, or made for the full unpickler
            raise CheckpointError(
                f"{f} is not a readable checkpoint: torch's safe loader rejects it ({_unpickler_reason(e)}), so it is either "
                "damaged or a pickle that needs code execution to load; it is refused"
            ) from None
        raise CheckpointError(f"{f} is not a readable checkpoint (truncated or corrupt?): {_unpickler_reason(e)}") from None
    except Exception as e:  # a damaged file can make the reader fail in many ways (IndexError, KeyError, ...)
        if _needs_code(e):
            raise CheckpointError(_refused_message(f, e)) from None
        raise CheckpointError(f"{f} is not a readable checkpoint (truncated or corrupt?): {_first_line(e)}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{f} is not a scoresde checkpoint")
    if state.get("version") not in READABLE_VERSIONS:
        raise CheckpointError(
            f"{f} has checkpoint format version {state.get('version')!r}; this scoresde reads versions {READABLE_VERSIONS}"
        )
    if state["version"] >= 2:
        stored = state.get("digest")
        if not isinstance(stored, str):
            raise CheckpointError(f"{f} is corrupt: it has no integrity digest (every version-{state['version']} checkpoint has one)")
        body = {k: v for k, v in state.items() if k != "digest"}
        try:
            actual = payload_digest(body)
        except CheckpointError as e:
            raise CheckpointError(f"{f} is corrupt: {e}") from None
        if actual != stored:
            raise CheckpointError(
                f"{f} is corrupt: its contents do not match the SHA-256 digest stored when it was written (the file was "
                "damaged or modified afterwards). Use another copy of the run, or retrain"
            )
    else:
        warnings.warn(f"{f} is a version-1 checkpoint without an integrity digest; it is loaded unchecked", stacklevel=2)
    missing = [k for k in _REQUIRED if k not in state]
    if missing:
        raise CheckpointError(f"{f} is incomplete: missing {missing}")
    _check_types(state, f)
    return state


def _is_weights(d: Any) -> bool:
    return isinstance(d, dict) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in d.items())


def _check_types(state: Dict[str, Any], f: Path) -> None:
    """Refuse entries of the wrong kind with a clear message (rather than a TypeError deep in the trainer)."""
    step = state["step"]
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise CheckpointError(f"{f} is malformed: step must be a non-negative integer, got {step!r}")
    if not isinstance(state["config"], str):
        raise CheckpointError(f"{f} is malformed: config must be a JSON string, got {type(state['config']).__name__}")
    if not _is_weights(state["model"]):
        raise CheckpointError(f"{f} is malformed: model must map parameter names to tensors")
    ema = state["ema"]
    if not isinstance(ema, dict) or ("state" in ema and not _is_weights(ema["state"])):
        raise CheckpointError(f"{f} is malformed: ema must hold a 'state' mapping parameter names to tensors")


def payload_digest(obj: Any) -> str:
    """Hex SHA-256 of a checkpoint's contents: tensors by dtype, shape and bytes; containers in a fixed order.

    Two dicts with the same entries give the same digest however they were built; any change to
    a stored number, string or tensor element changes it.

    Raises:
        CheckpointError: ``obj`` holds a value other than tensors, numbers, strings, bytes, ``None`` and
            (nested) dicts, lists and tuples of those.
    """
    h = hashlib.sha256()
    for chunk in _digest_chunks(obj):
        h.update(chunk)
    return h.hexdigest()


def _digest_chunks(obj: Any) -> Iterator[Any]:
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous().reshape(-1)
        yield f"T{t.dtype}{tuple(obj.shape)}|".encode()
        if t.numel():
            yield t.view(torch.uint8).numpy()
    elif isinstance(obj, dict):
        yield f"D{len(obj)}|".encode()
        for key in sorted(obj, key=lambda k: (type(k).__name__, repr(k))):
            yield from _digest_chunks(key)
            yield from _digest_chunks(obj[key])
    elif isinstance(obj, (list, tuple)):
        yield f"{'L' if isinstance(obj, list) else 'U'}{len(obj)}|".encode()
        for item in obj:
            yield from _digest_chunks(item)
    elif isinstance(obj, bool) or obj is None:
        yield f"B{obj!r}|".encode()
    elif isinstance(obj, int):
        yield f"I{obj}|".encode()
    elif isinstance(obj, float):
        yield f"F{obj.hex() if math.isfinite(obj) else repr(obj)}|".encode()
    elif isinstance(obj, str):
        b = obj.encode("utf-8", "surrogatepass")
        yield f"S{len(b)}|".encode()
        yield b
    elif isinstance(obj, (bytes, bytearray)):
        yield f"Y{len(obj)}|".encode()
        yield bytes(obj)
    elif isinstance(obj, (torch.dtype, torch.device, torch.Size)):
        yield f"O{obj!r}|".encode()
    else:
        raise CheckpointError(f"a checkpoint may hold tensors, numbers, strings and containers, not {type(obj).__name__}")


def _check_archive_size(f: Path) -> None:
    """Refuse a checkpoint archive whose members declare more bytes than memory allows, before torch reads them."""
    try:
        with zipfile.ZipFile(f) as z:
            total = sum(info.file_size for info in z.infolist())
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):
        return  # not a zip archive: torch.load reports what it is
    check_memory(total, f"{f}: a checkpoint whose entries inflate to {total} bytes")


def _needs_code(e: BaseException) -> bool:
    """Whether torch's safe loader refused the file because it names a Python callable or class (a pickle ``GLOBAL``)."""
    return re.search(r"GLOBAL [\w.]+|Unsupported (global|class)", str(e)) is not None


def _refused_message(f: Path, e: BaseException) -> str:
    return (
        f"{f} needs code execution to load ({_code_reason(e)}), so it is refused: scoresde loads only tensors and plain "
        "containers, and its own checkpoints never need more. The file was not written by scoresde or was tampered with"
    )


def _code_reason(e: BaseException) -> str:
    """What the file asked for, from torch's message (without torch's advice on how to load it anyway)."""
    m = re.search(r"GLOBAL ([\w.]+)", str(e))
    return f"it calls or builds {m.group(1)}" if m else "it holds pickled Python objects"


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
            return line.split("WeightsUnpickler error:")[-1].strip().split(" was not an allowed global")[0] or _detail(e)
    first = (str(e).strip().splitlines() or [""])[0]
    return "unpickling failed" if "weights_only" in first or not first else first


def _detail(e: BaseException) -> str:
    """The specific line of a weights-only failure (e.g. ``Unsupported operand 100``)."""
    for line in str(e).splitlines():
        if line.strip().startswith(("Unsupported", "Trying to load")):
            return line.strip()
    return "unpickling failed"


def _first_line(e: BaseException) -> str:
    s = str(e).strip().splitlines()
    if s and "weights_only" in s[0]:  # torch's advice to load unsafely: never repeated
        return _unpickler_reason(e) if "WeightsUnpickler error" in str(e) else "the safe loader could not read it"
    return s[0] if s else type(e).__name__
