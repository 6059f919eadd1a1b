"""Training score networks: configuration, trainer, checkpoints, EMA and multi-process (DDP) support.

Example:
    >>> from scoresde.training import TrainConfig, Trainer, load_model
    >>> result = Trainer(TrainConfig(data="moons", steps=200, out="run")).train()  # doctest: +SKIP
    >>> sde, score_fn, config = load_model("run")  # doctest: +SKIP
"""

from .checkpoint import CheckpointError, checkpoint_file, load_checkpoint, save_checkpoint
from .config import ConfigError, TrainConfig
from .distributed import DistInfo, init_distributed
from .ema import EMA
from .logger import JSONLLogger, ProgressBar
from .trainer import (
    SDES,
    ShardedBatchSampler,
    Trainer,
    TrainResult,
    build_score_model,
    build_sde,
    learning_rate,
    load_model,
    noise_seed,
    read_config,
)

__all__ = [
    "TrainConfig", "ConfigError", "Trainer", "TrainResult", "load_model", "read_config", "build_sde",
    "build_score_model", "SDES", "learning_rate", "noise_seed", "ShardedBatchSampler", "EMA",
    "save_checkpoint", "load_checkpoint", "checkpoint_file", "CheckpointError",
    "DistInfo", "init_distributed", "ProgressBar", "JSONLLogger",
]
