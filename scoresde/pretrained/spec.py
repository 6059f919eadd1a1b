"""One entry for every kind of model the command line and the evaluation tools take.

A *model spec* names where a model comes from:

* ``PATH``: a run directory (or its checkpoint file) trained by scoresde;
* ``score_sde:PATH``: a score_sde_pytorch checkpoint, with its config (a published name or a JSON file);
* ``diffusers:PATH``: a diffusers pipeline folder (the ``[diffusers]`` extra);
* ``safetensors:PATH``: a run exported with ``scoresde export RUN --safetensors PATH``.

:func:`load_model_spec` turns any of them into the same :class:`~scoresde.pretrained.base.PretrainedModel`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Union

import torch

from ..checkpoint import load_model
from ..errors import OptionError
from .base import PathLike, PretrainedModel
from .score_sde import from_score_sde

__all__ = ["SPEC_PREFIXES", "load_model_spec", "from_run"]

#: The prefixes of a model spec besides a plain run path.
SPEC_PREFIXES = ("score_sde:", "diffusers:", "safetensors:")


def from_run(checkpoint: PathLike, *, use_ema: bool = True, device: Optional[Union[str, torch.device]] = None) -> PretrainedModel:
    """A run trained by scoresde (a run directory or checkpoint file) as a :class:`PretrainedModel`.

    Its ``run_config`` is the run's :class:`~scoresde.config.TrainConfig`; ``score_fn`` is the
    :class:`~scoresde.NetworkScore` of the EMA (or raw) weights.
    """
    sde, score, cfg = load_model(checkpoint, device=device, use_ema=use_ema)
    rng = tuple(float(v) for v in cfg.data_range) if cfg.data_range else (-1.0, 1.0)
    space, levels = None, cfg.discrete_levels
    if cfg.latent is not None:
        from ..latent import latent_space_of

        path = Path(checkpoint)
        space, levels = latent_space_of(cfg, path if path.is_dir() else path.parent).to(device or "cpu"), 256
    return PretrainedModel(
        sde=sde, score_fn=score, network=score.net, event_shape=tuple(int(s) for s in cfg.event_shape),
        centered=rng == (-1.0, 1.0), data_range=rng, source=f"run {checkpoint}", num_classes=score.num_classes,
        config=cfg.to_dict(), info={"weights": "ema" if use_ema else "model"}, data=cfg.data,
        discrete_levels=levels, run_config=cfg, latent=space,
    )


def load_model_spec(spec: Any, config: Optional[PathLike] = None, *, use_ema: bool = True,
                    device: Optional[Union[str, torch.device]] = None) -> PretrainedModel:
    """Load the model a spec names (see the module notes).

    Args:
        spec: ``PATH``, ``score_sde:PATH``, ``diffusers:PATH`` or ``safetensors:PATH``.
        config: for ``score_sde:`` only, the published config name or a JSON file (required there).
        use_ema: load the EMA weights (default) rather than the raw ones.
        device: where to put the network (default CPU).

    Raises:
        OptionError: a spec that is not a string, a ``config`` where it does not apply or missing where it does.
        CheckpointError, ConfigError: what the importer raises for a file that is missing, corrupt or does not fit.
    """
    if not isinstance(spec, (str, bytes)) and not hasattr(spec, "__fspath__"):
        raise OptionError(f"a model must be given as PATH, score_sde:PATH or diffusers:PATH, got {spec!r}")
    text = str(spec)
    if text.startswith("score_sde:"):
        if config is None:
            raise OptionError("a score_sde checkpoint needs its config: --config NAME (e.g. vp/cifar10_ddpmpp_continuous) "
                              "or --config FILE.json")
        return from_score_sde(text[len("score_sde:"):], config, use_ema=use_ema, device=device or "cpu")
    if config is not None:
        raise OptionError(f"--config applies to score_sde:PATH checkpoints only, not to {text!r}")
    if text.startswith("safetensors:"):
        from .export import from_safetensors

        return from_safetensors(text[len("safetensors:"):], device=device)
    if text.startswith("diffusers:"):
        from . import diffusers as importer  # the [diffusers] extra: imported only when asked for

        return importer.from_diffusers(text[len("diffusers:"):], device=device or "cpu")
    return from_run(text, use_ema=use_ema, device=device)
