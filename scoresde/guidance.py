"""Guidance: turn a conditional score (or a score and a classifier) into a plain ``score_fn(x, t)``.

The samplers only ever see ``score_fn(x, t)``; conditioning is a combinator that builds that callable.

* A *conditional score function* is a callable ``cond_score_fn(x, t, y)`` returning a tensor shaped like
  ``x``, with ``y`` a ``[B]`` integer tensor of class labels or ``None`` for the unconditional score. A
  class-conditional :class:`scoresde.NetworkScore` is one; so is
  :meth:`scoresde.exact.GaussianMixture.conditional_score_fn`.
* :func:`conditional` binds labels: ``s(x, t, y)``.
* :func:`classifier_free` mixes conditional and unconditional scores (Ho & Salimans 2022):
  ``(1 + w) s(x, t, y) - w s(x, t, None)``, i.e. it samples ``p_t(x) p_t(y | x)^(1 + w)``.
* :func:`classifier_guided` adds the gradient of a noise-conditional classifier (Dhariwal & Nichol 2021;
  Song et al. 2021, Sec. 5): ``s(x, t) + scale grad_x log p_t(y | x)``.

Labels are checked once, when they are bound: a label outside ``[0, K)`` or a label for a network
without classes is a :class:`~scoresde.errors.LabelError` naming the argument.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Union

import torch
from torch import Tensor

from ._utils import append_dims
from ._validation import MAX_WEIGHT, weight
from .errors import LabelError, OptionError, ShapeError

NULL_LABEL = -1
"""A label value that selects the unconditional (null) label of a class-conditional network, per sample."""

CondScoreFn = Callable[[Tensor, Tensor, Optional[Tensor]], Tensor]
Labels = Union[int, Tensor]


def num_classes_of(fn: Any) -> Optional[int]:
    """The number of classes ``K`` a conditional score function or classifier declares (``num_classes``), else ``None``."""
    k = getattr(fn, "num_classes", None)
    return None if k is None else int(k)


def check_labels(
    y: Any, num_classes: Optional[int], name: str = "y", batch: Optional[int] = None, allow_null: bool = False
) -> Tensor:
    """Validate class labels and return them as an int64 tensor ``[B]``.

    Args:
        y: an int (one label for every sample) or an integer tensor ``[B]``.
        num_classes: ``K``; labels must lie in ``[0, K)``. ``None`` skips the range check.
        name: the argument's name, for the error message.
        batch: the expected ``B`` (an int label is expanded to it).
        allow_null: also accept :data:`NULL_LABEL` (the unconditional label).

    Raises:
        LabelError: a non-integer label, a wrong shape, or a label outside ``[0, K)``.
    """
    if isinstance(y, bool) or (not isinstance(y, (int, Tensor)) and not hasattr(y, "__index__")):
        raise LabelError(f"{name} must be an int or an integer tensor [B] of class labels, got {type(y).__name__}")
    if not isinstance(y, Tensor):
        k = int(y.__index__())
        if not -(2**63) <= k < 2**63:
            raise LabelError(f"{name} must be a class label in [0, {num_classes if num_classes is not None else 'K'}), got {k}")
        y = torch.tensor(k)
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise LabelError(f"{name} must hold integer class labels, got dtype {y.dtype}")
    if y.device.type == "meta":
        raise LabelError(f"{name} is a meta tensor (a shape without values); give the labels on the CPU or a GPU")
    if y.ndim == 0:
        y = y.reshape(1) if batch is None else y.expand(batch)
    if y.ndim != 1 or (batch is not None and y.shape[0] != batch):
        want = f"[{batch}]" if batch is not None else "[B]"
        raise LabelError(f"{name} must have shape {want} (one label per sample), got {tuple(y.shape)}")
    if y.numel():
        lo, hi = int(y.min()), int(y.max())
        low = NULL_LABEL if allow_null else 0
        if lo < low or (num_classes is not None and hi >= num_classes):
            where = f"[0, {num_classes}) (the model has {num_classes} classes)" if num_classes is not None else "[0, K)"
            raise LabelError(f"{name} must hold class labels in {where}, got values in [{lo}, {hi}]")
    return y.long()


class _Bound:
    """Labels bound to a conditional function: an int (expanded to any batch) or a tensor ``[B]``."""

    def __init__(self, y: Labels, num_classes: Optional[int], name: str = "y"):
        if y is None:
            raise LabelError(f"{name} is None; for the unconditional score call cond_score_fn(x, t, None) directly")
        self.scalar = not isinstance(y, Tensor) or y.ndim == 0
        self.y = check_labels(y, num_classes, name)
        self.name = name

    def at(self, x: Tensor) -> Tensor:
        B = x.shape[0]
        if self.scalar:
            return self.y.to(x.device).expand(B)
        if self.y.shape[0] != B:
            raise ShapeError(f"{self.name} holds {self.y.shape[0]} labels but x has a batch of {B}")
        return self.y.to(x.device)


def _check_cond_fn(cond_score_fn: Any) -> Optional[int]:
    if not callable(cond_score_fn):
        raise OptionError(f"cond_score_fn must be callable as cond_score_fn(x, t, y), got {type(cond_score_fn).__name__}")
    k = num_classes_of(cond_score_fn)
    if getattr(cond_score_fn, "is_conditional", True) is False:
        raise LabelError("labels were given for a network without classes; train it with num_classes=K (--conditional)")
    return k


def check_weight(w: Any, name: str, minimum: float = -MAX_WEIGHT, maximum: float = MAX_WEIGHT) -> Union[float, Tensor]:
    """A guidance weight: a finite number, or a floating ``[B]`` tensor of them, in ``[minimum, maximum]``.

    Beyond ``|w| = 1e4`` (:data:`scoresde._validation.MAX_WEIGHT`) the guidance term alone decides the score and
    float32 overflows; such a weight is refused, as are NaN, infinity, strings and booleans.
    """
    if not isinstance(w, Tensor) or w.ndim == 0:
        return weight(w, name, minimum=minimum, maximum=maximum)
    if w.device.type == "meta" or not w.is_floating_point() or w.ndim > 1:
        raise OptionError(f"{name} must be a number or a floating-point [B] tensor, got a {w.dtype} tensor of shape "
                          f"{tuple(w.shape)} on {w.device}")
    if not bool(torch.isfinite(w).all()) or bool((w < minimum).any()) or bool((w > maximum).any()):
        raise OptionError(f"{name} must hold finite weights in [{minimum:g}, {maximum:g}], got values in "
                          f"[{float(w.min()):g}, {float(w.max()):g}]")
    return w


def _check_output(out: Any, shape: Any, what: str) -> None:
    """Raise :class:`ShapeError` unless ``out`` is a floating tensor of ``shape``."""
    if not isinstance(out, Tensor) or tuple(out.shape) != tuple(shape) or not out.is_floating_point():
        got = f"{out.dtype} tensor of shape {tuple(out.shape)}" if isinstance(out, Tensor) else type(out).__name__
        raise ShapeError(f"{what} must return a floating-point tensor of shape {tuple(shape)}, got {got}")


def conditional(cond_score_fn: CondScoreFn, y: Labels) -> Callable[[Tensor, Tensor], Tensor]:
    """Bind class labels: ``score_fn(x, t) = cond_score_fn(x, t, y)``.

    Args:
        cond_score_fn: ``(x [B, *event], t [B], y [B] or None) -> like x``.
        y: one int for every sample, or a ``[B]`` integer tensor (one label per sample).

    Returns:
        A score function ``(x, t) -> Tensor`` shaped like ``x``, for any sampler.

    Raises:
        LabelError: a label outside ``[0, K)`` (when ``cond_score_fn.num_classes`` is known) or a
            network without classes.
    """
    bound = _Bound(y, _check_cond_fn(cond_score_fn))

    def score_fn(x: Tensor, t: Tensor) -> Tensor:
        return cond_score_fn(x, t, bound.at(x))

    return score_fn


def classifier_free(cond_score_fn: CondScoreFn, y: Labels, w: Union[float, Tensor]) -> Callable[[Tensor, Tensor], Tensor]:
    """Classifier-free guidance (Ho & Salimans 2022): ``(1 + w) s(x, t, y) - w s(x, t, None)``.

    ``w = 0`` is the conditional score; ``w > 0`` samples (approximately) ``p(x | y) p(y | x)^w``, trading
    diversity for samples more typical of class ``y``; ``w = -1`` is the unconditional score.

    When ``cond_score_fn`` accepts per-sample null labels (``cond_score_fn.accepts_null_label``, true for
    class-conditional networks), both scores come from ONE call on the doubled batch
    ``[x, x]`` with labels ``[y, NULL_LABEL]``; otherwise from two calls.

    Args:
        cond_score_fn: ``(x, t, y or None) -> like x``.
        y: one int, or a ``[B]`` integer tensor.
        w: the guidance weight, a float or a ``[B]`` tensor, finite with ``|w| <= 1e4`` (``w = -1`` is the
            unconditional score).

    Returns:
        A score function ``(x, t) -> Tensor`` shaped like ``x``.

    Raises:
        LabelError: bad labels (see :func:`conditional`).
        OptionError: a weight that is not a finite number (or ``[B]`` tensor of them) with ``|w| <= 1e4``.
        ShapeError: (when called) ``cond_score_fn`` returns a tensor not shaped like ``x``, or ``w`` holds
            another number of weights than the batch.
    """
    bound = _Bound(y, _check_cond_fn(cond_score_fn))
    w = check_weight(w, "w", minimum=-MAX_WEIGHT)
    batched = bool(getattr(cond_score_fn, "accepts_null_label", False))

    def score_fn(x: Tensor, t: Tensor) -> Tensor:
        labels = bound.at(x)
        B = x.shape[0]
        if batched:
            both = cond_score_fn(torch.cat([x, x]), torch.cat([t, t]), torch.cat([labels, torch.full_like(labels, NULL_LABEL)]))
            _check_output(both, (2 * B, *x.shape[1:]), "cond_score_fn(x, t, y) on the doubled batch")
            s_cond, s_uncond = both[:B], both[B:]
        else:
            s_cond, s_uncond = cond_score_fn(x, t, labels), cond_score_fn(x, t, None)
            _check_output(s_cond, x.shape, "cond_score_fn(x, t, y)")
            _check_output(s_uncond, x.shape, "cond_score_fn(x, t, None)")
        if isinstance(w, Tensor):
            if w.shape[0] != B:
                raise ShapeError(f"w holds {w.shape[0]} weights but x has a batch of {B}; give one weight per sample or a number")
            ww = append_dims(w.to(s_cond), x.ndim)
        else:
            ww = w
        return s_cond + ww * (s_cond - s_uncond)

    return score_fn


def classifier_guided(
    score_fn: Callable[[Tensor, Tensor], Tensor], classifier: Callable[[Tensor, Tensor], Tensor], y: Labels,
    scale: float = 1.0,
) -> Callable[[Tensor, Tensor], Tensor]:
    """Classifier guidance: ``score(x, t) + scale * grad_x log p_t(y | x)``.

    ``classifier(x, t)`` returns ``[B, K]`` logits of a *noise-conditional* classifier (trained on
    ``x_t`` at random ``t``, e.g. :class:`scoresde.classifier.NoiseConditionalClassifier`). At
    ``scale = 1`` with the exact classifier the result is the exact conditional score
    ``grad log p_t(x | y)`` (Bayes' rule); ``scale > 1`` sharpens ``p(y | x)``.

    The gradient is taken under a local ``torch.enable_grad()``, so the result works inside the
    samplers, which run under ``torch.no_grad()``.

    Args:
        score_fn: the unconditional score ``(x, t) -> like x``.
        classifier: ``(x [B, *event], t [B]) -> logits [B, K]``.
        y: one int, or a ``[B]`` integer tensor of labels in ``[0, K)``.
        scale: the guidance scale, a finite number with ``|scale| <= 1e4``.

    Returns:
        A score function ``(x, t) -> Tensor`` shaped like ``x``.

    Raises:
        LabelError: a label outside ``[0, K)``.
        OptionError: a ``scale`` that is not a finite number with ``|scale| <= 1e4``; (when called) a classifier
            whose logits carry no autograd graph.
        ShapeError: (when called) the classifier's output is not floating ``[B, K]``, or ``score_fn``'s is not shaped like ``x``.
    """
    if not callable(score_fn) or not callable(classifier):
        raise OptionError("score_fn and classifier must be callables (x, t) -> Tensor")
    K = num_classes_of(classifier)
    bound = _Bound(y, K)
    scale = weight(scale, "scale")
    y_max = int(bound.y.max()) if bound.y.numel() else -1

    def guided(x: Tensor, t: Tensor) -> Tensor:
        s = score_fn(x, t)
        _check_output(s, x.shape, "score_fn(x, t)")
        labels = bound.at(x)
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            logits = _logits(classifier, xg, t.detach(), K, y_max)
            log_p = torch.log_softmax(logits, dim=1).gather(1, labels[:, None]).sum()
            if not log_p.requires_grad:
                with torch.no_grad():
                    other = classifier(x.detach() + 1e-2 * (1.0 + x.detach().abs()), t.detach())
                if isinstance(other, Tensor) and other.shape == logits.shape and torch.equal(other.to(logits), logits.detach()):
                    return s  # logits constant in x: no guidance
                raise OptionError("classifier(x, t) returned logits without an autograd graph (computed under torch.no_grad(), "
                                  "detached or through NumPy): classifier guidance needs grad_x log p_t(y | x); call the "
                                  "classifier with gradients enabled")
            (grad,) = torch.autograd.grad(log_p, xg, allow_unused=True)
        if grad is None:  # logits constant in x: no guidance
            return s
        return s + scale * grad.to(s.dtype)

    return guided


def _logits(classifier: Callable[[Tensor, Tensor], Tensor], x: Tensor, t: Tensor, K: Optional[int], y_max: int) -> Tensor:
    """The classifier's logits ``[B, K]`` at ``x`` ``[B, *event]``, checked (shape, classes, labels, dtype)."""
    logits = classifier(x, t)
    if not isinstance(logits, Tensor) or logits.ndim != 2 or logits.shape[0] != x.shape[0]:
        got = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ShapeError(f"classifier(x, t) must return logits [B, K] = [{x.shape[0]}, K], got {got}")
    if not logits.is_floating_point():
        raise ShapeError(f"classifier(x, t) must return floating-point logits, got {logits.dtype}")
    if K is not None and logits.shape[1] != K:
        raise ShapeError(f"classifier declares {K} classes but returned logits of shape {tuple(logits.shape)}")
    if y_max >= logits.shape[1]:
        raise LabelError(f"y holds label {y_max} but the classifier has {logits.shape[1]} classes [0, {logits.shape[1]})")
    if logits.dtype in (torch.float16, torch.bfloat16):  # a half-precision classifier: softmax in float32
        logits = logits.float()
    return logits


__all__ = ["conditional", "classifier_free", "classifier_guided", "check_labels", "check_weight", "num_classes_of",
           "NULL_LABEL"]
