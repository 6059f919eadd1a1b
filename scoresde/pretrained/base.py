"""What every importer of a published model returns, and the one safe way to read its weights.

:class:`PretrainedModel` bundles a foreign network wrapped as a scoresde score function with the
SDE it was trained for and the data conventions it expects, so that it plugs into
:func:`scoresde.sample`, the likelihood and the other tools like a model trained here.
:func:`load_weights_file` reads a PyTorch file through the one safe loader of :mod:`scoresde.checkpoint`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import torch
from torch import nn

from ..checkpoint import safe_torch_load
from ..errors import CheckpointError, OptionError
from ..sde.base import SDE

PathLike = Union[str, "os.PathLike[str]"]


@dataclass
class PretrainedModel:
    """A published score model, ready for scoresde's samplers and likelihood.

    Attributes:
        sde: the forward SDE the model was trained with (a :mod:`scoresde.sde` instance).
        score_fn: ``score_fn(x, t)``: ``x`` ``[B, *event_shape]`` on the model's own data scale
            (see ``centered``/``data_range``), ``t`` ``[B]`` in ``[0, sde.T]`` -> the score, shaped like
            ``x``. An ``nn.Module`` holding ``network``, differentiable in ``x``.
        network: the underlying ``nn.Module`` (the foreign architecture, with the loaded weights).
        event_shape: shape of one sample, e.g. ``(C, H, W)``.
        centered: True when the data lives in ``[-1, 1]``, False for ``[0, 1]``.
        data_range: ``(lo, hi)`` of the data scale (``(-1, 1)`` or ``(0, 1)``).
        source: where it came from, e.g. ``"score_sde:/path/checkpoint_26.pth (vp/cifar10_ddpmpp_continuous)"``.
        num_classes: number of classes of a class-conditional model, ``None`` otherwise.
        config: the configuration used to build the network, as plain data (JSON-friendly).
        info: importer-specific details (e.g. training step, which weights were loaded).
        data: the data set the model was trained on, when known (``"cifar10"``, ``"mnist"``, a path).
        discrete_levels: number of grey levels of its (quantised) data, 256 for 8-bit images; ``None``
            for continuous data.
        run_config: for a run trained by scoresde, its :class:`~scoresde.config.TrainConfig`.
        latent: for a latent run, its :class:`~scoresde.latent.LatentSpace` (``event_shape`` is then the shape of
            a code, :meth:`decode` maps codes to images and ``data_range``/``discrete_levels`` are the images').
        dequantization: the interval ``(lo, hi)`` that the dequantization bins of the ``discrete_levels`` levels
            tile on the model's scale, as the model's own evaluation defines bits/dim (score_sde: the data
            range, bins of width ``(hi - lo) / 256``); ``None``: bins centred on the levels of
            :func:`scoresde.data.to_model_range` (:func:`scoresde.data.dequantization_range`).
    """

    sde: SDE
    score_fn: nn.Module
    network: nn.Module
    event_shape: Tuple[int, ...]
    centered: bool
    data_range: Tuple[float, float]
    source: str
    num_classes: Optional[int] = None
    config: Dict[str, Any] = field(default_factory=dict)
    info: Dict[str, Any] = field(default_factory=dict)
    data: Optional[str] = None
    discrete_levels: Optional[int] = 256
    run_config: Optional[Any] = None
    dequantization: Optional[Tuple[float, float]] = None
    latent: Optional[Any] = None

    def decode(self, samples: Any) -> Any:
        """Samples of the score model as data: a latent run's codes decoded to images, other samples as they are."""
        return samples if self.latent is None else self.latent.decode(samples).cpu()

    @property
    def data_shape(self) -> Tuple[int, ...]:
        """The shape of one data point (an image of a latent run; else ``event_shape``)."""
        return tuple(self.latent.image_shape) if self.latent is not None else tuple(self.event_shape)

    def dequantization_range(self) -> Tuple[float, float]:
        """The ``data_range`` to give :func:`scoresde.bits_per_dim` for this model's quantised data."""
        if self.dequantization is not None:
            return tuple(self.dequantization)
        from ..data import dequantization_range

        return dequantization_range(self.discrete_levels or 256, tuple(self.data_range))

    def to(self, device: Union[str, torch.device]) -> "PretrainedModel":
        """Move the network (and so ``score_fn``) to ``device`` in place; returns ``self``."""
        self.score_fn.to(check_device(device))
        return self

    def eval(self) -> "PretrainedModel":
        """Put the network in evaluation mode (no dropout; the importers return it so); returns ``self``."""
        self.score_fn.eval()
        return self

    @property
    def device(self) -> torch.device:
        """The device of the network's parameters."""
        return next(self.network.parameters()).device


def check_device(device: Any) -> torch.device:
    """``device`` as a ``torch.device``, or :class:`~scoresde.errors.OptionError` naming the bad value."""
    if isinstance(device, bool):
        raise OptionError(f"device must be a device name such as 'cpu' or 'cuda:0', got {device!r}")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError, ValueError) as e:
        raise OptionError(f"device must be a device name such as 'cpu' or 'cuda:0', got {device!r} ({e})") from None


def check_path(path: Any, name: str = "checkpoint") -> Path:
    """``path`` as an existing file, or an error: :class:`OptionError` for a non-path argument,
    :class:`CheckpointError` for a missing file or a directory."""
    if isinstance(path, (bytes, bool)) or not isinstance(path, (str, os.PathLike)):
        raise OptionError(f"{name} must be a path (str or os.PathLike), got {type(path).__name__} {path!r}")
    p = Path(path).expanduser()
    if not p.exists():
        raise CheckpointError(f"no {name} file at {p}")
    if not p.is_file():
        raise CheckpointError(f"{name} {p} is not a file")
    return p


def load_weights_file(path: PathLike, what: str = "checkpoint") -> Any:
    """Read a PyTorch file with the one safe loader (:func:`scoresde.checkpoint.safe_torch_load`).

    Only tensors and plain containers are rebuilt, so no code from the file runs; there is deliberately
    no fallback to the unsafe loader.

    Raises:
        OptionError: ``path`` is not a path.
        CheckpointError: the file is missing, truncated or corrupt, or needs code execution to load
            (it holds instances of classes or references to functions); the message names the file.
    """
    return safe_torch_load(check_path(path, what), what)


__all__ = ["PretrainedModel", "load_weights_file", "check_device", "check_path"]
