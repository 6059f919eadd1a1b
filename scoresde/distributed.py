"""Multi-process training through ``torch.distributed`` (DDP), launched by ``torchrun``.

Nothing here starts processes: ``torchrun --nproc_per_node N -m scoresde train ...`` (or
``python -m torch.distributed.run``) sets ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT``; :func:`init_distributed` reads them, picks the device
(``cuda:LOCAL_RANK`` or CPU) and joins the process group with NCCL on CUDA and gloo on CPU.
Without those variables everything runs in one process.

Every collective waits at most ``$SCORESDE_DIST_TIMEOUT`` seconds (default 300) for the other
processes: a stalled or dead rank makes the others stop with :class:`~scoresde.errors.DistributedError`
instead of blocking forever.
"""

from __future__ import annotations

import datetime
import os
import sys
from dataclasses import dataclass, field
from typing import Any, List, Optional

import torch
import torch.distributed as dist

from .errors import ConfigError, DistributedError

#: Environment variable: seconds a collective operation may wait for the other processes.
TIMEOUT_ENV = "SCORESDE_DIST_TIMEOUT"
#: Default collective timeout in seconds.
DEFAULT_TIMEOUT_S = 300.0


@dataclass
class DistInfo:
    """Where this process stands in a (possibly single-process) run.

    Attributes:
        rank: global rank in ``[0, world_size)``.
        world_size: number of processes.
        local_rank: rank on this node (selects the CUDA device).
        device: the device this process trains on.
        owns_group: whether :func:`init_distributed` created the process group (and so should
            destroy it).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    owns_group: bool = False

    @property
    def distributed(self) -> bool:
        """Whether more than one process takes part."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0, the process that writes checkpoints, logs and figures."""
        return self.rank == 0


