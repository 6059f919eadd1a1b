"""The training loop: AdamW with warm-up and clipping, EMA, checkpoints, logs, figures, DDP.

Randomness is explicit so that a run can be resumed exactly:

* the network is initialised under ``torch.manual_seed(seed)`` (in a forked RNG);
* the data order comes from :class:`ShardedBatchSampler` and its own generator seeded with
  ``seed`` (identical on every rank: each rank takes its slice of the same global batch);
* the noise of the loss (times ``t`` and perturbations) comes from a per-rank generator seeded
  from ``(seed, rank)`` (:func:`noise_seed`);
* dropout draws from torch's global RNG, seeded per rank at the start and saved in checkpoints.

On CPU, the losses of a run resumed from a checkpoint equal bit for bit those of the
uninterrupted run.
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from .. import distributed as D
from .._utils import check_memory
from .._validation import class_count
from ..checkpoint import (
    CONFIG_FILE,
    LATEST,
    LOG_FILE,
    atomic_write,
    build_score_model,
    build_sde,
    first_nonfinite,
    load_checkpoint,
    remove_stale_temporaries,
    save_checkpoint,
)
from ..config import TrainConfig
from ..data.transforms import random_hflip
from ..errors import CheckpointError, ConfigError, DataError, NonFiniteError, OutputError, RunLockedError
from ..latent import AUTOENCODER_FILE, latent_space_of
from ..score import NetworkScore
from .ema import EMA
from .logger import JSONLLogger, ProgressBar
from .runlock import RunLock


# ---------------------------------------------------------------------- building blocks
def learning_rate(step: int, config: TrainConfig) -> float:
    """Learning rate of optimizer step ``step`` (0-based).

    ``lr * min(1, (step + 1) / warmup)``, times ``(1 + cos(pi step / steps)) / 2`` for the cosine
    schedule.
    """
    lr = float(config.lr)
    if config.warmup:
        lr *= min(1.0, (step + 1) / config.warmup)
    if config.lr_schedule == "cosine":
        lr *= 0.5 * (1.0 + math.cos(math.pi * min(step, config.steps) / config.steps))
    return lr


def noise_seed(seed: int, rank: int) -> int:
    """Seed of rank ``rank``'s loss-noise generator (distinct from the data-order seed ``seed``)."""
    return (int(seed) * 1_000_003 + 7919 * (rank + 1)) % (2**63)


def flip_seed(seed: int, rank: int) -> int:
    """Seed of rank ``rank``'s generator of random horizontal flips (``random_flip``)."""
    return (int(seed) * 1_000_037 + 15_485_863 * (rank + 1)) % (2**63)


def dropout_seed(seed: int, rank: int) -> int:
    """Seed of torch's global RNG (dropout) on rank ``rank`` during training."""
    return (int(seed) * 1_000_033 + 104_729 * (rank + 1)) % (2**63)


class ShardedBatchSampler:
    """Global batches of indices drawn epoch by epoch from random permutations, split by rank.

    Every rank holds the same generator and so the same permutation; a global batch is the next
    ``batch_size`` entries of it (continuing into the next permutation at the end of an epoch) and
    rank ``r`` takes entries ``[r b, (r + 1) b)`` with ``b = batch_size / world_size``. Hence the
    data a step sees does not depend on the number of processes.

    Args:
        n: number of examples.
        batch_size: global batch size, divisible by ``world_size``.
        rank, world_size: this process and the number of processes.
        generator: the data-order generator (CPU).
    """

    def __init__(self, n: int, batch_size: int, rank: int = 0, world_size: int = 1, generator: Optional[torch.Generator] = None):
        if n < 1:
            raise DataError("the training set is empty")
        if batch_size % world_size:
            raise ConfigError(f"batch_size={batch_size} must be divisible by the number of processes ({world_size})")
        self.n, self.batch_size, self.rank, self.world_size = int(n), int(batch_size), int(rank), int(world_size)
        self.local_batch_size = self.batch_size // self.world_size
        self.generator = generator if generator is not None else torch.Generator()
        self.perm = torch.randperm(self.n, generator=self.generator)
        self.pos = 0

    def next_indices(self) -> Tensor:
        """This rank's indices of the next global batch, ``[batch_size / world_size]`` (int64)."""
        parts, need = [], self.batch_size
        while need > 0:
            if self.pos >= self.n:
                self.perm = torch.randperm(self.n, generator=self.generator)
                self.pos = 0
            take = min(need, self.n - self.pos)
            parts.append(self.perm[self.pos : self.pos + take])
            self.pos += take
            need -= take
        idx = torch.cat(parts) if len(parts) > 1 else parts[0]
        b = self.local_batch_size
        return idx[self.rank * b : (self.rank + 1) * b]

    def state_dict(self) -> Dict[str, Any]:
        return {"generator": self.generator.get_state(), "perm": self.perm.clone(), "pos": self.pos}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        perm = state["perm"]
        if perm.shape != (self.n,):
            raise CheckpointError(
                f"the checkpoint's data order is for {perm.shape[0]} examples but the training set has {self.n}"
            )
        self.generator.set_state(state["generator"])
        self.perm = perm.clone()
        self.pos = int(state["pos"])


