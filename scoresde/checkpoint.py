"""Model I/O: runs, checkpoints, artifacts, configurations and the one atomic write.

Everything that reads or writes a model file lives here, below the command line and beside training,
so sampling and evaluation never import the trainer:

* :func:`atomic_write`: the one way a file is written. The bytes go to ``.<name>.tmp.<pid>`` next to
  the target, are flushed and ``fsync``-ed and renamed over the target with :func:`os.replace` (atomic on
  POSIX and Windows); the directory entry is ``fsync``-ed too. A process killed mid-write leaves the
  previous file intact, and a failed write leaves no temporary behind.
* :func:`safe_torch_load`: the one way a torch file is read, ``torch.load(weights_only=True)``, which only
  rebuilds tensors and plain containers and never runs code from the file; a file that needs code
  execution is refused with a message saying so, never loaded another way.
* :func:`save_artifact` / :func:`load_artifact`: a dict of tensors and plain values under a header
  ``{"format": "scoresde-<kind>", "version", "digest"}``; the ``digest`` is the SHA-256 of the contents
  (every tensor's dtype, shape and bytes and every other value, walked in a fixed order), recomputed on
  every load, so damaged weights are reported instead of silently used. Run checkpoints, classifiers and
  baselines are artifacts.
* Runs: :func:`save_checkpoint`, :func:`load_checkpoint`, :func:`read_config`, :func:`build_sde` and
  :func:`load_model` (the SDE, the score function and the configuration of a trained run).

Layout of a run checkpoint (``latest.pt``, version 2; version 1 is read without the integrity check)::

    format      "scoresde-checkpoint"
    version     2
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
from typing import IO, Any, Callable, Dict, Iterator, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from ._utils import check_memory
from .config import TrainConfig
from .errors import CheckpointError, ConfigError, OutputError
from .nets import build_network
from .score import NetworkScore
from .sde import SDE, VESDE, VPSDE, SubVPSDE

FORMAT = "scoresde-checkpoint"
VERSION = 2
#: Versions :func:`load_checkpoint` reads (version 1 files carry no digest).
READABLE_VERSIONS = (1, 2)
LATEST = "latest.pt"
#: The run directory's JSON log and its configuration (written at the start of a run).
LOG_FILE = "log.jsonl"
CONFIG_FILE = "config.json"
#: SDE name -> class, for :func:`build_sde`.
SDES = {"vp": VPSDE, "subvp": SubVPSDE, "ve": VESDE}
_REQUIRED = ("format", "version", "step", "config", "model", "ema")

PathLike = Union[str, "os.PathLike[str]"]


def checkpoint_file(path: PathLike) -> Path:
    """The checkpoint file for ``path``: ``path/latest.pt`` for a directory, ``path`` otherwise."""
    p = Path(path).expanduser()
    return p / LATEST if p.is_dir() else p


def atomic_write(path: PathLike, write: Callable[[IO[bytes]], None], what: str = "file") -> Path:
    """Write a file atomically: ``write(f)`` fills a temporary file next to ``path``, which then replaces it.

    The temporary file (``.<name>.tmp.<pid>``) is flushed and ``fsync``-ed before :func:`os.replace` renames
    it over ``path``; the directory entry is ``fsync``-ed after. Until the rename, a previous file at
    ``path`` stays complete; on any failure (or interrupt) the temporary file is removed.

    Args:
        path: the target file; its folder is created if needed.
        write: called with the open binary file.
        what: how errors name the file (``"checkpoint"``, ``"samples"``).

    Returns:
        The path written.

    Raises:
        OutputError: the file cannot be written (disk full, read-only folder, a file where a folder belongs).
    """
    target = Path(path).expanduser()
    tmp = target.parent / f".{target.name}.tmp.{os.getpid()}"
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException as e:
        try:
            tmp.unlink()
        except OSError:
            pass
        if isinstance(e, OSError) and not isinstance(e, OutputError):
            raise OutputError(f"cannot write the {what} {target}: {e.strerror or e} (the previous {what} there, if any, "
                              "is intact)") from None
        raise
    _fsync_dir(target.parent)
    return target


def save_artifact(path: PathLike, kind: str, version: int, payload: Dict[str, Any]) -> Path:
    """Write ``payload`` (tensors and plain values) atomically under the header of a ``kind`` artifact.

    The stored dict is ``payload`` with ``format = "scoresde-<kind>"``, ``version`` and ``digest`` (the
    :func:`payload_digest` of everything else). Returns the path written.
    """
    state = {k: v for k, v in payload.items() if k not in ("format", "version", "digest")}
    state = {**state, "format": f"scoresde-{kind}", "version": int(version)}
    state["digest"] = payload_digest(state)
    return atomic_write(path, lambda f: torch.save(state, f), what=kind)


def load_artifact(path: PathLike, kind: str, versions: Sequence[int], hint: str = "",
                  unchecked_versions: Sequence[int] = (), legacy: Optional[Callable[[Any], bool]] = None) -> Dict[str, Any]:
    """Read a ``kind`` artifact written by :func:`save_artifact`: safe loader, header and digest checked.

    Args:
        path: the file.
        kind: what it must be (its ``format`` is ``"scoresde-<kind>"``).
        versions: the versions this scoresde reads.
        hint: appended to errors (how to make a good file).
        unchecked_versions: old versions written before files carried a digest (read unchecked).
        legacy: recognises a file of an older layout without this header (read unchecked, returned as is).

    Raises:
        CheckpointError: missing, unreadable, of another kind or version, or damaged (digest mismatch).
    """
    f = Path(path).expanduser()
    tail = f"; {hint}" if hint else ""
    if not f.is_file():
        raise CheckpointError(f"no {kind} at {f}{tail}")
    state = safe_torch_load(f, kind)
    if legacy is not None and legacy(state):
        return state
    if not isinstance(state, dict) or state.get("format") != f"scoresde-{kind}":
        raise CheckpointError(f"{f} is not a scoresde {kind} file{tail}")
    if state.get("version") not in versions:
        raise CheckpointError(f"{f} has {kind} format version {state.get('version')!r}; this scoresde reads versions "
                              f"{tuple(versions)}{tail}")
    if state["version"] not in unchecked_versions:
        check_digest(state, f)
    return state


def check_digest(state: Dict[str, Any], f: Path) -> None:
    """Raise :class:`CheckpointError` unless ``state["digest"]`` is the digest of the rest of ``state``."""
    stored = state.get("digest")
    if not isinstance(stored, str):
        raise CheckpointError(f"{f} is corrupt: it has no integrity digest (every version-{state.get('version')} file has one)")
    try:
        actual = payload_digest({k: v for k, v in state.items() if k != "digest"})
    except CheckpointError as e:
        raise CheckpointError(f"{f} is corrupt: {e}") from None
    if actual != stored:
        raise CheckpointError(
            f"{f} is corrupt: its contents do not match the SHA-256 digest stored when it was written (the file was "
            "damaged or modified afterwards). Use another copy, or make it again"
        )


def save_checkpoint(state: Dict[str, Any], path: PathLike) -> Path:
    """Write a run checkpoint atomically to ``path`` (a file, or a directory meaning ``path/latest.pt``).

    See :func:`atomic_write`: until the rename the previous checkpoint stays complete and loadable. The
    stored dict gets the entries ``format``, ``version`` and ``digest`` (:func:`payload_digest` of the rest).

    Returns:
        The path of the written file.

    Raises:
        OutputError: the file cannot be written; the previous checkpoint is left intact.
    """
    target = checkpoint_file(path)
    state = {k: v for k, v in state.items() if k not in ("format", "version", "digest")}
    state = {**state, "format": FORMAT, "version": VERSION}
    state["digest"] = payload_digest(state)
    return atomic_write(target, lambda f: torch.save(state, f), what="checkpoint")


def safe_torch_load(f: PathLike, what: str = "checkpoint") -> Any:
    """Read a torch file with ``torch.load(weights_only=True)`` on the CPU, translating every failure.

    The archive's declared size is checked against memory first. Only tensors and plain containers are
    rebuilt: a file that names a Python callable or class is refused (never loaded another way).

    Raises:
        CheckpointError: unreadable (truncated, corrupt), or needing code execution to load.
    """
    f = Path(f)
    _check_archive_size(f)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes on pickle protocols; failures raise below
            return torch.load(f, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if _needs_code(e):
            raise CheckpointError(_refused_message(f, e)) from None
        if "Weights only load failed" in str(e):  # a pickle the safe loader cannot read: damaged, or made for the full unpickler
            raise CheckpointError(
                f"{f} is not a readable {what}: torch's safe loader rejects it ({_unpickler_reason(e)}), so it is either "
                "damaged or a pickle that needs code execution to load; it is refused"
            ) from None
        raise CheckpointError(f"{f} is not a readable {what} (truncated or corrupt?): {_unpickler_reason(e)}") from None
    except Exception as e:  # a damaged file can make the reader fail in many ways (IndexError, KeyError, ...)
        if _needs_code(e):
            raise CheckpointError(_refused_message(f, e)) from None
        raise CheckpointError(f"{f} is not a readable {what} (truncated or corrupt?): {_first_line(e)}") from None


def load_checkpoint(path: PathLike) -> Dict[str, Any]:
    """Read a run checkpoint written by :func:`save_checkpoint` without executing code from it.

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
    state = safe_torch_load(f, "checkpoint")
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{f} is not a scoresde checkpoint")
    if state.get("version") not in READABLE_VERSIONS:
        raise CheckpointError(
            f"{f} has checkpoint format version {state.get('version')!r}; this scoresde reads versions {READABLE_VERSIONS}"
        )
    if state["version"] >= 2:
        check_digest(state, f)
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


