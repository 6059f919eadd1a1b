"""Data augmentation applied by the trainer to a batch, with randomness from an explicit generator."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .._utils import append_dims
from .._validation import check_generator
from ..errors import ShapeError


def random_hflip(x: Tensor, generator: Optional[torch.Generator]) -> Tensor:
    """Mirror each image left-right with probability 1/2, independently per sample.

    The decisions are ``B`` fair coin flips (``torch.randint(0, 2, (B,))``) drawn from ``generator`` on
    its own device, so a CPU generator gives the same flips whatever the device of ``x``. The score_sde
    configurations use this (``random_flip=True``) for CIFAR-10 and CelebA-HQ.

    Args:
        x: images ``[B, C, H, W]`` (any ``[B, *event]`` with at least two event dimensions; the last one,
            the width, is reversed).
        generator: the source of the coin flips; ``None`` uses torch's global generator.

    Returns:
        A new tensor shaped like ``x`` (same dtype and device): ``x[b]`` mirrored where the coin came up 1,
        unchanged elsewhere.

    Raises:
        ShapeError: ``x`` is not a tensor ``[B, *event]`` with ``B >= 1`` and at least two event dimensions.
        OptionError: ``generator`` is neither a ``torch.Generator`` nor ``None``.
    """
    if not isinstance(x, Tensor) or x.ndim < 3 or x.shape[0] == 0:
        got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ShapeError(f"random_hflip needs images [B, C, H, W] with B >= 1, got {got}")
    check_generator(generator)
    device = generator.device if generator is not None else torch.device("cpu")
    flip = torch.randint(0, 2, (x.shape[0],), generator=generator, device=device).to(device=x.device, dtype=torch.bool)
    return torch.where(append_dims(flip, x.ndim), x.flip(-1), x)


__all__ = ["random_hflip"]
