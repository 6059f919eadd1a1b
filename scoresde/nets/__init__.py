"""Score networks ``net(x, t)`` and a builder that recreates them from a stored config.

Every network maps ``x`` ``[B, *event]`` and ``t`` ``[B]`` to a tensor shaped like ``x`` and keeps
its constructor arguments in ``net.config`` (a dict of plain Python values, JSON-friendly), so a
checkpoint can rebuild it with ``build_network(net.kind, event_shape, **net.config)``. Wrap a network
in :class:`scoresde.NetworkScore` to use it as a score function.
"""

from __future__ import annotations

import inspect
import math
from typing import Any, Dict, Sequence, Type

from torch import nn

from ..errors import ShapeError
from .embedding import EMBEDDINGS, GaussianFourierEmbedding, LabelEmbedding, SinusoidalEmbedding
from .mlp import MLP
from .unet import UNet

#: Public name -> network class.
NETWORKS: Dict[str, Type[nn.Module]] = {"mlp": MLP, "unet": UNet}


def _fill(kwargs: Dict[str, Any], name: str, value: int, kind: str, event_shape: tuple) -> None:
    """Set ``kwargs[name] = value`` or check that a given value agrees with the event shape."""
    if name in kwargs and int(kwargs[name]) != value:
        raise ShapeError(f"{kind}: {name}={kwargs[name]} contradicts event_shape {event_shape} (which implies {name}={value})")
    kwargs[name] = value


def build_network(kind: str, event_shape: Sequence[int], **kwargs: Any) -> nn.Module:
    """Build a network of the given kind for samples of shape ``event_shape``.

    Args:
        kind: a key of :data:`NETWORKS`: ``"mlp"`` (any event shape; ``dim = prod(event_shape)``)
            or ``"unet"`` (``event_shape = (C, S, S)``; sets ``in_channels = C`` and ``image_size = S``).
        event_shape: shape of one sample, without the batch dimension.
        **kwargs: further constructor arguments of the network class. Shape-derived arguments
            (``dim``; ``in_channels``, ``image_size``) may be repeated, e.g. from ``net.config``, but
            must agree with ``event_shape``.

    Returns:
        The network (freshly initialised).

    Raises:
        ValueError: unknown ``kind`` (the message lists the valid names) or bad arguments.
        ShapeError: an event shape the network cannot serve.
    """
    if kind not in NETWORKS:
        raise ValueError(f"unknown network kind {kind!r}; valid kinds: {', '.join(NETWORKS)}")
    try:
        event_shape = tuple(int(s) for s in event_shape)
    except (TypeError, ValueError):
        raise ShapeError(f"event_shape must be a sequence of ints, got {event_shape!r}") from None
    if not event_shape or any(s < 1 for s in event_shape):
        raise ShapeError(f"event_shape must have at least one dimension, all positive, got {event_shape}")
    kwargs = dict(kwargs)
    if kind == "mlp":
        _fill(kwargs, "dim", math.prod(event_shape), kind, event_shape)
    elif kind == "unet":
        if len(event_shape) != 3 or event_shape[1] != event_shape[2]:
            raise ShapeError(f"unet needs square images, event_shape (C, S, S), got {event_shape}")
        _fill(kwargs, "in_channels", event_shape[0], kind, event_shape)
        _fill(kwargs, "image_size", event_shape[1], kind, event_shape)
    valid = [p for p in inspect.signature(NETWORKS[kind].__init__).parameters if p != "self"]
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise ValueError(f"unknown arguments {unknown} for a {kind!r} network; valid arguments: {', '.join(valid)}")
    return NETWORKS[kind](**kwargs)


__all__ = [
    "NETWORKS", "build_network", "MLP", "UNet",
    "GaussianFourierEmbedding", "SinusoidalEmbedding", "EMBEDDINGS", "LabelEmbedding",
]
