"""Named training recipes (``scoresde train --preset cpu``) and the time estimate behind the CPU warning.

A preset is a dict of :class:`~scoresde.training.TrainConfig` options for image data; options given
explicitly (on the command line or to :func:`apply_preset`) override it.

* ``cpu``: MNIST digits on two CPU cores in about half an hour. A 0.28M-parameter U-Net (base width
  16, levels 28/14/7, one residual block per level, attention at 7x7 only, no dropout), 5,000 steps
  of batch 64 (about five epochs of MNIST), AdamW at ``2e-3`` with 100 warm-up steps and a cosine
  decay to zero, gradient clipping at 1, an EMA of decay up to 0.999 (with its warm-up, about 0.998
  at the end: a half-life of a few hundred steps), the VP SDE with an eps-predicting network and the
  Min-SNR-5 weighting (``weighting="min_snr"``: DDPM's noise loss with the nearly noise-free times
  down-weighted, Hang et al. 2023); why these choices, with the measurements, is in the docs' training
  guide. On labelled data add ``--conditional`` (the preset sets the label dropout ``p_uncond = 0.2``) and
  sample with classifier-free guidance, ``scoresde sample --class all --guidance 1``.
* ``gpu``: a larger U-Net (base width 64, two residual blocks per level, 6.5M parameters) for one
  modern GPU, trained with the likelihood weighting and importance sampling of ``t`` (the choice
  that lowers bits/dim), 40,000 steps of batch 128 with bf16 autocast and ``torch.compile``.
"""

from __future__ import annotations

import copy
import math
import time
from typing import Any, Dict, Optional

import torch
from torch import nn

from ..errors import ConfigError

#: Preset name -> TrainConfig options.
PRESETS: Dict[str, Dict[str, Any]] = {
    "cpu": dict(
        net="unet",
        net_kwargs=dict(channels=16, channel_mults=[1, 2, 2], num_res_blocks=1, dropout=0.0),
        sde="vp", parameterization="eps", weighting="min_snr", p_uncond=0.2,
        steps=5000, batch_size=64, lr=2e-3, warmup=100, lr_schedule="cosine", grad_clip=1.0, ema_decay=0.999,
        checkpoint_every=500, sample_every=-1, log_every=50,
    ),
    "gpu": dict(
        net="unet",
        net_kwargs=dict(channels=64, channel_mults=[1, 2, 2], num_res_blocks=2, dropout=0.1),
        sde="vp", parameterization="eps", weighting="likelihood", importance_sampling=True,
        steps=40000, batch_size=128, lr=2e-4, warmup=1000, grad_clip=1.0, ema_decay=0.9999,
        precision="bf16", compile=True, checkpoint_every=5000, sample_every=5000, log_every=100,
    ),
}

#: What each preset is for, shown by ``scoresde train --help`` and in messages.
PRESET_NOTES = {
    "cpu": "MNIST-size images on 2 CPU cores in about 30 minutes",
    "gpu": "MNIST-size images on one GPU, aiming at bits/dim near 1.2 in about 20 minutes",
}

#: Training steps of batch 64 per second of the ``cpu`` preset's network on an idle 2-core machine
#: (measured: about 0.34 s per step), used only for the expected time printed in advice.
CPU_PRESET_SECONDS_PER_STEP = 0.34


def apply_preset(name: str, given: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """The options of preset ``name`` overridden by ``given`` (``net_kwargs``/``sde_kwargs`` are merged).

    Raises:
        ConfigError: an unknown preset name (the message lists the valid ones).
    """
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; valid presets: {', '.join(PRESETS)}")
    given = dict(given or {})
    out = copy.deepcopy(PRESETS[name])
    for key in ("net_kwargs", "sde_kwargs"):
        if key in given:
            out[key] = {**out.get(key, {}), **given.pop(key)}
    out.update(given)
    return out


def seconds_per_step(net: nn.Module, loss_fn: Any, example: torch.Tensor, batch_size: int, repeats: int = 2) -> float:
    """Wall seconds of one training step (forward, backward) of ``net`` at ``batch_size``, measured.

    Runs ``repeats + 1`` forward/backward passes on a copy of the network (the first one is a
    warm-up) with torch's random state saved and restored, so a run that follows is unaffected.

    Args:
        net: the score network; loss_fn: ``loss_fn(model, x0)`` returning a scalar, where ``model``
            is the copy of ``net``.
        example: one training example ``[*event]`` (its device and dtype are used).
        batch_size: the batch size to time.
    """
    model = copy.deepcopy(net).train()
    x0 = example.unsqueeze(0).expand(batch_size, *example.shape).clone()
    with torch.random.fork_rng(devices=[example.device] if example.device.type == "cuda" else []):
        times = []
        for _ in range(repeats + 1):
            t0 = time.perf_counter()
            loss = loss_fn(model, x0)
            loss.backward()
            model.zero_grad(set_to_none=True)
            times.append(time.perf_counter() - t0)
    return min(times[1:]) if len(times) > 1 else times[0]


def cpu_advice(steps: int, batch_size: int, seconds: float, n_params: int) -> str:
    """The note printed when GPU-sized training starts on a CPU: expected time and the ``cpu`` preset."""
    total = steps * seconds
    preset = PRESETS["cpu"]
    cpu_total = preset["steps"] * CPU_PRESET_SECONDS_PER_STEP
    return (
        f"note: no GPU; {steps:,} steps of batch {batch_size} with this {n_params / 1e6:.2f}M-parameter network take "
        f"about {_hours(total)} here ({seconds:.2f} s per step, measured). For a CPU, use --preset cpu: "
        f"{preset['steps']:,} steps of batch {preset['batch_size']} with a 0.28M-parameter U-Net, "
        f"about {math.ceil(cpu_total / 60)} minutes on 2 idle cores ({PRESET_NOTES['cpu']}); on labelled data add "
        f"--conditional and sample with --class all --guidance 1 for the most recognisable samples."
    )


def _hours(seconds: float) -> str:
    if seconds < 3600:
        return f"{seconds / 60:.0f} minutes"
    return f"{seconds / 3600:.1f} hours"