# ---------------------------------------------------------------------- models of runs
def build_sde(name: str, **kwargs: Any) -> SDE:
    """The SDE called ``name`` (``"vp"``, ``"subvp"`` or ``"ve"``) with its keyword arguments.

    Raises:
        ConfigError: unknown name or arguments.
    """
    if name not in SDES:
        raise ConfigError(f"unknown SDE {name!r}; valid names: {', '.join(SDES)}")
    try:
        return SDES[name](**kwargs)
    except TypeError as e:
        raise ConfigError(f"bad arguments for the {name!r} SDE {kwargs}: {e}") from None
    except ValueError as e:
        raise ConfigError(f"bad arguments for the {name!r} SDE: {e}") from None


def build_score_model(net: nn.Module, sde: SDE, parameterization: str) -> NetworkScore:
    """Wrap ``net`` as a score function; ``"score"`` nets have their output divided by ``std(t)``."""
    return NetworkScore(net, sde, parameterization, scale_by_std=(parameterization == "score"))


def load_model(
    checkpoint: PathLike, device: Optional[Union[str, torch.device]] = None, use_ema: bool = True
) -> Tuple[SDE, NetworkScore, TrainConfig]:
    """Load a trained model for sampling or evaluation.

    Args:
        checkpoint: a run directory or a checkpoint file.
        device: where to put the network (default CPU).
        use_ema: load the EMA weights (the ones meant for sampling) rather than the raw ones.

    Returns:
        ``(sde, score_fn, config)``: the SDE, a :class:`~scoresde.NetworkScore` in eval mode (call
        it as ``score_fn(x, t)`` with ``x`` ``[B, *config.event_shape]``, ``t`` ``[B]``) and the
        resolved :class:`TrainConfig` of the run.

    Raises:
        CheckpointError: missing, corrupt or incompatible checkpoint.
    """
    state = load_checkpoint(checkpoint)
    where = checkpoint_file(checkpoint)
    try:
        cfg = TrainConfig.from_json(state["config"])
        if not cfg.is_resolved:
            raise ConfigError("its configuration is incomplete")
        sde = build_sde(cfg.sde, **cfg.sde_kwargs)
        net = build_network(cfg.net, cfg.event_shape, **cfg.net_kwargs)
    except (ConfigError, TypeError, ValueError) as e:
        raise CheckpointError(f"{where} cannot be rebuilt: {e}") from None
    if use_ema and "state" not in state["ema"]:
        raise CheckpointError(f"{where} holds no EMA weights; load the raw weights (use_ema=False, --raw-weights)")
    weights = state["ema"]["state"] if use_ema else state["model"]
    bad = first_nonfinite(weights)
    if bad is not None:
        raise CheckpointError(f"{where} (step {state['step']}) holds non-finite {'EMA ' if use_ema else ''}weights ({bad}); refused")
    try:
        net.load_state_dict(weights)
    except (RuntimeError, KeyError, TypeError) as e:
        raise CheckpointError(f"{where}: the stored weights do not fit the network: {e}") from None
    net = net.to(torch.device(device) if device is not None else torch.device("cpu")).eval().requires_grad_(False)
    return sde, build_score_model(net, sde, cfg.parameterization), cfg


def read_config(checkpoint: PathLike) -> TrainConfig:
    """The resolved :class:`TrainConfig` stored in a checkpoint (file or run directory)."""
    state = load_checkpoint(checkpoint)
    try:
        return TrainConfig.from_json(state["config"])
    except ConfigError as e:
        raise CheckpointError(f"{checkpoint_file(checkpoint)}: {e}") from None


def first_nonfinite(tree: Any, prefix: str = "") -> Optional[str]:
    """The name of the first floating tensor in a (nested) dict/list holding NaN or inf, or ``None``."""
    if isinstance(tree, Tensor):
        return (prefix or "a tensor") if tree.is_floating_point() and not bool(torch.isfinite(tree).all()) else None
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, (list, tuple)) else ()
    for k, v in items:
        bad = first_nonfinite(v, f"{prefix}.{k}" if prefix else str(k))
        if bad is not None:
            return bad
    return None
