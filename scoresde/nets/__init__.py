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

import torch
from torch import nn

from .._utils import check_memory
from .._validation import positive_int, suggest
from ..errors import OptionError, ResourceLimitError, ScoreSDEError, ShapeError
from .embedding import EMBEDDINGS, GaussianFourierEmbedding, LabelEmbedding, SinusoidalEmbedding
from .mlp import MLP
from .unet import UNet

#: Public name -> network class.
NETWORKS: Dict[str, Type[nn.Module]] = {"mlp": MLP, "unet": UNet}


def _fill(kwargs: Dict[str, Any], name: str, value: int, kind: str, event_shape: tuple) -> None:
    """Set ``kwargs[name] = value`` or check that a given value agrees with the event shape."""
    if name in kwargs and kwargs[name] != value:
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
        ValueError: unknown ``kind`` (the message lists the valid names) or bad arguments
            (:class:`~scoresde.errors.OptionError` for non-integral sizes such as ``hidden=2.5``).
        ShapeError: an event shape the network cannot serve.
        ResourceLimitError: the network's parameters would not fit in memory (counted on the
            ``meta`` device before anything is allocated; see :func:`network_bytes`).
    """
    if not isinstance(kind, str) or kind not in NETWORKS:
        raise OptionError(f"unknown network kind {kind!r}; valid kinds: {', '.join(NETWORKS)}{suggest(kind, NETWORKS)}")
    if isinstance(event_shape, (str, bytes)) or not isinstance(event_shape, (Sequence, torch.Size)) or not event_shape:
        raise ShapeError(f"event_shape must be a non-empty sequence of positive ints, got {event_shape!r}")
    event_shape = tuple(positive_int(s, "event_shape entry", error=ShapeError) for s in event_shape)
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
        raise OptionError(f"unknown arguments {unknown} for a {kind!r} network; valid arguments: {', '.join(valid)}")
    nbytes, n_params = network_bytes(kind, **kwargs)
    check_memory(nbytes, f"a {kind!r} network with {n_params:,} parameters", "Choose smaller network arguments (--net-arg)")
    return NETWORKS[kind](**kwargs)


def build_on_meta(cls: Any, what: str, **kwargs: Any) -> nn.Module:
    """``cls(**kwargs)`` on the ``meta`` device (shapes only); sizes beyond a 64-bit count are a :class:`ResourceLimitError`."""
    try:
        with torch.random.fork_rng(devices=[]), torch.device("meta"):
            return cls(**kwargs)
    except ScoreSDEError:
        raise
    except (TypeError, ValueError, OverflowError, RuntimeError) as e:  # a size torch cannot even represent
        raise ResourceLimitError(f"{what} with {kwargs} cannot be sized: {str(e).splitlines()[0][:160]}; "
                                 "choose smaller arguments") from None


def network_bytes(kind: str, **kwargs: Any) -> "tuple[int, int]":
    """``(bytes, parameters)`` of a ``kind`` network's parameters and buffers, without allocating them.

    The network is built on PyTorch's ``meta`` device (shapes only, no storage), so a request for
    a 4 TB network costs nothing to size.
    """
    net = build_on_meta(NETWORKS[kind], f"a {kind!r} network", **kwargs)
    tensors = list(net.parameters()) + list(net.buffers())
    n_params = sum(p.numel() for p in net.parameters())
    return sum(t.numel() * t.element_size() for t in tensors), n_params


__all__ = [
    "NETWORKS", "build_network", "network_bytes", "MLP", "UNet",
    "GaussianFourierEmbedding", "SinusoidalEmbedding", "EMBEDDINGS", "LabelEmbedding",
]
