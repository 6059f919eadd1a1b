"""Sharded sampling and likelihood over a ``torch.distributed`` process group (launched by ``torchrun``).

A job is a list of items (seeds to sample, data points to evaluate) cut into fixed chunks of
consecutive items. Chunk ``k`` belongs to rank ``k % world_size``. Each rank solves its chunks on its
own, with no collective inside a solve (ranks that need different numbers of adaptive steps cannot
deadlock), and writes every finished chunk atomically (a temporary file, then ``os.replace``) into a
shared directory. A restarted job skips the chunks already there. When its own chunks are done a rank
waits for the others' files; every rank keeps a heartbeat file fresh from a background thread, so a
rank that died or was stopped is named, and the others exit with :class:`ShardError`, once its
heartbeat is older than ``timeout`` seconds. A final barrier (gloo's ``monitored_barrier``, which names
a missing rank) has the same timeout. Rank 0 then reads the chunks in order and returns the result.

Because a chunk's content does not depend on which rank computed it (and, with per-sample seeds, each
item does not depend on its chunk either), the result is the same, bit for bit on CPU, for any number
of ranks, a single process included.

The shard directory must be visible to every rank (one node, or a shared filesystem).
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence, Tuple, Union

import torch
import torch.distributed as dist
from torch import Tensor

from ._validation import MAX_SEED, finite_float, integer, positive_int
from .checkpoint import CheckpointError, atomic_write, safe_torch_load
from .distributed import DistInfo, join_process_group
from .errors import OptionError, OutputError, ShardError
from .likelihood import bits_per_dim, log_likelihood
from .noise import SeedsLike, as_seeds, randn
from .score import ScoreFn
from .sde.base import SDE
from .solvers.driver import solve

__all__ = ["ShardError", "ShardInfo", "shard_info", "run_chunks", "sample_seeds", "log_likelihood_points",
           "model_digest", "model_identity"]

#: Default seconds a rank may go silent (dead or stopped) before the others give up.
DEFAULT_TIMEOUT = 600.0
_HEARTBEAT_EVERY = 1.0


#: This process's place in a sharded job (rank, world size, local rank, whether it owns the group).
ShardInfo = DistInfo


def shard_info(timeout: float = DEFAULT_TIMEOUT) -> DistInfo:
    """Join the process group of a ``torchrun`` launch (gloo: control messages only) or describe one process.

    An existing process group is used as it is. ``timeout`` bounds every collective of the group.
    """
    return join_process_group("cpu", timeout=timedelta(seconds=float(timeout)), backend="gloo")


class _Heartbeat:
    """Touches ``rank-R.alive`` in the shard directory every second from a daemon thread."""

    def __init__(self, folder: Path, rank: int):
        self.path = folder / f"rank-{rank}.alive"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.path.write_text(f"{time.time():.3f}")
            except OSError:
                pass
            self._stop.wait(_HEARTBEAT_EVERY)

    def __enter__(self) -> "_Heartbeat":
        self.path.write_text(f"{time.time():.3f}")
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


def _chunk_path(folder: Path, k: int) -> Path:
    return folder / f"chunk-{k:06d}.pt"


def _fingerprint(job: Dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(job, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_chunks(
    compute: Callable[[int, int], Dict[str, Tensor]],
    n_items: int,
    folder: Union[str, Path],
    *,
    chunk_size: int = 256,
    job: Optional[Dict[str, Any]] = None,
    timeout: float = DEFAULT_TIMEOUT,
    info: Optional[ShardInfo] = None,
    progress: Optional[Callable[[int, int], None]] = None,
) -> Optional[Dict[str, Tensor]]:
    """Run ``compute(start, stop)`` over ``[0, n_items)`` in chunks shared among the ranks; return the concatenation on rank 0.

    Args:
        compute: ``compute(start, stop) -> {name: tensor [stop - start, ...]}`` for items ``start .. stop - 1``.
        n_items: number of items.
        folder: the shard directory (created; shared by every rank).
        chunk_size: items per chunk (the unit of work, of resumption and of batch).
        job: a description of the job (options, shapes); a resumed job must match it.
        timeout: seconds a rank may go silent before the others raise :class:`ShardError`.
        info: this process's place (default: :func:`shard_info`).
        progress: called as ``progress(chunks_done, chunks_total)`` on this rank.

    Returns:
        On rank 0, ``{name: tensor [n_items, ...]}`` in item order; ``None`` on the other ranks.

    Raises:
        ShardError: a rank died or stalled, or ``folder`` holds chunks of another job.
    """
    chunk_size = positive_int(chunk_size, "chunk_size")
    timeout = finite_float(timeout, "timeout", positive=True)
    started = time.time()
    folder = _shard_folder(folder)
    info = info or shard_info(timeout)
    fp = _fingerprint({"job": job or {}, "n_items": n_items, "chunk_size": chunk_size})
    n_chunks = math.ceil(n_items / chunk_size)
    mine = list(range(info.rank, n_chunks, info.world_size))
    try:
        with _Heartbeat(folder, info.rank):
            for j, k in enumerate(mine):
                path = _chunk_path(folder, k)
                if path.exists():
                    _check_chunk(path, fp)
                else:
                    start, stop = k * chunk_size, min(n_items, (k + 1) * chunk_size)
                    out = {name: v.detach().cpu() for name, v in compute(start, stop).items()}
                    blob = {"fingerprint": fp, "start": start, "stop": stop, "data": out}
                    atomic_write(path, lambda f, blob=blob: torch.save(blob, f), what="chunk")
                if progress is not None:
                    progress(j + 1, len(mine))
            _wait_for_chunks(folder, n_chunks, info, timeout, started)
            _barrier(info, timeout)
        if info.rank != 0:
            return None
        parts = [_check_chunk(_chunk_path(folder, k), fp) for k in range(n_chunks)]
        return {name: torch.cat([p[name] for p in parts]) for name in parts[0]}
    finally:
        if info.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def _shard_folder(folder: Union[str, Path]) -> Path:
    """The shard directory, created; a path that is a file (or cannot be a folder) is refused up front."""
    folder = Path(folder).expanduser()
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"the shard folder {folder} is a file; give a folder (a new one, or one of this job)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot create the shard folder {folder}: {e.strerror or e}") from None
    return folder


def _check_chunk(path: Path, fp: str) -> Dict[str, Tensor]:
    try:
        blob = safe_torch_load(path, "chunk")
    except CheckpointError as e:  # a corrupt chunk: report it, the user deletes it
        raise ShardError(f"cannot use the finished chunk {path} ({e}); delete it and rerun to recompute it") from None
    if not isinstance(blob, dict) or blob.get("fingerprint") != fp:
        raise ShardError(
            f"{path} belongs to another job (other seeds, data, options, model or chunk size); "
            "use a fresh shard directory or delete the old one"
        )
    return blob["data"]


def _wait_for_chunks(folder: Path, n_chunks: int, info: ShardInfo, timeout: float, started: float) -> None:
    """Wait until every chunk file exists; raise if a rank whose chunks are missing has gone silent.

    Silence counts from ``started`` (when this rank began the job) at the earliest, so that heartbeat
    files left by an earlier run of the job do not count against a rank that is still starting up.
    """
    while True:
        missing = [k for k in range(n_chunks) if not _chunk_path(folder, k).exists()]
        if not missing:
            return
        now = time.time()
        for r in sorted({k % info.world_size for k in missing}):
            beat = folder / f"rank-{r}.alive"
            try:
                last = float(beat.read_text())
            except (OSError, ValueError):  # not started yet, or caught mid-write
                last = started if not beat.exists() else now
            if now - max(last, started) > timeout:
                raise ShardError(
                    f"rank {r} has not reported for more than {timeout:g} s and its chunks "
                    f"{[k for k in missing if k % info.world_size == r][:5]} are missing: it died or stalled. "
                    "Finished chunks are kept; rerun the same command to resume."
                )
        time.sleep(0.2)


def _barrier(info: ShardInfo, timeout: float) -> None:
    if info.world_size == 1 or not dist.is_initialized():
        return
    try:
        if dist.get_backend() == "gloo":
            dist.monitored_barrier(timeout=timedelta(seconds=float(timeout)), wait_all_ranks=True)
        else:
            dist.barrier()
    except RuntimeError as e:
        raise ShardError(f"ranks did not meet at the end of the job within {timeout:g} s: {str(e)[:300]}") from None


def sample_seeds(
    sde: SDE,
    score_fn: ScoreFn,
    seeds: SeedsLike,
    event_shape: Sequence[int],
    folder: Union[str, Path],
    *,
    chunk_size: int = 256,
    timeout: float = DEFAULT_TIMEOUT,
    device: Optional[Union[str, torch.device]] = None,
    info: Optional[ShardInfo] = None,
    progress: Optional[Callable[[int, int], None]] = None,
    model: Optional[str] = None,
    **solve_options: Any,
) -> Optional[Tensor]:
    """Draw one sample per seed, sharing the seeds among the ranks of the process group.

    Sample ``j`` is ``solve(..., seeds=[seeds[j]])``'s sample, whatever the number of ranks or the
    chunk size: the result equals a single-process run (bit for bit on CPU).

    Args:
        sde, score_fn: the model.
        seeds: the seeds, ``[N]`` (a range such as ``range(50_000)``, a list or a tensor).
        event_shape: the shape of one sample (e.g. ``(3, 32, 32)``).
        folder: the shard directory (shared by all ranks); a rerun resumes from it.
        chunk_size: samples per chunk and per solver batch.
        timeout: seconds before a silent rank makes the others stop (see :func:`run_chunks`).
        device: where to sample (default: the score function's device).
        model: what identifies the score function; a rerun that finds chunks of another model in
            ``folder`` stops with :class:`ShardError` instead of mixing them in. Default
            (``None``): :func:`model_identity`, the digest of the network's weights and of the score
            function's outputs on a fixed probe, so that two models (or two guidance settings) never share
            chunks.
        **solve_options: passed to :func:`scoresde.solve` (``solver``, ``steps``, ``eps``, ...), not
            ``generator`` or ``seeds``.

    Returns:
        The samples ``[N, *event_shape]`` on rank 0 (on the CPU); ``None`` on the other ranks.

    Example:
        >>> import tempfile, torch, scoresde
        >>> from scoresde.shard import sample_seeds
        >>> sde, score = scoresde.VPSDE(), (lambda x, t: -x)
        >>> with tempfile.TemporaryDirectory() as d:
        ...     x = sample_seeds(sde, score, range(10), (2,), d, chunk_size=4, solver="ddim", steps=5)
        >>> x.shape
        torch.Size([10, 2])
    """
    if "generator" in solve_options or "seeds" in solve_options:
        raise OptionError("sample_seeds draws from the given seeds; do not pass generator or seeds in solve options")
    all_seeds = as_seeds(seeds)
    event = tuple(positive_int(s, "event_shape entry") for s in event_shape)
    _shard_folder(folder)
    model = model_identity(score_fn, event, device) if model is None else str(model)

    def compute(start: int, stop: int) -> Dict[str, Tensor]:
        s = all_seeds[start:stop]
        res = solve(sde, score_fn, (stop - start, *event), seeds=s, device=device, **solve_options)
        out = {"samples": res.samples}
        if res.log_prob is not None:
            out["log_prob"] = res.log_prob
        return out

    job = {"kind": "sample", "event": event, "options": {k: repr(v) for k, v in solve_options.items()},
           "seeds": _seed_digest(all_seeds), "model": model}
    out = run_chunks(compute, all_seeds.shape[0], folder, chunk_size=chunk_size, job=job, timeout=timeout, info=info,
                     progress=progress)
    return None if out is None else out["samples"]


def log_likelihood_points(
    sde: SDE,
    score_fn: ScoreFn,
    data: Tensor,
    folder: Union[str, Path],
    *,
    seed: int = 0,
    chunk_size: int = 256,
    timeout: float = DEFAULT_TIMEOUT,
    device: Optional[Union[str, torch.device]] = None,
    info: Optional[ShardInfo] = None,
    levels: Optional[int] = None,
    progress: Optional[Callable[[int, int], None]] = None,
    model: Optional[str] = None,
    **options: Any,
) -> Optional[Dict[str, Tensor]]:
    """Per-point log-likelihood (or bits/dim) of a data set, sharing the points among the ranks.

    Point ``j`` draws its probes (and dequantization noise) from seed ``seed + j`` and is integrated
    with per-sample step control, so its result depends on ``data[j]`` and ``seed + j`` only: the
    same for any number of ranks and any chunk size.

    Args:
        data: ``[N, *event]`` float data, or integer levels with ``levels`` (then
            :func:`scoresde.bits_per_dim` is used).
        folder: the shard directory (shared by all ranks); a rerun resumes from it.
        seed: the seed of point 0.
        levels: number of discrete levels for integer data (``None``: continuous data).
        model: what identifies the score function, as in :func:`sample_seeds` (default :func:`model_identity`).
        **options: passed to :func:`scoresde.log_likelihood` (or :func:`scoresde.bits_per_dim`).

    Returns:
        On rank 0, ``{"log_prob": [N]}`` (and ``"bits_per_dim": [N]`` for discrete data) on the CPU;
        ``None`` on the other ranks.
    """
    if "generator" in options or "seeds" in options:
        raise OptionError("log_likelihood_points seeds point j with seed + j; do not pass generator or seeds")
    if not isinstance(data, Tensor) or data.ndim < 2 or data.shape[0] < 1 or data.device.type == "meta":
        raise OptionError(f"data must be a tensor [N, *event], got {type(data).__name__} {tuple(getattr(data, 'shape', ()))}")
    seed = integer(seed, "seed", minimum=0, maximum=MAX_SEED - data.shape[0], need="an integer >= 0 with seed + N <= 2**63 - 1")
    levels = integer(levels, "levels", minimum=2, allow_none=True)
    _shard_folder(folder)
    model = model_identity(score_fn, tuple(data.shape[1:]), device) if model is None else str(model)
    if options.get("method", "dopri5") == "dopri5":  # fixed-step methods share their (fixed) steps: invariant already
        options.setdefault("step_control", "per_sample")

    def compute(start: int, stop: int) -> Dict[str, Tensor]:
        xb = data[start:stop]
        xb = xb.to(device) if device is not None else xb
        seeds = torch.arange(seed + start, seed + stop, dtype=torch.int64)
        if levels:
            res = bits_per_dim(sde, score_fn, xb, levels=levels, seeds=seeds, **options)
            return {"bits_per_dim": res.bits_per_dim}
        res = log_likelihood(sde, score_fn, xb, seeds=seeds, **options)
        return {"log_prob": res.log_prob, "nfe": res.nfe_per_sample if res.nfe_per_sample is not None
                else torch.full((stop - start,), res.nfe)}

    job = {"kind": "likelihood", "shape": tuple(data.shape), "seed": seed, "levels": levels,
           "options": {k: repr(v) for k, v in options.items()}, "data": _tensor_digest(data), "model": model}
    return run_chunks(compute, data.shape[0], folder, chunk_size=chunk_size, job=job, timeout=timeout, info=info,
                      progress=progress)


def _seed_digest(seeds: Tensor) -> Tuple[int, int, int, str]:
    return (int(seeds.shape[0]), int(seeds[0]), int(seeds[-1]), hashlib.sha256(seeds.numpy().tobytes()).hexdigest()[:16])


def model_digest(module: torch.nn.Module) -> str:
    """A short hash of ``module``'s parameters and buffers (names, shapes, dtypes and values).

    Two networks with equal weights get the same digest; any change of a weight changes it. Used as
    the ``model`` of a sharded job so that a resumed job cannot mix chunks of two models.
    """
    h = hashlib.sha256()
    for name, v in sorted(module.state_dict().items()):
        v = v.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(v.shape)}:{v.dtype};".encode())
        h.update(v.view(torch.uint8).numpy().tobytes() if v.numel() else b"")
    return h.hexdigest()[:16]


def model_identity(score_fn: Any, event_shape: Sequence[int], device: Any = None) -> str:
    """What identifies a score function by its content, for cache and resume checks.

    The digest of its weights (:func:`model_digest`, when it is a module) and of its outputs on a fixed
    probe: two points drawn from a fixed seed at ``t = 0.3`` and ``0.7``, rounded to 6 significant digits
    (so a resume on another machine, whose arithmetic may differ in the last bits, still matches). The
    probe covers what the weights cannot: a function without weights, the guidance wrapped around a
    network, or another SDE's scaling.
    """
    parts = []
    if isinstance(score_fn, torch.nn.Module):
        parts.append(model_digest(score_fn))
    params = getattr(score_fn, "parameters", None)
    first = next(iter(params()), None) if callable(params) else None
    device = device if device is not None else (first.device if first is not None else "cpu")
    dtype = first.dtype if first is not None and first.dtype in (torch.float32, torch.float64) else torch.float32
    x = randn((2, *event_shape), torch.Generator().manual_seed(20231), device=device, dtype=dtype)
    t = torch.tensor([0.3, 0.7], device=x.device)
    with torch.no_grad():
        out = score_fn(x, t)
    if not isinstance(out, Tensor):
        raise OptionError(f"score_fn(x, t) must return a tensor, got {type(out).__name__}")
    out = out.detach().double().cpu()
    if not bool(torch.isfinite(out).all()):
        raise ShardError("score_fn(x, t) returned NaN or infinity on a probe point; check the score function")
    scale = torch.where(out == 0, torch.ones_like(out), 10.0 ** (torch.floor(torch.log10(out.abs())) - 5))
    parts.append(_tensor_digest(torch.round(out / scale) * scale))
    return "+".join(parts)


def _tensor_digest(x: Tensor) -> str:
    return hashlib.sha256(x.detach().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]

