"""Runs in the ecosystem's weight format: ``safetensors`` files that load back into a score function.

:func:`export_safetensors` writes a run's EMA (or raw) weights as a ``.safetensors`` file, with the run's
configuration (JSON) in the file's metadata, so that the network can be rebuilt without scoresde's own
checkpoint format and without pickle. :func:`from_safetensors` reads one back as a
:class:`~scoresde.pretrained.PretrainedModel` (also through ``--checkpoint safetensors:PATH``).
Needs the ``safetensors`` package (``pip install safetensors``, part of the ``[diffusers]`` extra).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Union

import torch

from ..checkpoint import atomic_write, build_score_model, build_sde, load_model
from ..config import TrainConfig
from ..errors import CheckpointError, ConfigError, OptionError
from ..nets import build_network
from .base import PathLike, PretrainedModel, check_path

__all__ = ["export_safetensors", "from_safetensors", "SAFETENSORS_FORMAT"]

#: The ``format`` entry of the metadata of an exported file.
SAFETENSORS_FORMAT = "scoresde-run"


def _safetensors() -> Any:
    try:
        import safetensors.torch as st
    except ImportError:
        raise OptionError("safetensors files need the safetensors package: pip install safetensors "
                          "(or pip install 'scoresde[diffusers]')") from None
    return st


def export_safetensors(checkpoint: PathLike, out: PathLike, *, use_ema: bool = True) -> Path:
    """Write a run's weights and configuration as a ``.safetensors`` file (atomically).

    Args:
        checkpoint: a run directory or checkpoint file.
        out: the file to write (``.safetensors``).
        use_ema: the EMA weights (default; the ones meant for sampling) or the raw ones.

    Returns:
        The path written.

    Raises:
        OptionError: safetensors is not installed, or ``out`` does not end in ``.safetensors``.
        CheckpointError: the run cannot be read.
    """
    st = _safetensors()
    out = Path(out).expanduser()
    if out.suffix != ".safetensors":
        raise OptionError(f"the output must end in .safetensors, got {str(out)!r}")
    _, score, cfg = load_model(checkpoint, use_ema=use_ema)
    if cfg.latent is not None:
        raise OptionError("a latent run's score network models the codes of its autoencoder, which a safetensors file "
                          "of the network alone would lose; share the run directory (it holds autoencoder.pt) instead")
    tensors = {k: v.detach().contiguous().cpu() for k, v in score.net.state_dict().items()}
    meta = {"format": SAFETENSORS_FORMAT, "config": cfg.to_json(), "weights": "ema" if use_ema else "model"}
    data = st.save(tensors, metadata=meta)
    return atomic_write(out, lambda f: f.write(data), what="safetensors file")


def from_safetensors(path: PathLike, *, device: Optional[Union[str, torch.device]] = None) -> PretrainedModel:
    """Load a file written by :func:`export_safetensors` as a :class:`PretrainedModel` (tensors only: no code runs).

    Raises:
        OptionError: safetensors is not installed.
        CheckpointError: a missing, unreadable or foreign file, or weights that do not fit the stored network.
    """
    st = _safetensors()
    p = check_path(path, "safetensors file")
    try:
        with open(p, "rb") as f:
            raw = f.read()
        tensors = st.load(raw)
        from safetensors import safe_open

        with safe_open(str(p), framework="pt") as handle:
            meta: Dict[str, str] = handle.metadata() or {}
    except Exception as e:  # safetensors raises its own error types for damaged files
        raise CheckpointError(f"{p} is not a readable safetensors file ({str(e).splitlines()[0] if str(e) else e})") from None
    if meta.get("format") != SAFETENSORS_FORMAT or "config" not in meta:
        raise CheckpointError(f"{p} was not exported by scoresde (no run configuration in its metadata); for diffusers "
                              "pipelines use --checkpoint diffusers:FOLDER")
    try:
        cfg = TrainConfig.from_json(meta["config"])
        sde = build_sde(cfg.sde, **cfg.sde_kwargs)
        net = build_network(cfg.net, cfg.event_shape, **cfg.net_kwargs)
        net.load_state_dict(tensors)
    except (ConfigError, RuntimeError, KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{p}: the stored weights do not fit the stored network: {e}") from None
    net = net.to(torch.device(device) if device is not None else torch.device("cpu")).eval().requires_grad_(False)
    score = build_score_model(net, sde, cfg.parameterization)
    rng = tuple(float(v) for v in cfg.data_range) if cfg.data_range else (-1.0, 1.0)
    return PretrainedModel(sde=sde, score_fn=score, network=net, event_shape=tuple(cfg.event_shape),
                           centered=rng == (-1.0, 1.0), data_range=rng, source=f"safetensors:{p}",
                           num_classes=score.num_classes, config=cfg.to_dict(), info={"weights": meta.get("weights")},
                           data=cfg.data, discrete_levels=cfg.discrete_levels, run_config=cfg)