@dataclass
class TrainResult:
    """What :meth:`Trainer.train` returns.

    Attributes:
        step: optimizer steps done in total (including those before a resume).
        losses: the loss of every step run by this call (mean over processes), oldest first.
        checkpoint: path of ``latest.pt``.
        log_file: path of the JSONL log.
        figures: sample figures written by this call.
        seconds: wall time of this call's training loop (checkpoints and figures included).
        examples_per_s: mean training throughput of this call, all processes together, not counting
            the time spent writing checkpoints and drawing figures.
        config: the resolved configuration.
        interrupted: the run stopped early on Ctrl-C or SIGTERM (after writing a checkpoint at ``step``).
    """

    step: int
    losses: List[float]
    checkpoint: Path
    log_file: Path
    figures: List[Path] = field(default_factory=list)
    seconds: float = 0.0
    examples_per_s: float = 0.0
    config: Optional[TrainConfig] = None
    interrupted: bool = False


# ---------------------------------------------------------------------- the trainer
class Trainer:
    """Train a score network with denoising score matching.

    Args:
        config: the run's options; automatic (``None``) options are resolved from the data.
        resume: continue from ``config.out/latest.pt`` if it exists. Without it, an output
            directory that already holds a checkpoint is refused (nothing is overwritten).
        progress: report progress on stderr (``None``: a bar on a terminal, a line every 30 s otherwise; ``False``: nothing).
        dataset: use this dataset object (with ``.data``, ``.event_shape``, ``.discrete_levels``)
            instead of loading ``config.data``.
        tensorboard: a folder to write TensorBoard scalars to (loss, learning rate, gradient norm, throughput and
            evaluation figures); needs the ``tensorboard`` package.

    An interrupt (Ctrl-C, SIGINT) or SIGTERM during :meth:`train` finishes the current step, writes a checkpoint
    atomically and returns with ``interrupted`` set; ``resume=True`` continues from it (a second interrupt stops at
    once, keeping the last checkpoint).

    Launched by ``torchrun``, each process builds its own :class:`Trainer`; the network is wrapped
    in :class:`~torch.nn.parallel.DistributedDataParallel`, each process trains on its share of
    every global batch, and rank 0 alone writes checkpoints, logs and figures.

    Raises:
        ConfigError, DataError, CheckpointError: bad options, data or checkpoint.

    Attributes:
        on_checkpoint: ``None`` or a function ``f(trainer) -> dict`` called on rank 0 after every
            checkpoint; its dict is logged to ``log.jsonl`` as an ``"eval"`` event (e.g. sample quality).
    """

    on_checkpoint: Optional[Callable[["Trainer"], Optional[Dict[str, Any]]]] = None

    def __init__(self, config: TrainConfig, *, resume: bool = False, progress: Optional[bool] = None, dataset: Any = None,
                 tensorboard: Optional[str] = None):
        config.validate()
        self._tensorboard = _tensorboard_writer_class() if tensorboard is not None else None
        self.tensorboard_dir = tensorboard
        self.dist = D.init_distributed(config.device)
        self._lock: Optional[RunLock] = None
        try:
            self._lock = _lock_run_directory(Path(config.out), self.dist)
            self._setup(config, resume, progress, dataset)
        except BaseException:
            self._release()
            raise

    def _release(self, graceful: bool = False) -> None:
        """Unlock the run directory and leave the process group (end of training, or a failed setup).

        ``graceful``: every process finished; they meet at a barrier before the group is destroyed.
        """
        try:
            if self._lock is not None:
                self._lock.release()
        finally:
            D.shutdown(self.dist, graceful=graceful)

    # .................................................................. setup
    def _setup(self, config: TrainConfig, resume: bool, progress: Optional[bool], dataset: Any) -> None:
        from ..losses import DSMLoss
        from ..nets import build_network

        info = self.dist
        self.device = info.device
        ds = dataset if dataset is not None else _load_training_data(config)
        data = ds.data
        if not isinstance(data, Tensor) or data.ndim < 2 or data.shape[0] < 1:
            raise DataError(f"training data must be a tensor [N, *event] with N >= 1, got {getattr(data, 'shape', type(data))}")
        if not data.is_floating_point():
            raise DataError(f"training data must be floating point, got {data.dtype}")
        if not bool(torch.isfinite(data).all()):
            raise DataError("the training data contain NaN or infinite values")
        cfg = config.resolve(tuple(data.shape[1:]), getattr(ds, "discrete_levels", None), getattr(ds, "data_range", None))
        self.labels, cfg = _training_labels(cfg, ds)
        if cfg.sde == "ve" and "sigma_max" not in cfg.sde_kwargs:
            cfg = cfg.replace(sde_kwargs={**cfg.sde_kwargs, "sigma_max": _max_pairwise_distance(data)})
        self.out = Path(cfg.out)
        self.ckpt_path = self.out / LATEST
        self.log_path = self.out / LOG_FILE

        state, cfg = self._stored_state(cfg, resume)

        # A batch of inputs, noise and targets (with their gradients) must at least fit.
        check_memory(cfg.batch_size * math.prod(cfg.event_shape) * 4 * 8, f"training batches of {cfg.batch_size} x {tuple(cfg.event_shape)}",
                     "Use a smaller --batch-size")
        # Model: the SDE, the network (seeded), its score wrapper, the EMA and the optimizer.
        self.sde = build_sde(cfg.sde, **cfg.sde_kwargs)
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(cfg.seed)
                net = build_network(cfg.net, cfg.event_shape, **cfg.net_kwargs)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"cannot build the {cfg.net!r} network for examples of shape {tuple(cfg.event_shape)}: {e}") from None
        cfg = cfg.replace(net_kwargs=json.loads(json.dumps(net.config)))
        self.config = cfg
        self.net = net.to(self.device)
        self.ema = EMA(self.net, cfg.ema_decay)
        self.optimizer = torch.optim.AdamW(self.net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=True)
        self.loss_fn = DSMLoss(
            self.sde, weighting=cfg.weighting, importance_sampling=cfg.importance_sampling, eps=cfg.loss_eps, reduction="mean",
            p_uncond=cfg.p_uncond if cfg.conditional else 0.0, time_sampling=cfg.time_sampling,
        )
        # The same objective for health_check, kept apart from loss_fn (which callers may wrap).
        self._probe_loss = DSMLoss(
            self.sde, weighting=cfg.weighting, importance_sampling=cfg.importance_sampling, eps=cfg.loss_eps, reduction="mean"
        )

        fwd: nn.Module = self.net
        if info.distributed:
            from torch.nn.parallel import DistributedDataParallel

            fwd = DistributedDataParallel(self.net, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        if cfg.compile:
            fwd = torch.compile(fwd)
        self.train_model = build_score_model(fwd, self.sde, cfg.parameterization)

        # Data and randomness.
        self.data = data.to(self.device, torch.get_default_dtype())
        self.labels = None if self.labels is None else self.labels.to(self.device)
        self.sampler = ShardedBatchSampler(
            self.data.shape[0], cfg.batch_size, info.rank, info.world_size, torch.Generator().manual_seed(cfg.seed)
        )
        self.noise_generator = torch.Generator(device=self.device).manual_seed(noise_seed(cfg.seed, info.rank))
        self.flip_generator = torch.Generator(device=self.device).manual_seed(flip_seed(cfg.seed, info.rank))
        if cfg.random_flip and len(cfg.event_shape) != 3:
            raise ConfigError(f"random_flip flips images; these examples have shape {tuple(cfg.event_shape)}")
        torch.manual_seed(dropout_seed(cfg.seed, info.rank))  # also seeds every CUDA device
        self.step = 0
        self._stored_threads: Optional[int] = None
        self.eval_records: List[Dict[str, Any]] = []
        if state is not None:
            self._load_state(state)
        self.resumed_from = self.step if state is not None else None

        self.progress_enabled = progress
        self.figures: List[Path] = []
        self._figures_off = False
        self.good_step: Optional[int] = self.step if state is not None else None
        if info.is_main:
            try:
                self.out.mkdir(parents=True, exist_ok=True)
                remove_stale_temporaries(self.out)
                if state is not None:  # the log continues from the checkpoint: later lines belong to lost work
                    truncate_log(self.log_path, self.step)
                if cfg.latent is not None and not (self.out / AUTOENCODER_FILE).exists():  # the run keeps its autoencoder
                    src = Path(cfg.latent).read_bytes()
                    atomic_write(self.out / AUTOENCODER_FILE, lambda f: f.write(src), what="autoencoder")
                text = (json.dumps(cfg.to_dict(), indent=2, sort_keys=True) + "\n").encode()
                atomic_write(self.out / CONFIG_FILE, lambda f: f.write(text), what="configuration")
            except OSError as e:
                raise OutputError(f"cannot write to the output directory {self.out}: {e.strerror or e}") from None
        D.barrier(info)

    def _stored_state(self, cfg: TrainConfig, resume: bool) -> Tuple[Optional[Dict[str, Any]], TrainConfig]:
        """The checkpoint to resume (``None`` for a new run) and the config, checked against the stored run."""
        state = None
        if resume and not self.ckpt_path.exists():
            _check_against_saved_config(self.out, cfg)
        if self.ckpt_path.exists():
            state = load_checkpoint(self.ckpt_path)
            if not resume:
                raise CheckpointError(
                    f"{self.out} already holds a checkpoint (step {state['step']}); pass resume=True (--resume) to "
                    "continue it, or choose another output directory"
                )
            saved = TrainConfig.from_json(state["config"])
            # Keep the stored network arguments (the full net.config) when the caller gave a subset.
            if cfg.net_kwargs != saved.net_kwargs and all(saved.net_kwargs.get(k) == v for k, v in cfg.net_kwargs.items()):
                cfg = cfg.replace(net_kwargs=saved.net_kwargs)
            diffs = cfg.structural_differences(saved)
            if diffs:
                lines = "; ".join(f"{k}: checkpoint {b!r}, now {a!r}" for k, a, b in diffs)
                raise CheckpointError(f"cannot resume {self.ckpt_path}: the run's definition changed ({lines})")
            if int(state["step"]) > cfg.steps:
                raise ConfigError(f"the checkpoint is at step {state['step']}, beyond steps={cfg.steps}; raise steps to continue")
        return state, cfg

    @property
    def ema_model(self) -> NetworkScore:
        """The EMA network as a score function (what sampling and evaluation use)."""
        return build_score_model(self.ema.module, self.sde, self.config.parameterization)

    # .................................................................. checkpoints
    def _rank_state(self) -> Dict[str, Any]:
        cuda = torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None
        return {"torch": torch.get_rng_state(), "cuda": cuda, "noise": self.noise_generator.get_state(),
                "flip": self.flip_generator.get_state()}

    def state_dict(self) -> Dict[str, Any]:
        """Everything a checkpoint holds (collective under DDP: every rank must call it)."""
        ranks = D.all_gather_objects(self._rank_state(), self.dist)
        sampler = self.sampler.state_dict()
        return {
            "step": self.step,
            "config": self.config.to_json(),
            "model": {k: v.detach().cpu() for k, v in self.net.state_dict().items()},
            "ema": {**self.ema.state_dict(), "state": {k: v.detach().cpu() for k, v in self.ema.module.state_dict().items()}},
            "optimizer": _to_cpu(self.optimizer.state_dict()),
            "rng": {
                "world_size": self.dist.world_size,
                "data": sampler["generator"],
                "sampler_perm": sampler["perm"],
                "sampler_pos": sampler["pos"],
                "ranks": ranks,
            },
            "metadata": {"torch_version": str(torch.__version__), "time": time.time(), "threads": torch.get_num_threads()},
        }

    def _load_state(self, state: Dict[str, Any]) -> None:
        for what, tensors in (("weights", state["model"]), ("EMA weights", state["ema"].get("state", {})),
                              ("optimizer state", state.get("optimizer", {}))):
            bad = first_nonfinite(tensors)
            if bad is not None:
                raise CheckpointError(
                    f"{self.ckpt_path} (step {state['step']}) holds non-finite {what} ({bad}); it cannot be resumed. "
                    "Restart the run in a new directory, or from an earlier copy of the checkpoint"
                )
        try:
            self.net.load_state_dict(state["model"])
        except RuntimeError as e:
            raise CheckpointError(f"the checkpoint's weights do not fit the network: {e}") from None
        self.ema.load_state_dict(state["ema"])
        try:
            self.optimizer.load_state_dict(state["optimizer"])
            rng = state["rng"]
            self.sampler.load_state_dict({"generator": rng["data"], "perm": rng["sampler_perm"], "pos": rng["sampler_pos"]})
            ranks = rng["ranks"]
        except (KeyError, ValueError, TypeError, RuntimeError) as e:
            raise CheckpointError(f"the checkpoint's optimizer or RNG state is unusable: {e}") from None
        self.step = int(state["step"])
        threads = (state.get("metadata") or {}).get("threads")
        self._stored_threads = int(threads) if isinstance(threads, int) and threads > 0 else None
        r = self.dist.rank
        if int(rng["world_size"]) == self.dist.world_size and r < len(ranks):
            mine = ranks[r]
            torch.set_rng_state(mine["torch"])
            if self.device.type == "cuda" and mine.get("cuda") is not None:
                torch.cuda.set_rng_state(mine["cuda"], self.device)
            self.noise_generator.set_state(mine["noise"])
            if mine.get("flip") is not None:
                self.flip_generator.set_state(mine["flip"])
        else:
            # A different number of processes: the data order continues exactly, the noise cannot.
            self.noise_generator.manual_seed(noise_seed(self.config.seed + self.step, r))
            torch.manual_seed(dropout_seed(self.config.seed + self.step, r))
            if self.dist.is_main:
                print(
                    f"scoresde: note: resuming a {rng['world_size']}-process run with {self.dist.world_size} process(es); "
                    "the training noise is re-seeded, so losses will differ from an uninterrupted run",
                    file=sys.stderr,
                )

    def health_check(self) -> Optional[str]:
        """Why the current weights must not become the last good checkpoint, or ``None`` if they may.

        The weights, the EMA weights and the optimizer state must be finite, and the weights must
        give a finite loss on a fixed probe batch (the first ``batch_size`` training examples, noise
        from a generator seeded with ``seed``, evaluation mode). Weights of ``1e30`` after a huge
        learning rate are finite but give a NaN loss; they are caught by the second test. Neither
        test touches the training random streams, so resumed runs stay exact.
        """
        for what, tensors in (("weights", self.net.state_dict()), ("EMA weights", self.ema.module.state_dict()),
                              ("optimizer state", self.optimizer.state_dict()["state"])):
            bad = first_nonfinite(tensors)
            if bad is not None:
                return f"non-finite {what} ({bad})"
        was_training = self.net.training
        self.net.eval()
        try:
            with torch.no_grad():
                x0 = self.data[: self.config.batch_size]
                gen = torch.Generator(device=self.device).manual_seed(self.config.seed)
                loss = float(self._probe_loss(build_score_model(self.net, self.sde, self.config.parameterization), x0, generator=gen))
        finally:
            self.net.train(was_training)
        return None if math.isfinite(loss) else f"a {loss} loss on the probe batch"

    def save(self) -> Optional[Path]:
        """Write ``latest.pt`` atomically (rank 0; collective under DDP). Returns the path on rank 0.

        Raises:
            NonFiniteError: the weights fail :meth:`health_check`; nothing is written and the last
                good checkpoint (named in the message, with its step) is kept.
        """
        problem = self.health_check()
        if problem is not None:
            raise NonFiniteError(
                f"the weights at step {self.step} have {problem}; they are not saved and {self._last_good_text()}. "
                "Try a smaller learning rate (--lr), gradient clipping or checking the data"
            )
        state = self.state_dict()
        path = save_checkpoint(state, self.ckpt_path) if self.dist.is_main else None
        D.barrier(self.dist)
        self.good_step = self.step
        return path

    def _last_good_text(self) -> str:
        if self.good_step is None:
            return "no checkpoint was written"
        return f"the last good checkpoint, {self.ckpt_path}, is kept (step {self.good_step}: finite weights and loss)"

    # .................................................................. training
    def train(self) -> TrainResult:
        """Run optimizer steps up to ``config.steps``; checkpoint, log and draw samples on the way.

        Ctrl-C (SIGINT) or SIGTERM finishes the current step, writes a checkpoint and returns early with
        ``interrupted`` set (a second one stops at once; the last checkpoint is kept).

        Returns:
            A :class:`TrainResult`.

        Raises:
            NonFiniteError: the loss or gradient norm became NaN/infinite. The last checkpoint
                written before that (if any) is left untouched.
        """
        ok = False
        try:
            with _StopRequests() as stop:
                result = self._train(stop)
            ok = True
            return result
        except Exception as e:
            if self.dist.distributed and D.is_collective_failure(e):
                raise D.collective_failure(e) from None
            raise
        finally:
            self._release(graceful=ok)

    def _train(self, stop: "_StopRequests") -> TrainResult:
        cfg, main = self.config, self.dist.is_main
        loop = _Loop(self, JSONLLogger(self.log_path, enabled=main),
                     ProgressBar(cfg.steps, self.step, enabled=(self.progress_enabled if main else False)),
                     self._tensorboard(self.tensorboard_dir) if self._tensorboard is not None and main else None)
        start_step, interrupted = self.step, False
        if self.resumed_from is not None:
            loop.log.write({"event": "resume", "step": self.step, "time": time.time()})
        try:
            self.net.train()
            while self.step < cfg.steps:
                loop.pending.append(self._step())
                last = self.step == cfg.steps
                interrupted = not last and loop.stop_agreed(stop)
                ckpt_due = last or interrupted or self.step % cfg.checkpoint_every == 0
                if ckpt_due or self.step % loop.flush_every == 0 or self.step % cfg.log_every == 0:
                    loop.flush()
                if self.step % cfg.log_every == 0 or last or interrupted:
                    loop.write_log()
                if ckpt_due or self._figure_due(last):
                    loop.aside(lambda: self._checkpoint_and_figures(loop.log, ckpt_due, last))
                if interrupted:
                    loop.log.write({"event": "interrupted", "step": self.step, "signal": stop.name, "time": time.time()})
                    break
            loop.flush()
            loop.write_log()
        finally:
            loop.close()
        seconds = time.perf_counter() - loop.t_start
        done = self.step - start_step
        return TrainResult(
            step=self.step, losses=loop.losses, checkpoint=self.ckpt_path, log_file=self.log_path,
            figures=list(self.figures), seconds=seconds,
            examples_per_s=done * cfg.batch_size / (seconds - loop.aside_total) if seconds > loop.aside_total else 0.0,
            config=cfg, interrupted=interrupted,
        )

    def _step(self) -> Tuple[Tensor, Tensor]:
        """One optimizer step on the next batch; returns the (device) loss and gradient norm."""
        cfg = self.config
        idx = self.sampler.next_indices().to(self.device)
        x0 = self.data[idx]
        if cfg.random_flip:
            x0 = random_hflip(x0, self.flip_generator)
        label_kw = {} if self.labels is None else {"y": self.labels[idx]}
        lr = learning_rate(self.step, cfg)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        with self._autocast():
            loss = self.loss_fn(self.train_model, x0, generator=self.noise_generator, **label_kw)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self._params, cfg.grad_clip if cfg.grad_clip > 0 else math.inf)
        self.optimizer.step()
        self.ema.update(self.net)
        self.step += 1
        return loss.detach(), grad_norm.detach()

    def _autocast(self) -> Any:
        if self.config.precision == "bf16":
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @property
    def _params(self) -> List[Tensor]:
        return [p for p in self.net.parameters() if p.requires_grad]

    def _checkpoint_and_figures(self, log: "JSONLLogger", ckpt_due: bool, last: bool) -> None:
        if ckpt_due:
            try:
                self.save()
            except NonFiniteError as e:
                log.write({"event": "nonfinite", "step": self.step, "reason": str(e), "time": time.time()})
                raise
            record = self.on_checkpoint(self) if self.on_checkpoint is not None and self.dist.is_main else None
            if record:
                log.write({"event": "eval", "step": self.step, **record})
                self.eval_records.append({"step": self.step, **record})
        if self._figure_due(last):
            self._draw_samples()

    def step_work(self) -> Callable[[], None]:
        """One unit of this run's work for a thread-count measurement (:func:`scoresde.threads.choose_threads`).

        A forward and backward pass of the loss on one batch, with its own noise, in a forked RNG, the
        gradients discarded: the run's weights, optimizer and random streams are untouched.
        """
        x0 = self.data[: self.config.batch_size]
        label_kw = {} if self.labels is None else {"y": self.labels[: self.config.batch_size]}
        devices = [self.device] if self.device.type == "cuda" else []

        def work() -> None:
            with torch.random.fork_rng(devices=devices):
                gen = torch.Generator(device=self.device).manual_seed(0)
                with self._autocast():
                    loss = self._probe_loss(self.train_model, x0, generator=gen, **label_kw)
                loss.backward()
                self.optimizer.zero_grad(set_to_none=True)

        return work

    @property
    def stored_threads(self) -> Optional[int]:
        """The CPU thread count of the run this one resumes (so that it repeats bit for bit), if recorded."""
        return self._stored_threads

    def _figure_due(self, last: bool) -> bool:
        every = self.config.sample_every
        if every < 0 or self._figures_off:
            return False
        return last or (every > 0 and self.step % every == 0)

    def _draw_samples(self) -> None:
        """Sample with the EMA weights and save ``samples_<step>.png`` (rank 0)."""
        if not self.dist.is_main:
            return
        from ..plotting import save_samples_figure

        samples = self.sample_preview()
        path = self.out / f"samples_{self.step:07d}.png"
        ref = self.data[: samples.shape[0]].cpu() if samples.ndim == 2 else None
        rng = tuple(self.config.data_range) if self.config.data_range else (-1.0, 1.0)
        try:
            save_samples_figure(
                samples, path, title=f"{self.config.data}: EMA samples at step {self.step}", reference=ref, data_range=rng
            )
        except ConfigError as e:  # matplotlib missing: train on without figures
            print(f"scoresde: note: {e}; no sample figures", file=sys.stderr)
            self._figures_off = True
            return
        self.figures.append(path)

    @torch.no_grad()
    def sample_preview(self, n: Optional[int] = None, steps: int = 100) -> Tensor:
        """A fixed-seed batch of EMA samples for figures: ``[n, *event]`` on CPU.

        DDIM with ``steps`` steps from the EMA weights; ``n`` defaults to 500 points for vector
        data and 36 images.
        """
        from ..solvers import sample

        is_image = len(self.config.event_shape) == 3
        n = n or (36 if is_image else 500)
        gen = torch.Generator(device=self.device).manual_seed(self.config.seed)
        x = sample(self.sde, self.ema_model, (n, *self.config.event_shape), solver="ddim", steps=steps, generator=gen, device=self.device)
        return x.cpu()


