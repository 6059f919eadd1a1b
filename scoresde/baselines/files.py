"""Baselines as files: :func:`save_baseline` and :func:`load_baseline`, through the artifact format of
:mod:`scoresde.checkpoint` (tensors and plain values only, with a digest; nothing that executes code on load).

This module sits above the three models, so the map from a file's ``kind`` to its class lives here.
"""

from __future__ import annotations

import os
from typing import Optional, Union

import torch
from torch import nn

from ..checkpoint import load_artifact, save_artifact
from ..errors import CheckpointError, OptionError
from .dcgan import DCGAN
from .realnvp import RealNVP
from .vae import ConvVAE

#: Artifact kind of files written by :func:`save_baseline` (their ``format`` is ``"scoresde-baseline"``).
BASELINE_KIND = "baseline"
#: ``version`` entry of files written by :func:`save_baseline`.
BASELINE_VERSION = 1
#: Baseline kinds (the ``kind`` stored in their files) and their classes.
BASELINES = {"vae": ConvVAE, "realnvp": RealNVP, "dcgan": DCGAN}

PathLike = Union[str, "os.PathLike[str]"]


def save_baseline(path: PathLike, model: nn.Module) -> None:
    """Write ``model`` to ``path`` as a ``baseline`` artifact (:func:`scoresde.checkpoint.save_artifact`, atomically).

    The file holds ``kind``, ``config`` and ``weights`` (tensors and plain values only) and a digest.

    Raises:
        OptionError: ``model`` is not a baseline (no ``kind``/``config``).
        OutputError: the file cannot be written.
    """
    kind, config = getattr(model, "kind", None), getattr(model, "config", None)
    if not isinstance(kind, str) or not isinstance(config, dict):
        raise OptionError(f"model must be a scoresde baseline (ConvVAE, RealNVP, DCGAN), got {type(model).__name__}")
    save_artifact(path, BASELINE_KIND, BASELINE_VERSION, {
        "kind": kind, "config": dict(config), "weights": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    })


def load_baseline(path: PathLike, device: Optional[Union[str, torch.device]] = None) -> nn.Module:
    """Read a file written by :func:`save_baseline` without executing code from it.

    Returns:
        The model (a ``ConvVAE``, ``RealNVP`` or ``DCGAN``) on ``device`` (default CPU), in eval mode.

    Raises:
        CheckpointError: a missing or unreadable file, one that needs code execution to load (pickled
            Python objects), one that is not a scoresde baseline, or one whose weights do not fit its config.
    """
    state = load_artifact(path, BASELINE_KIND, (BASELINE_VERSION,), hint="write one with save_baseline")
    kind = state.get("kind")
    if kind not in BASELINES:
        raise CheckpointError(f"{path}: unknown baseline kind {kind!r}; known: {', '.join(BASELINES)}")
    try:
        model = BASELINES[kind](**state["config"])
        model.load_state_dict(state["weights"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path}: the stored {kind} cannot be rebuilt: {_first_line(e)}") from None
    return model.to(torch.device(device) if device is not None else torch.device("cpu")).eval()


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__