def launched_by_torchrun() -> bool:
    """Whether the environment variables of a ``torchrun`` launch are set."""
    return all(k in os.environ for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK"))


def resolve_device(device: str, local_rank: int = 0) -> torch.device:
    """Turn ``"auto"``/``"cpu"``/``"cuda"``/``"cuda:N"`` into a device; under DDP ``"cuda"`` means ``cuda:LOCAL_RANK``."""
    import re

    if isinstance(device, torch.device):
        device = str(device)
    if not isinstance(device, str) or not re.fullmatch(r"auto|cpu|cuda(:\d{1,6})?", device):
        raise ConfigError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {device!r} was asked for but CUDA is not available; use --device cpu")
        if device == "cuda":
            device = f"cuda:{local_rank}"
        idx = torch.device(device).index or 0
        if idx >= torch.cuda.device_count():
            raise ConfigError(f"device {device!r} does not exist: {torch.cuda.device_count()} CUDA device(s) visible")
    elif device != "cpu":
        raise ConfigError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N")
    return torch.device(device)


def collective_timeout() -> datetime.timedelta:
    """The collective timeout: ``$SCORESDE_DIST_TIMEOUT`` seconds, default :data:`DEFAULT_TIMEOUT_S`.

    Raises:
        ConfigError: the variable is not a positive number.
    """
    raw = os.environ.get(TIMEOUT_ENV)
    if raw is None or raw == "":
        return datetime.timedelta(seconds=DEFAULT_TIMEOUT_S)
    try:
        seconds = float(raw)
    except ValueError:
        seconds = float("nan")
    if not (seconds > 0 and seconds < 1e9):
        raise ConfigError(f"${TIMEOUT_ENV} must be a positive number of seconds, got {raw!r}")
    return datetime.timedelta(seconds=seconds)


def is_collective_failure(e: BaseException) -> bool:
    """Whether ``e`` comes from a collective that timed out or lost a peer."""
    if isinstance(e, getattr(dist, "DistError", ())):
        return True
    text = str(e)
    return isinstance(e, RuntimeError) and any(
        k in text for k in ("Timed out", "timed out", "Connection closed by peer", "Connection reset by peer", "NCCL error")
    )


def collective_failure(e: BaseException) -> DistributedError:
    """A one-line :class:`DistributedError` for a failed collective."""
    first = (str(e).strip().splitlines() or [type(e).__name__])[0]
    return DistributedError(
        f"a training process did not answer within the collective timeout ({collective_timeout().total_seconds():g} s, "
        f"${TIMEOUT_ENV}) or left the run: {first}. Check the other processes' output; the last checkpoint is intact"
    )


def join_process_group(device: str = "cpu", timeout: Optional[datetime.timedelta] = None,
                       backend: Optional[str] = None) -> DistInfo:
    """The one process-group set-up: join the ``torchrun`` group if launched by it, else describe one process.

    Args:
        device: the configured device (``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``); under torchrun
            ``"cuda"`` means ``cuda:LOCAL_RANK``.
        timeout: bound on every collective of the group (default: :func:`collective_timeout`).
        backend: ``"gloo"`` or ``"nccl"`` (default: NCCL for a CUDA device, gloo otherwise).

    Returns:
        A :class:`DistInfo`. A group that already exists (the caller set it up) is used as it is and
        left for the caller to destroy (``owns_group`` False).
    """
    if not launched_by_torchrun() and not (dist.is_available() and dist.is_initialized()):
        return DistInfo(device=resolve_device(device))
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
        local_rank = int(os.environ.get("LOCAL_RANK", rank))
        return DistInfo(rank, world, local_rank, resolve_device(device, local_rank), owns_group=False)
    rank, world, local_rank = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"])
    dev = resolve_device(device, local_rank)
    if world == 1:
        return DistInfo(rank, world, local_rank, dev)
    if not dist.is_available():
        raise ConfigError("this torch build has no torch.distributed support; run without torchrun")
    timeout = timeout or collective_timeout()
    backend = backend or ("nccl" if dev.type == "cuda" else "gloo")
    if backend == "nccl":
        torch.cuda.set_device(dev)
        dist.init_process_group("nccl", device_id=dev, timeout=timeout)
    else:
        dist.init_process_group("gloo", timeout=timeout)
    return DistInfo(rank, world, local_rank, dev, owns_group=True)


def init_distributed(device: str = "auto") -> DistInfo:
    """The process group of a training run (NCCL on CUDA, gloo on CPU): :func:`join_process_group`."""
    return join_process_group(device)


def shutdown(info: DistInfo, graceful: bool = False) -> None:
    """Destroy the process group if :func:`init_distributed` created it.

    With ``graceful`` (every process finished its work) the processes first meet at a barrier, so
    none tears down the group (and the rendezvous store rank 0 hosts) while another still uses it.
    Errors during tear-down are reported as a note: they must not turn a finished run into a failure.
    """
    if not (info.owns_group and dist.is_initialized()):
        return
    try:
        if graceful:
            barrier(info)
    except Exception as e:  # a peer already gone: nothing left to synchronise
        print(f"scoresde: note: processes did not meet before shutdown ({str(e).splitlines()[0] if str(e) else e})", file=sys.stderr)
    try:
        dist.destroy_process_group()
    except Exception as e:
        print(f"scoresde: note: tearing down the process group failed ({e})", file=sys.stderr)


def barrier(info: DistInfo) -> None:
    """Wait for every process (no-op in a single process)."""
    if info.distributed:
        if info.device.type == "cuda":
            dist.barrier(device_ids=[info.device.index])
        else:
            dist.barrier()


def all_reduce_mean(x: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Mean of ``x`` over processes (``x`` itself in a single process). ``x`` is not modified."""
    if not info.distributed:
        return x
    y = x.clone()
    dist.all_reduce(y, op=dist.ReduceOp.SUM)
    return y / info.world_size


def all_gather_objects(obj: Any, info: DistInfo) -> List[Any]:
    """``[obj of rank 0, obj of rank 1, ...]`` (a one-element list in a single process)."""
    if not info.distributed:
        return [obj]
    out: List[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, info: DistInfo, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every process."""
    if not info.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]