# ---------------------------------------------------------------------- the loop's bookkeeping
class _Loop:
    """What the training loop keeps besides the model: losses to read back, the log window, the progress bar."""

    def __init__(self, trainer: Trainer, log: JSONLLogger, bar: ProgressBar, tensorboard: Any):
        self.trainer, self.log, self.bar, self.tb = trainer, log, bar, tensorboard
        self.losses: List[float] = []
        self.pending: List[Tuple[Tensor, Tensor]] = []
        # Read losses back every step on CPU (free); on CUDA only every few steps (no sync per step).
        cfg = trainer.config
        self.flush_every = 1 if trainer.device.type == "cpu" else max(1, min(cfg.log_every, 50))
        self.t_start = time.perf_counter()
        self.window: Dict[str, Any] = {"t": self.t_start, "steps": 0, "loss": 0.0, "grad_norm": 0.0}
        self.aside_total = 0.0

    def flush(self) -> None:
        """Read the pending losses back (mean over processes), check them and update the bar."""
        t, info, cfg = self.trainer, self.trainer.dist, self.trainer.config
        if not self.pending:
            return
        stacked = torch.stack([torch.stack([l.float(), g.float()]) for l, g in self.pending])  # [k, 2]
        vals = D.all_reduce_mean(stacked, info).cpu().tolist()
        first = t.step - len(self.pending) + 1
        self.pending.clear()
        for i, (l, g) in enumerate(vals):
            if not (math.isfinite(l) and math.isfinite(g)):
                what = "loss" if not math.isfinite(l) else "gradient norm"
                self.log.write({"event": "nonfinite", "step": first + i, "loss": l, "grad_norm": g, "time": time.time()})
                raise NonFiniteError(
                    f"the {what} became {l if what == 'loss' else g} at step {first + i}; training stopped and "
                    f"{t._last_good_text()}. Try a smaller learning rate (--lr), gradient clipping or checking the data"
                )
            self.losses.append(l)
            self.window["loss"] += l
            self.window["grad_norm"] += g
            self.window["steps"] += 1
        rate = self.window["steps"] * cfg.batch_size / max(time.perf_counter() - self.window["t"], 1e-9)
        self.bar.update(t.step, vals[-1][0], rate)

    def write_log(self) -> None:
        """One ``log.jsonl`` line (and TensorBoard scalars) for the steps since the last one."""
        w, t = self.window, self.trainer
        if w["steps"] == 0:
            return
        now, n = time.perf_counter(), w["steps"]
        record = {"step": t.step, "loss": w["loss"] / n, "lr": t.optimizer.param_groups[0]["lr"],
                  "grad_norm": w["grad_norm"] / n, "examples_per_s": n * t.config.batch_size / max(now - w["t"], 1e-9),
                  "time": round(now - self.t_start, 4)}
        self.log.write(record)
        if self.tb is not None:
            for key in ("loss", "lr", "grad_norm", "examples_per_s"):
                self.tb.add_scalar(f"train/{key}", record[key], t.step)
        w.update(t=now, steps=0, loss=0.0, grad_norm=0.0)

    def aside(self, work: Callable[[], None]) -> None:
        """Run ``work`` (checkpoints, figures, evaluation) outside the throughput figures."""
        t0 = time.perf_counter()
        n_before = len(self.trainer.eval_records)
        work()
        if self.tb is not None:
            for record in self.trainer.eval_records[n_before:]:
                for key, v in record.items():
                    if isinstance(v, (int, float)) and key != "step":
                        self.tb.add_scalar(f"eval/{key}", v, self.trainer.step)
        spent = time.perf_counter() - t0
        self.window["t"] += spent
        self.aside_total += spent

    def stop_agreed(self, stop: "_StopRequests") -> bool:
        """Whether to stop after this step: an interrupt seen here or (under DDP) by any process."""
        info = self.trainer.dist
        if not info.distributed:
            return stop.requested
        if self.trainer.step % self.flush_every:
            return False
        flag = torch.tensor([1.0 if stop.requested else 0.0], device=self.trainer.device)
        return bool(D.all_reduce_mean(flag, info).item() > 0)

    def close(self) -> None:
        self.bar.close()
        self.log.close()
        if self.tb is not None:
            self.tb.close()


