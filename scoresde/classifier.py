"""A noise-conditional classifier ``p_t(y | x_t)`` for classifier guidance, its loss, training and files.

Classifier guidance (:func:`scoresde.guidance.classifier_guided`) needs ``grad_x log p_t(y | x)`` at every
noise level, so the classifier sees *noisy* inputs: it is trained with the cross-entropy of the true label
on ``x_t = scale(t) x_0 + std(t) z`` at ``t ~ U[eps, T]`` (:func:`classifier_loss`), the forward kernel of
the same SDE as the score model it will guide.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._utils import append_dims, as_time, check_batch, check_memory
from ._validation import class_count, finite_float, integer, nonneg_int, positive_int
from .checkpoint import load_artifact, save_artifact
from .errors import CheckpointError, OptionError, ShapeError
from .guidance import check_labels
from .nets import build_on_meta
from .nets.embedding import GaussianFourierEmbedding
from .nets.mlp import _ResidualLayer
from .nets.unet import Downsample, ResBlock, _conv
from .noise import rand, randint, randn_like
from .sde.base import SDE

#: ``format`` of classifier files written by :func:`save_classifier`.


class NoiseConditionalClassifier(nn.Module):
    """``classifier(x, t) -> logits [B, K]`` for noisy inputs ``x_t`` at times ``t``.

    Vectors (``event_shape = (D,)`` or any non-image shape) get a residual MLP with a Gaussian-Fourier
    time embedding (the trunk of :class:`scoresde.nets.MLP`); images (``(C, H, W)``) get a small
    convolutional encoder of time-conditioned residual blocks with a stride-2 convolution between
    levels, global average pooling and a linear head.

    Args:
        event_shape: shape of one sample.
        num_classes: ``K``.
        hidden: MLP width (vectors).
        depth: residual layers (vectors).
        channels: base width of the encoder (images); levels use ``channels * channel_mults[i]``.
        channel_mults: width multipliers per level (images).
        embed_dim: size of the Fourier time embedding.
        fourier_scale: scale of its frequencies.

    ``config`` holds the constructor arguments (``NoiseConditionalClassifier(**clf.config)`` rebuilds it).
    """

    def __init__(
        self, event_shape: Sequence[int], num_classes: int, hidden: int = 256, depth: int = 3, channels: int = 32,
        channel_mults: Sequence[int] = (1, 2, 2), embed_dim: int = 128, fourier_scale: float = 16.0,
    ):
        super().__init__()
        self.config: Dict[str, Any] = _classifier_config(event_shape, num_classes, hidden, depth, channels, channel_mults,
                                                         embed_dim, fourier_scale)
        if torch.empty(0).device.type != "meta":  # size it on the meta device first: refuse what cannot fit
            probe = build_on_meta(NoiseConditionalClassifier, "a noise-conditional classifier", **self.config)
            nbytes = sum(p.numel() * p.element_size() for p in list(probe.parameters()) + list(probe.buffers()))
            check_memory(nbytes, "a noise-conditional classifier with these arguments", "Choose a smaller hidden or channels")
        event_shape, num_classes = self.config["event_shape"], self.config["num_classes"]
        hidden, depth, channels = self.config["hidden"], self.config["depth"], self.config["channels"]
        channel_mults, embed_dim, fourier_scale = self.config["channel_mults"], self.config["embed_dim"], self.config["fourier_scale"]
        self.event_shape = tuple(event_shape)
        self.num_classes = int(num_classes)
        self.is_image = len(event_shape) == 3
        width = int(channels) * 4 if self.is_image else int(hidden)
        self.time_embed = nn.Sequential(
            GaussianFourierEmbedding(int(embed_dim), float(fourier_scale)), nn.Linear(int(embed_dim), width), nn.SiLU(),
            nn.Linear(width, width),
        )
        if self.is_image:
            ch, groups = int(channels), math.gcd(8, int(channels))
            self.conv_in = _conv(event_shape[0], ch)
            blocks: List[nn.Module] = []
            for i, mult in enumerate(channel_mults):
                blocks.append(ResBlock(ch, int(channels) * int(mult), width, 0.0, groups))
                ch = int(channels) * int(mult)
                if i < len(channel_mults) - 1:
                    blocks.append(Downsample(ch))
            self.blocks = nn.ModuleList(blocks)
            self.norm_out = nn.GroupNorm(groups, ch)
            self.head = nn.Linear(ch, self.num_classes)
        else:
            dim = math.prod(event_shape)
            self.input = nn.Linear(dim, width)
            self.layers = nn.ModuleList([_ResidualLayer(width, width) for _ in range(int(depth))])
            self.head = nn.Linear(width, self.num_classes)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        """Logits ``[B, K]`` of ``p_t(y | x)``: ``x`` ``[B, *event_shape]``, ``t`` ``[B]``."""
        check_batch(x, "x")
        if tuple(x.shape[1:]) != self.event_shape:
            raise ShapeError(f"the classifier was built for samples of shape {self.event_shape}, got x of shape {tuple(x.shape)}")
        t = as_time(t, x, check_range=False)
        temb = self.time_embed(t)
        if self.is_image:
            h = self.conv_in(x)
            for block in self.blocks:
                h = block(h, temb)
            h = F.silu(self.norm_out(h)).mean(dim=(2, 3))
        else:
            h = self.input(x.reshape(x.shape[0], -1))
            for layer in self.layers:
                h = layer(h, temb)
            h = F.silu(h)
        return self.head(h)


def _classifier_config(event_shape: Any, num_classes: Any, hidden: Any, depth: Any, channels: Any, channel_mults: Any,
                       embed_dim: Any, fourier_scale: Any) -> Dict[str, Any]:
    """The checked constructor arguments of :class:`NoiseConditionalClassifier` as plain values (its ``config``)."""
    if isinstance(event_shape, (str, bytes)) or not isinstance(event_shape, (Sequence, torch.Size)) or not event_shape:
        raise ShapeError(f"event_shape must be a non-empty sequence of positive ints, got {event_shape!r}")
    if isinstance(channel_mults, (str, bytes)) or not isinstance(channel_mults, Sequence) or not channel_mults:
        raise OptionError(f"channel_mults must be a non-empty sequence of positive ints, got {channel_mults!r}")
    return dict(
        event_shape=[positive_int(s, "event_shape entry", error=ShapeError) for s in event_shape],
        num_classes=class_count(num_classes, "num_classes", minimum=2), hidden=positive_int(hidden, "hidden"),
        depth=integer(depth, "depth", minimum=0, maximum=1000), channels=positive_int(channels, "channels"),
        channel_mults=[positive_int(m, "channel_mults entry") for m in channel_mults],
        embed_dim=positive_int(embed_dim, "embed_dim"), fourier_scale=finite_float(fourier_scale, "fourier_scale", positive=True),
    )


def classifier_loss(
    sde: SDE,
    classifier: Any,
    x0: Tensor,
    y: Tensor,
    *,
    eps: float = 1e-5,
    generator: Optional[torch.Generator] = None,
    t: Optional[Tensor] = None,
    noise: Optional[Tensor] = None,
) -> Tensor:
    """Cross-entropy of the true labels on noisy inputs: ``E_t E_z [-log p_theta(y | x_t, t)]``.

    Args:
        sde: the forward SDE (the same as the score model's).
        classifier: ``(x [B, *event], t [B]) -> logits [B, K]``.
        x0: clean data ``[B, *event]``; y: labels ``[B]`` in ``[0, K)``.
        eps: smallest time; ``t ~ U[eps, T]`` unless ``t`` is given.
        generator: source of ``t`` and the noise.

    Returns:
        The mean cross-entropy (a scalar, in nats).

    Raises:
        LabelError: labels of the wrong shape or outside ``[0, K)``; ShapeError: logits not ``[B, K]``.
    """
    check_batch(x0, "x0")
    eps = finite_float(eps, "eps", minimum=0.0, maximum=float(sde.T))
    B = x0.shape[0]
    y = check_labels(y, getattr(classifier, "num_classes", None) if y.device.type == "cpu" else None, "y", batch=B)
    y = y.to(x0.device)
    if t is None:
        t = eps + (sde.T - eps) * rand((B,), generator, x0.device, x0.dtype)
    else:
        t = as_time(t, x0, sde.T)
    if noise is None:
        noise = randn_like(x0, generator)
    scale, std = sde.marginal_coeffs(t)
    x_t = append_dims(scale, x0.ndim) * x0 + append_dims(std, x0.ndim) * noise
    logits = classifier(x_t, t)
    if not isinstance(logits, Tensor) or logits.ndim != 2 or logits.shape[0] != B:
        got = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ShapeError(f"classifier(x, t) must return logits [B, K] = [{B}, K], got {got}")
    return F.cross_entropy(logits.float(), y)


def train_classifier(
    classifier: nn.Module,
    sde: SDE,
    data: Tensor,
    labels: Tensor,
    steps: int = 2000,
    batch_size: int = 256,
    lr: float = 2e-3,
    generator: Optional[torch.Generator] = None,
    eps: float = 1e-5,
    log_every: int = 0,
) -> List[float]:
    """Train ``classifier`` in place with AdamW on :func:`classifier_loss`; return the loss of every step.

    Args:
        classifier: e.g. a :class:`NoiseConditionalClassifier`, on the device of ``data``.
        sde: the forward SDE of the score model to be guided.
        data: ``[N, *event]``; labels: ``[N]`` in ``[0, K)``.
        steps, batch_size, lr: the optimisation (batches drawn with replacement).
        generator: source of the batches, times and noise (on ``data``'s device).
        log_every: print the mean loss every this many steps (0: silent).
    """
    check_batch(data, "data")
    if not isinstance(labels, Tensor) or labels.ndim != 1 or data.shape[0] != labels.shape[0]:
        raise ShapeError(f"labels must be a [N] tensor with one label per example of data [N, *event] ({data.shape[0]}), "
                         f"got {tuple(getattr(labels, 'shape', ()))}")
    steps, batch_size = positive_int(steps, "steps"), positive_int(batch_size, "batch_size")
    lr = finite_float(lr, "lr", positive=True, maximum=1.0)
    eps = finite_float(eps, "eps", minimum=0.0, maximum=float(sde.T))
    log_every = nonneg_int(log_every, "log_every")
    labels = check_labels(labels, getattr(classifier, "num_classes", None), "labels").to(data.device)
    opt = torch.optim.AdamW(classifier.parameters(), lr=lr)
    losses: List[float] = []
    classifier.train()
    t0 = time.perf_counter()
    for step in range(int(steps)):
        idx = randint(data.shape[0], (int(batch_size),), generator, data.device)
        loss = classifier_loss(sde, classifier, data[idx], labels[idx], eps=eps, generator=generator)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(classifier.parameters(), 1.0)
        opt.step()
        losses.append(float(loss.detach()))
        if log_every and (step + 1) % log_every == 0:
            recent = losses[-log_every:]
            print(f"step {step + 1}/{steps}: cross-entropy {sum(recent) / len(recent):.4f} ({time.perf_counter() - t0:.1f} s)",
                  flush=True)
    classifier.eval()
    return losses


#: Artifact kind and version of a saved guidance classifier.
GUIDANCE_CLASSIFIER_KIND = "guidance-classifier"
GUIDANCE_CLASSIFIER_VERSION = 2


def _legacy_file(state: Any) -> bool:
    """A classifier file of the first layout (``{"format": 1, "kind": "noise_conditional_classifier"}``, no digest)."""
    return isinstance(state, dict) and state.get("format") == 1 and state.get("kind") == "noise_conditional_classifier"


def save_classifier(path: Union[str, "os.PathLike[str]"], classifier: NoiseConditionalClassifier, sde_name: str,
                    sde_kwargs: Optional[Dict[str, Any]] = None, **metadata: Any) -> None:
    """Write the classifier, its architecture and the SDE it was trained for to ``path`` (an artifact, atomically).

    ``metadata`` (plain values) is stored too; ``data`` (the data set's name) and ``num_classes`` let
    :func:`load_classifier`'s callers check that the classifier fits a model.
    """
    save_artifact(path, GUIDANCE_CLASSIFIER_KIND, GUIDANCE_CLASSIFIER_VERSION, {
        "config": dict(classifier.config),
        "state": {k: v.detach().cpu() for k, v in classifier.state_dict().items()},
        "sde": {"name": sde_name, "kwargs": dict(sde_kwargs or {})}, "metadata": metadata,
    })


def load_classifier(
    path: Union[str, "os.PathLike[str]"], device: Optional[Union[str, torch.device]] = None
) -> Tuple[NoiseConditionalClassifier, Dict[str, Any]]:
    """Load a classifier written by :func:`save_classifier`.

    Returns:
        ``(classifier, sde_info)``: the classifier in eval mode on ``device`` (the stored ``metadata``, e.g. the
        data set it was trained on, in ``classifier.metadata``) and ``{"name", "kwargs"}`` of its SDE.

    Raises:
        CheckpointError: a missing, unreadable or damaged file, or one that is not a guidance classifier.
    """
    state = load_artifact(path, GUIDANCE_CLASSIFIER_KIND, (GUIDANCE_CLASSIFIER_VERSION,),
                          hint="write one with `scoresde train-classifier`", legacy=_legacy_file)
    try:
        clf = NoiseConditionalClassifier(**state["config"])
        clf.load_state_dict(state["state"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path}: the stored classifier cannot be rebuilt: {e}") from None
    clf = clf.to(torch.device(device) if device is not None else torch.device("cpu")).eval().requires_grad_(False)
    clf.metadata = dict(state.get("metadata") or {})
    return clf, dict(state["sde"])


__all__ = [
    "NoiseConditionalClassifier", "classifier_loss", "train_classifier", "save_classifier", "load_classifier",
    "GUIDANCE_CLASSIFIER_KIND", "GUIDANCE_CLASSIFIER_VERSION",
]
