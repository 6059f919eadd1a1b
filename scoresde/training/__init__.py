"""Training score networks: the trainer, EMA and multi-process (DDP) support.

The run configuration (:mod:`scoresde.config`), checkpoints and model loading (:mod:`scoresde.checkpoint`)
and the process group (:mod:`scoresde.distributed`) live beside training and are re-exported here.

Example:
    >>> from scoresde.training import TrainConfig, Trainer, load_model
    >>> result = Trainer(TrainConfig(data="moons", steps=200, out="run")).train()  # doctest: +SKIP
    >>> sde, score_fn, config = load_model("run")  # doctest: +SKIP
"""

from ..checkpoint import (
    SDES,
    build_score_model,
    build_sde,
    checkpoint_file,
    load_checkpoint,
    load_model,
    read_config,
    save_checkpoint,
)
from ..config import TrainConfig
from ..distributed import DistInfo, init_distributed
from ..errors import CheckpointError, ConfigError
from .ema import EMA
from .logger import JSONLLogger, ProgressBar
from .trainer import ShardedBatchSampler, Trainer, TrainResult, learning_rate, noise_seed

__all__ = [
    "TrainConfig", "ConfigError", "Trainer", "TrainResult", "load_model", "read_config", "build_sde",
    "build_score_model", "SDES", "learning_rate", "noise_seed", "ShardedBatchSampler", "EMA",
    "save_checkpoint", "load_checkpoint", "checkpoint_file", "CheckpointError",
    "DistInfo", "init_distributed", "ProgressBar", "JSONLLogger",
]