class _StopRequests:
    """Turns the first SIGINT/SIGTERM during training into a request to stop after the current step.

    A second signal raises :class:`KeyboardInterrupt` at once. The previous handlers are restored on exit.
    Outside the main thread (where handlers cannot be installed) signals keep their default behaviour.
    """

    SIGNALS = ("SIGINT", "SIGTERM")

    def __init__(self) -> None:
        self.requested, self.name = False, None
        self._previous: Dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested, self.name = True, signal.Signals(signum).name
        print(f"\nscoresde: {self.name}: finishing the current step and writing a checkpoint "
              "(again to stop at once)", file=sys.stderr, flush=True)

    def __enter__(self) -> "_StopRequests":
        if threading.current_thread() is threading.main_thread():
            for name in self.SIGNALS:
                sig = getattr(signal, name, None)
                if sig is not None:
                    self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _tensorboard_writer_class() -> Any:
    """TensorBoard's ``SummaryWriter``, or a one-line error saying how to install it."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError("--tensorboard needs the tensorboard package: pip install tensorboard") from None
    return SummaryWriter


def truncate_log(path: Path, step: int) -> int:
    """Drop the lines of a run's ``log.jsonl`` written after ``step`` (a resume from the checkpoint at ``step``).

    Rewrites the file atomically; returns how many lines were dropped. Lines that cannot be read are kept.
    """
    if not path.is_file():
        return 0
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    kept = []
    for line in lines:
        try:
            later = int(json.loads(line).get("step", 0)) > step
        except (ValueError, TypeError, AttributeError):
            later = False
        if not later:
            kept.append(line)
    if len(kept) != len(lines):
        atomic_write(path, lambda f: f.write("".join(kept).encode("utf-8")), what="log")
    return len(lines) - len(kept)


# ---------------------------------------------------------------------- helpers
def _lock_run_directory(out: Path, info: D.DistInfo) -> Optional[RunLock]:
    """Rank 0 locks ``out`` (:class:`~scoresde.training.runlock.RunLock`); every rank raises if it could not."""
    lock, error = None, None
    if info.is_main:
        try:
            lock = RunLock(out).acquire()
        except (RunLockedError, OutputError) as e:
            error = e
    if info.distributed:
        message = D.broadcast_object(None if error is None else str(error), info)
        if message is not None and error is None:
            raise RunLockedError(message)
    if error is not None:
        raise error
    return lock


def _check_against_saved_config(out: Path, cfg: TrainConfig) -> None:
    """Resuming a run that has no checkpoint yet: its ``config.json`` must define the same run as ``cfg``."""
    path = out / CONFIG_FILE
    if not path.is_file():
        return
    try:
        saved = TrainConfig.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, ConfigError) as e:
        raise CheckpointError(f"cannot resume {out}: its {CONFIG_FILE} is unreadable ({e}); use a new output directory") from None
    if cfg.net_kwargs != saved.net_kwargs and all(saved.net_kwargs.get(k) == v for k, v in cfg.net_kwargs.items()):
        cfg = cfg.replace(net_kwargs=saved.net_kwargs)  # the caller gave a subset of the stored network arguments
    diffs = cfg.structural_differences(saved) if saved.is_resolved else []
    if diffs:
        lines = "; ".join(f"{k}: {CONFIG_FILE} {b!r}, now {a!r}" for k, a, b in diffs)
        raise CheckpointError(
            f"cannot resume {out}: it has no checkpoint yet and its {CONFIG_FILE} defines another run ({lines}). "
            "Resume with the run's own options, or use a new output directory"
        )


def _load_training_data(config: TrainConfig) -> Any:
    from ..data import Dataset, get_dataset

    ds = get_dataset(
        config.data, data_dir=config.data_dir, split="train", n=config.n_train,
        generator=torch.Generator().manual_seed(config.seed), image_size=config.image_size,
    )
    if config.latent is None:
        return ds
    space = latent_space_of(config)
    if tuple(ds.event_shape) != space.image_shape:
        raise DataError(f"the autoencoder {config.latent} takes images of shape {space.image_shape} but {config.data!r} "
                        f"holds images of shape {tuple(ds.event_shape)}; train an autoencoder on this data")
    codes = space.encode(ds.data, torch.Generator().manual_seed(config.seed)).cpu()
    return Dataset(f"codes of {config.data}", codes, labels=ds.labels)



def _training_labels(cfg: TrainConfig, ds: Any) -> Tuple[Optional[Tensor], TrainConfig]:
    """The labels of a class-conditional run (checked once, here) and the config with ``num_classes`` set."""
    if not cfg.conditional:
        return None, cfg
    labels = getattr(ds, "labels", None)
    if labels is None:
        raise DataError(
            f"conditional training needs labelled data, and {cfg.data!r} has no labels; use mnist, fashion-mnist, a toy "
            "set with components (moons, checkerboard, rings, gmm) or an .npz file with arrays x and y"
        )
    labels = torch.as_tensor(labels)
    if labels.is_floating_point() or labels.ndim != 1 or labels.shape[0] != ds.data.shape[0]:
        raise DataError(f"the labels must be integers, one per example ({ds.data.shape[0]}), got {tuple(labels.shape)} {labels.dtype}")
    if bool((labels < 0).any()):
        raise DataError(f"class labels must be 0, 1, ..., K-1; got a negative label {int(labels.min())}")
    k = class_count(int(labels.max()) + 1, "number of classes", error=DataError)
    given = cfg.net_kwargs.get("num_classes")
    if given is not None and int(given) < k:
        raise ConfigError(f"net_kwargs num_classes={given} but the data has labels up to {k - 1}")
    if given is None:
        cfg = cfg.replace(net_kwargs={**cfg.net_kwargs, "num_classes": k})
    return labels.long(), cfg


def _max_pairwise_distance(data: Tensor, max_points: int = 2000) -> float:
    """Largest Euclidean distance between two training examples (on at most ``max_points``), 3 digits."""
    x = data[:max_points].reshape(min(max_points, data.shape[0]), -1).double()
    d = float(torch.cdist(x, x).max())
    if d <= 0:
        raise DataError("all training examples are identical; a VE SDE needs spread-out data")
    return float(f"{d:.3g}")


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_cpu(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_to_cpu(v) for v in obj)
    return obj
