"""Sample quality, in one module: a small quality classifier, the Fréchet LeNet distance, confidence and
coverage for images, the sliced Wasserstein distance for low-dimensional data, and standard errors.

(The noise-conditional classifier of classifier *guidance* is another thing: :mod:`scoresde.classifier`.)

The usual image metric, FID, compares Inception-v3 features of samples and data; its weights must be
downloaded and it says little about 28x28 grey digits. This module trains a small LeNet-style
classifier on the data set's own training split instead (about a minute on a CPU for MNIST; done
once, saved to a file and loaded safely), and computes from it:

* the **Fréchet LeNet distance** (FLD): the Fréchet (2-Wasserstein) distance between Gaussians fitted
  to the classifier's penultimate-layer features of samples and of test images,

      FLD = |m_1 - m_2|^2 + tr(S_1 + S_2 - 2 (S_1^{1/2} S_2 S_1^{1/2})^{1/2}),

  the formula of FID with a different feature map (lower is better; test images against other test
  images give the floor set by the sample size);
* the **confident fraction**: the share of samples classified as one of the data set's classes with
  probability at least a threshold (0.9 by default). A plain classifier is confidently wrong on
  images unlike any class (LeNet trained on MNIST alone calls uniform noise an "8" with probability
  above 0.9), so the classifier has one extra *reject* class, trained on synthetic non-images (uniform
  and Gaussian noise, sparse speckle, constant images); noise tiles land there and do not count;
* the **class coverage**: the share of samples in each predicted class; a sampler that drops or
  over-produces a mode shows it here (the smallest share is reported as ``min_class_fraction``).

Example:
    >>> import torch
    >>> from scoresde.metrics import frechet_distance
    >>> m, S = torch.zeros(3), torch.eye(3)
    >>> round(frechet_distance(m, S, m + 1, 4 * S), 6)  # |1|^2 * 3 + 3 * (1 + 4 - 2 * 2)
    6.0
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._validation import boolean, check_generator, class_count, finite_float, positive_int, seed_int
from .checkpoint import load_artifact, save_artifact
from .errors import CheckpointError, DataError, OptionError, ShapeError

__all__ = [
    "LeNet", "QualityClassifier", "SampleQuality", "FeatureStatistics",
    "train_quality_classifier", "load_quality_classifier", "non_images", "sqrtm_psd", "frechet_distance",
    "feature_statistics", "reference_statistics", "sample_quality", "sliced_wasserstein", "SlicedReference", "mean_and_stderr",
]

#: Artifact kind and versions of a saved quality classifier (version 1 files carry no digest).
QUALITY_CLASSIFIER_KIND = "classifier"
QUALITY_CLASSIFIER_VERSION = 2
PathLike = Union[str, "Path"]


# ---------------------------------------------------------------------- linear algebra
def sqrtm_psd(a: Tensor) -> Tensor:
    """The symmetric positive semi-definite square root of a symmetric PSD matrix.

    Computed from the eigendecomposition ``a = V diag(w) V^T`` as ``V diag(sqrt(max(w, 0))) V^T`` in
    float64 (tiny negative eigenvalues from round-off are set to zero).

    Args:
        a: ``[D, D]`` symmetric positive semi-definite.

    Returns:
        ``[D, D]`` float64, ``r`` with ``r @ r = a`` (up to round-off) and ``r`` symmetric PSD.
    """
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ShapeError(f"sqrtm_psd needs a square matrix [D, D], got shape {tuple(a.shape)}")
    a = a.detach().double()
    a = 0.5 * (a + a.T)  # symmetrise round-off
    w, v = torch.linalg.eigh(a)
    return (v * w.clamp_min(0).sqrt()) @ v.T


def frechet_distance(mu1: Tensor, sigma1: Tensor, mu2: Tensor, sigma2: Tensor) -> float:
    """Squared 2-Wasserstein (Fréchet) distance between ``N(mu1, sigma1)`` and ``N(mu2, sigma2)``.

    ``|mu1 - mu2|^2 + tr(sigma1) + tr(sigma2) - 2 tr((sigma1^{1/2} sigma2 sigma1^{1/2})^{1/2})``,
    with both square roots taken by :func:`sqrtm_psd` (symmetric eigendecompositions, float64),
    which stays real and stable for singular covariances (fewer samples than features).

    Args:
        mu1, mu2: means ``[D]``; sigma1, sigma2: covariances ``[D, D]``.

    Returns:
        The distance (a float >= 0, up to round-off), in squared feature units.

    Raises:
        DataError: a mean or covariance holding NaN or infinity, or a covariance that is not symmetric positive
            semi-definite (a negative eigenvalue beyond round-off: not a covariance, and its square root would be
            silently clipped).
        ShapeError: shapes that do not match.
    """
    mu1, mu2 = (_finite_tensor(m, name).reshape(-1) for m, name in ((mu1, "mu1"), (mu2, "mu2")))
    d = mu1.shape[0]
    if mu2.shape[0] != d:
        raise ShapeError(f"mu1 and mu2 must have the same length, got {d} and {mu2.shape[0]}")
    s1, s2 = _finite_tensor(sigma1, "sigma1"), _finite_tensor(sigma2, "sigma2")
    for name, s in (("sigma1", s1), ("sigma2", s2)):
        if tuple(s.shape) != (d, d):
            raise ShapeError(f"{name} must be [{d}, {d}] to match the means mu1 and mu2 [{d}], got {tuple(s.shape)}")
        _check_covariance(s, name)
    r1 = sqrtm_psd(s1)
    cross = sqrtm_psd(r1 @ s2 @ r1)
    value = (mu1 - mu2).pow(2).sum() + torch.trace(s1) + torch.trace(s2) - 2.0 * torch.trace(cross)
    return float(value)


def _finite_tensor(a: Any, name: str) -> Tensor:
    """``a`` as a float64 CPU tensor; :class:`DataError` for NaN/inf, :class:`ShapeError` for what is not a real tensor."""
    if not isinstance(a, Tensor) or a.device.type == "meta" or a.is_complex() or a.dtype == torch.bool:
        raise ShapeError(f"{name} must be a real tensor, got {type(a).__name__} {getattr(a, 'dtype', '')}".rstrip())
    a = a.detach().double().cpu()
    if not bool(torch.isfinite(a).all()):
        raise DataError(f"{name} holds NaN or infinite values")
    return a


def _check_covariance(s: Tensor, name: str, rtol: float = 1e-6) -> None:
    """Raise :class:`DataError` unless ``s`` ``[D, D]`` is symmetric positive semi-definite up to round-off."""
    if not s.numel():
        return
    if float((s - s.T).abs().max()) > rtol * max(float(s.abs().max()), 1e-300):
        raise DataError(f"{name} is not symmetric, so not a covariance matrix")
    w = torch.linalg.eigvalsh(0.5 * (s + s.T))
    if float(w.min()) < -rtol * max(float(w.abs().max()), 1e-300):
        raise DataError(f"{name} is not positive semi-definite (smallest eigenvalue {float(w.min()):.3g}, largest "
                        f"{float(w.max()):.3g}), so not a covariance matrix")


@dataclass
class FeatureStatistics:
    """Mean ``[D]`` and covariance ``[D, D]`` (float64, unbiased) of ``n`` feature vectors."""

    mean: Tensor
    cov: Tensor
    n: int


def feature_statistics(features: Tensor) -> FeatureStatistics:
    """Mean and unbiased covariance of features ``[N, D]`` (float64), ``N >= 2``."""
    if features.ndim != 2 or features.shape[0] < 2:
        raise ShapeError(f"features must be [N, D] with N >= 2, got shape {tuple(features.shape)}")
    f = features.detach().double()
    mean = f.mean(0)
    c = f - mean
    return FeatureStatistics(mean, c.T @ c / (f.shape[0] - 1), int(f.shape[0]))


# ---------------------------------------------------------------------- the classifier
class LeNet(nn.Module):
    """A LeNet-style classifier for small images: ``[B, C, H, W] -> [B, num_classes]`` logits.

    Two ``3x3`` convolution + ReLU + ``2x2`` max-pool stages (32 and 64 channels), an adaptive
    average pool to ``4x4``, a fully connected layer to ``feature_dim`` features (ReLU) and a
    linear layer to the logits. :meth:`features` returns the ``[B, feature_dim]`` features that the
    Fréchet LeNet distance compares. About 0.15M parameters; 99% test accuracy on MNIST after two epochs.

    Args:
        in_channels: image channels ``C``.
        num_classes: number of classes.
        feature_dim: width of the feature layer.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, feature_dim: int = 128):
        super().__init__()
        in_channels, feature_dim = positive_int(in_channels, "in_channels"), positive_int(feature_dim, "feature_dim")
        num_classes = class_count(num_classes, "num_classes")
        self.config = dict(in_channels=in_channels, num_classes=num_classes, feature_dim=feature_dim)
        self.conv1 = nn.Conv2d(in_channels, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.fc = nn.Linear(64 * 4 * 4, feature_dim)
        self.head = nn.Linear(feature_dim, num_classes)

    def features(self, x: Tensor) -> Tensor:
        """Penultimate-layer features ``[B, feature_dim]`` of images ``[B, C, H, W]``."""
        h = F.max_pool2d(F.relu(self.conv1(x)), 2)
        h = F.max_pool2d(F.relu(self.conv2(h)), 2)
        h = F.adaptive_avg_pool2d(h, 4).flatten(1)
        return F.relu(self.fc(h))

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``[B, num_classes]``."""
        return self.head(self.features(x))


@dataclass
class QualityClassifier:
    """A trained :class:`LeNet` with what it was trained on.

    Attributes:
        net: the network (eval mode, no gradients).
        data: name of the data set (``"mnist"``, ``"fashion-mnist"`` or a file path).
        event_shape: shape of one image ``[C, H, W]``.
        data_range: ``[lo, hi]`` of the images the network saw (the models' range, ``[-1, 1]`` for MNIST).
        test_accuracy: accuracy on the test split (a float in ``[0, 1]``).
        info: further details (epochs, training seconds, ...).
        reject_class: index of the extra "not an image of the data set" class (the last one), or ``None``.
    """

    net: LeNet
    data: str
    event_shape: List[int]
    data_range: List[float]
    test_accuracy: float
    info: Dict[str, Any] = field(default_factory=dict)
    reject_class: Optional[int] = None

    @torch.no_grad()
    def _apply(self, x: Tensor, what: str, batch_size: int = 500) -> Tensor:
        if x.ndim != 4 or list(x.shape[1:]) != list(self.event_shape):
            raise ShapeError(
                f"the classifier was trained on images of shape {tuple(self.event_shape)} ({self.data}); "
                f"got a tensor of shape {tuple(x.shape)}"
            )
        device = next(self.net.parameters()).device
        out = []
        for start in range(0, x.shape[0], batch_size):
            xb = x[start : start + batch_size].to(device=device, dtype=torch.float32)
            out.append((self.net.features(xb) if what == "features" else self.net(xb).softmax(-1)).cpu())
        return torch.cat(out)

    def features(self, x: Tensor) -> Tensor:
        """Features ``[N, feature_dim]`` (CPU, float32) of images ``[N, C, H, W]`` in the data range."""
        return self._apply(x, "features")

    def probabilities(self, x: Tensor) -> Tensor:
        """Class probabilities ``[N, num_classes]`` (CPU, float32) of images ``[N, C, H, W]``."""
        return self._apply(x, "probs")

    def to(self, device: Union[str, torch.device]) -> "QualityClassifier":
        """Move the network to ``device``; returns ``self``."""
        self.net.to(device)
        return self

    def save(self, path: PathLike) -> Path:
        """Write the classifier to ``path`` (an artifact of tensors and plain values, atomically); returns the path."""
        return save_artifact(path, QUALITY_CLASSIFIER_KIND, QUALITY_CLASSIFIER_VERSION, {
            "config": dict(self.net.config),
            "state_dict": {k: v.detach().cpu() for k, v in self.net.state_dict().items()},
            "data": self.data, "event_shape": list(self.event_shape), "data_range": list(self.data_range),
            "test_accuracy": float(self.test_accuracy), "info": dict(self.info),
            "reject_class": -1 if self.reject_class is None else int(self.reject_class),
        })


def load_quality_classifier(path: PathLike, device: Union[str, torch.device] = "cpu") -> QualityClassifier:
    """Load a classifier written by :meth:`QualityClassifier.save` (``torch.load(weights_only=True)``).

    Raises:
        CheckpointError: the file is missing, unreadable or not a scoresde classifier; the message
            says how to make one (``scoresde classifier``).
    """
    p = Path(path)
    make = f"train one with `scoresde classifier --data mnist --out {p}`"
    state = load_artifact(p, QUALITY_CLASSIFIER_KIND, (1, 2), hint=make, unchecked_versions=(1,))
    try:
        net = LeNet(**state["config"])
        net.load_state_dict(state["state_dict"])
        clf = QualityClassifier(net.eval().requires_grad_(False), str(state["data"]), [int(s) for s in state["event_shape"]],
                         [float(v) for v in state["data_range"]], float(state["test_accuracy"]), dict(state.get("info", {})),
                         None if int(state.get("reject_class", -1)) < 0 else int(state["reject_class"]))
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{p} is an incomplete or damaged classifier file ({e}); {make}") from None
    return clf.to(device)


def train_quality_classifier(
    data: str = "mnist",
    data_dir: Optional[PathLike] = None,
    epochs: int = 2,
    batch_size: int = 128,
    lr: float = 2e-3,
    seed: int = 0,
    device: Union[str, torch.device] = "cpu",
    progress: Optional[bool] = None,
    reject_class: bool = True,
) -> QualityClassifier:
    """Train a :class:`LeNet` on the training split of a labelled image data set.

    Adam with a cosine learning-rate decay, light augmentation (random shifts of up to 2 pixels);
    the test accuracy is measured on the test split and stored with the classifier. With
    ``reject_class`` the network has one more output, trained on synthetic images that belong to no
    class (see :func:`non_images`), one for every eight real images of a batch.

    Args:
        data: ``"mnist"`` or ``"fashion-mnist"``.
        data_dir: the data folder (default: the environment variable ``SCORESDE_DATA``).
        epochs, batch_size, lr, seed: the training recipe.
        device: where to train.
        progress: ``False`` prints nothing; otherwise progress goes to stderr
            (see :class:`scoresde.progress.Progress`).

    Returns:
        The trained :class:`QualityClassifier` (call :meth:`QualityClassifier.save` to keep it).

    Raises:
        DataError: the data set has no labels or is missing.
    """
    from .data import get_dataset
    from .progress import Progress

    epochs, batch_size = positive_int(epochs, "epochs"), positive_int(batch_size, "batch_size")
    lr, seed = finite_float(lr, "lr", positive=True, maximum=1.0), seed_int(seed, "seed")
    reject_class = boolean(reject_class, "reject_class")
    train = get_dataset(data, data_dir=data_dir, split="train")
    test = get_dataset(data, data_dir=data_dir, split="test")
    if train.labels is None or train.data.ndim != 4:
        raise DataError(f"{data} has no class labels or is not an image data set; the classifier needs labelled images")
    device = torch.device(device)
    num_classes = int(train.labels.max()) + 1
    reject = num_classes if reject_class else None
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = LeNet(train.data.shape[1], num_classes + (1 if reject_class else 0)).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    n = train.data.shape[0]
    steps_per_epoch = math.ceil(n / batch_size)
    total = epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    lo = float(train.data_range[0]) if train.data_range else float(train.data.min())
    t0 = time.perf_counter()
    bar = Progress(total, "classifier", "step", enabled=progress)
    net.train()
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen)
        for start in range(0, n, batch_size):
            idx = perm[start : start + batch_size]
            x = _shift(train.data[idx], gen, 2, lo)
            y = train.labels[idx]
            if reject is not None:
                junk = non_images(max(1, len(idx) // 8), tuple(x.shape[1:]), (lo, float(train.data.max())), gen)
                x, y = torch.cat([x, junk]), torch.cat([y, torch.full((junk.shape[0],), reject, dtype=y.dtype)])
            loss = F.cross_entropy(net(x.to(device)), y.to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.update(1, loss=float(loss.detach()))
    bar.close()
    net.eval().requires_grad_(False)
    clf = QualityClassifier(net, data, list(train.data.shape[1:]), list(train.data_range or (lo, float(train.data.max()))), 0.0,
                     reject_class=reject)
    pred = clf.probabilities(test.data).argmax(-1)
    clf.test_accuracy = float((pred == test.labels).double().mean())
    clf.info = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed, "train_seconds": round(time.perf_counter() - t0, 1),
                "num_classes": num_classes}
    return clf


def non_images(n: int, shape: tuple, data_range: tuple, gen: torch.Generator) -> Tensor:
    """``n`` synthetic images ``[n, *shape]`` that belong to no class, in ``data_range``.

    A quarter each: uniform noise; Gaussian noise (random mean and spread, clipped); sparse speckle
    (each pixel bright with a random probability up to 0.3 on a dark background); constant images of a
    random level.
    """
    lo, hi = data_range
    u = lambda *s: torch.rand(*s, generator=gen)  # noqa: E731
    kind = torch.randint(0, 4, (n,), generator=gen)
    uniform = u(n, *shape)
    gauss = (u(n, 1, 1, 1) + (0.1 + 0.5 * u(n, 1, 1, 1)) * torch.randn(n, *shape, generator=gen)).clamp(0, 1)
    speckle = (u(n, *shape) < 0.3 * u(n, 1, 1, 1)).to(uniform.dtype)
    const = u(n, 1, 1, 1).expand(n, *shape)
    x = torch.stack([uniform, gauss, speckle, const])[kind, torch.arange(n)]
    return lo + (hi - lo) * x


def _shift(x: Tensor, gen: torch.Generator, max_shift: int, fill: float) -> Tensor:
    """Translate each image ``[B, C, H, W]`` by a random integer offset in ``[-max_shift, max_shift]^2``."""
    B, _, H, W = x.shape
    pad = F.pad(x, (max_shift,) * 4, value=fill)
    off = torch.randint(0, 2 * max_shift + 1, (B, 2), generator=gen)
    rows = (off[:, 0, None] + torch.arange(H)).reshape(B, 1, H, 1).expand(B, x.shape[1], H, W + 2 * max_shift)
    cols = (off[:, 1, None] + torch.arange(W)).reshape(B, 1, 1, W).expand(B, x.shape[1], H, W)
    return pad.gather(2, rows).gather(3, cols)


# ---------------------------------------------------------------------- the figures
@dataclass
class SampleQuality:
    """Quality figures of ``n`` generated images against a reference set (see the module notes).

    Attributes:
        fld: Fréchet LeNet distance between samples and reference (lower is better).
        confident_fraction: share of samples classified as one of the data set's classes (not the
            reject class) with probability ``>= threshold``.
        mean_confidence: mean top class probability over the data set's classes.
        class_fractions: ``[num_classes]`` share of samples predicted as each class of the data set.
        min_class_fraction: the smallest entry of ``class_fractions``.
        reject_fraction: share of samples predicted as the reject class (0 without one).
        threshold: the confidence threshold.
        n: number of samples; n_reference: number of reference images.
    """

    fld: float
    confident_fraction: float
    mean_confidence: float
    class_fractions: List[float]
    min_class_fraction: float
    threshold: float
    n: int
    n_reference: int
    reject_fraction: float = 0.0

    def to_dict(self) -> Dict[str, Any]:
        """A JSON-able dict of the figures."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    def summary(self) -> str:
        """One line of text."""
        return (f"FLD {self.fld:.2f}; {100 * self.confident_fraction:.1f}% of {self.n} samples classified with confidence "
                f">= {self.threshold:g} (mean confidence {self.mean_confidence:.3f}); smallest class share "
                f"{100 * self.min_class_fraction:.1f}%; {100 * self.reject_fraction:.1f}% rejected as no digit")


def sample_quality(
    classifier: QualityClassifier,
    samples: Tensor,
    reference: Union[Tensor, FeatureStatistics],
    threshold: float = 0.9,
) -> SampleQuality:
    """Fréchet LeNet distance, confidence and class coverage of ``samples``.

    Args:
        classifier: a trained :class:`QualityClassifier` for the data set.
        samples: generated images ``[N, C, H, W]`` in the data range (values outside it are clipped
            to it, as they would be when written as an image); ``N >= 2``.
        reference: test images ``[M, C, H, W]`` or their :class:`FeatureStatistics`.
        threshold: confidence threshold of :attr:`SampleQuality.confident_fraction`.

    Returns:
        A :class:`SampleQuality`.

    Raises:
        DataError: samples (or reference images) that are not floating-point images or hold NaN or infinity (8-bit
            images must be mapped to the data range first: ``lo + (hi - lo) * x / 255``).
        OptionError: a ``threshold`` that is not a number in ``(0, 1)``.
        ShapeError: fewer than 2 samples, or images of another shape than the classifier's.
    """
    threshold = finite_float(threshold, "threshold")
    if not 0.0 < threshold < 1.0:
        raise OptionError(f"threshold must lie in (0, 1) (a class probability), got {threshold!r}")
    lo, hi = classifier.data_range
    x = _images(samples, "samples", (lo, hi), classifier.event_shape).clamp(lo, hi)
    if x.shape[0] < 2:
        raise ShapeError(f"sample_quality needs at least 2 samples, got {x.shape[0]}")
    if isinstance(reference, FeatureStatistics):
        ref = reference
    else:
        ref = feature_statistics(classifier.features(_images(reference, "reference", (lo, hi), classifier.event_shape)))
    stats = feature_statistics(classifier.features(x))
    probs = classifier.probabilities(x)
    conf, pred = probs.max(-1)
    counts = torch.bincount(pred, minlength=probs.shape[1]).double() / x.shape[0]
    real = torch.ones_like(pred, dtype=torch.bool)
    rejected = 0.0
    if classifier.reject_class is not None:
        real = pred != classifier.reject_class
        rejected = float(counts[classifier.reject_class])
        counts = torch.cat([counts[: classifier.reject_class], counts[classifier.reject_class + 1 :]])
    return SampleQuality(
        fld=frechet_distance(stats.mean, stats.cov, ref.mean, ref.cov),
        confident_fraction=float(((conf >= threshold) & real).double().mean()),
        mean_confidence=float(torch.where(real, conf, torch.zeros_like(conf)).double().mean()),
        class_fractions=[round(float(c), 6) for c in counts],
        min_class_fraction=float(counts.min()),
        threshold=float(threshold),
        n=int(x.shape[0]),
        n_reference=int(ref.n),
        reject_fraction=rejected,
    )


def _images(x: Any, name: str, data_range: Tuple[float, float], event_shape: List[int]) -> Tensor:
    """Images ``[N, *event_shape]`` as a float32 CPU tensor: floating point and finite, else :class:`DataError`."""
    lo, hi = data_range
    if not isinstance(x, Tensor) or x.device.type == "meta":
        raise DataError(f"{name} must be a tensor of images [N, C, H, W], got {type(x).__name__}")
    if x.ndim != 4 or list(x.shape[1:]) != list(event_shape):
        raise ShapeError(f"{name} must be images [N, {', '.join(map(str, event_shape))}] (what the classifier was trained on), "
                         f"got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise DataError(f"{name} must be floating-point images in the classifier's data range [{lo:g}, {hi:g}], got "
                        f"{x.dtype}; map 8-bit levels k to lo + (hi - lo) * k / 255 first (they are not clipped into it)")
    x = x.detach().float().cpu()
    if not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise DataError(f"{name} hold {bad} NaN or infinite values: the sampler diverged (or the images are damaged); "
                        "no quality figure can be computed from them")
    return x


def reference_statistics(classifier: QualityClassifier, images: Tensor) -> FeatureStatistics:
    """Feature statistics of reference images ``[M, C, H, W]`` (compute once, reuse for many sample sets)."""
    return feature_statistics(classifier.features(images))


# ---------------------------------------------------------------------- low-dimensional data
class SlicedReference:
    """The sorted projections of reference points on fixed directions, kept for many :func:`sliced_wasserstein` calls.

    Args:
        y: reference points ``[M, *event]``.
        n_projections: number of random directions (ignored when ``directions`` is given).
        generator: source of the directions.
        directions: fixed unit directions ``[P, D]``, ``D = prod(event)``.
    """

    def __init__(self, y: Tensor, n_projections: int = 256, generator: Optional[torch.Generator] = None,
                 directions: Optional[Tensor] = None):
        y = _finite_tensor(y, "y")
        if y.ndim < 1 or y.shape[0] < 1:
            raise ShapeError(f"y must be a point cloud [M, *event], got shape {tuple(y.shape)}")
        self.event_shape = tuple(y.shape[1:])
        d = math.prod(self.event_shape)
        if directions is None:
            n_projections = positive_int(n_projections, "n_projections")
            check_generator(generator)
            theta = torch.randn(n_projections, d, generator=generator, dtype=torch.float64)
            directions = theta / theta.norm(dim=1, keepdim=True)  # uniform directions on the sphere
        directions = _finite_tensor(directions, "directions")
        if directions.ndim != 2 or directions.shape[1] != d:
            raise ShapeError(f"directions must be [P, {d}], got {tuple(directions.shape)}")
        self.directions = directions
        self.sorted = _sorted_projections(y.reshape(y.shape[0], -1), directions)  # [P, M]

    def distance(self, x: Tensor) -> float:
        """:func:`sliced_wasserstein` of points ``x`` ``[N, *event]`` against the reference."""
        x = _finite_tensor(x, "x")
        if x.ndim < 1 or x.shape[0] < 1 or tuple(x.shape[1:]) != self.event_shape:
            raise ShapeError(f"x must be [N, *{self.event_shape}] like the reference, got {tuple(x.shape)}")
        px = _sorted_projections(x.reshape(x.shape[0], -1), self.directions)  # [P, N]
        n, m = px.shape[1], self.sorted.shape[1]
        py = self.sorted if m == n else _quantiles(self.sorted, (torch.arange(n, dtype=torch.float64) + 0.5) / n)
        return float(((px - py) ** 2).mean().sqrt())


def _sorted_projections(x: Tensor, directions: Tensor) -> Tensor:
    """Projections of ``x`` ``[N, D]`` on ``directions`` ``[P, D]``, each row sorted: ``[P, N]`` (float64).

    The rows are sorted with NumPy, several times faster than torch's CPU sort at these sizes (a metric, outside
    every sampling loop).
    """
    import numpy as np

    proj = (directions @ x.T).numpy()
    return torch.from_numpy(np.sort(proj, axis=1))


def _quantiles(sorted_rows: Tensor, levels: Tensor) -> Tensor:
    """Empirical quantiles of sorted rows ``[P, M]`` at ``levels`` ``[N]`` in (0, 1), linearly interpolated: ``[P, N]``."""
    m = sorted_rows.shape[1]
    pos = (levels * m - 0.5).clamp(0, m - 1)
    lo = pos.floor().long()
    hi = (lo + 1).clamp_max(m - 1)
    w = pos - lo.double()
    return (1 - w) * sorted_rows[:, lo] + w * sorted_rows[:, hi]


def sliced_wasserstein(
    x: Tensor, y: Union[Tensor, SlicedReference], n_projections: int = 256, generator: Optional[torch.Generator] = None,
    directions: Optional[Tensor] = None,
) -> float:
    """Sliced 2-Wasserstein distance between two point clouds.

    ``SW_2(x, y) = ( E_theta W_2^2(theta^T x, theta^T y) )^(1/2)`` with ``theta`` uniform on the unit sphere,
    estimated with ``n_projections`` random directions (or the given ``directions``). Each one-dimensional
    ``W_2^2`` is the mean squared difference of the two quantile functions at the ``N`` levels
    ``(i + 1/2) / N`` of ``x``: the sorted projections themselves when ``M = N``, ``y``'s quantiles linearly
    interpolated otherwise (so a larger reference set can be used). For repeated calls against one
    reference, build a :class:`SlicedReference` once and pass it as ``y``.

    Args:
        x: ``[N, *event]`` points.
        y: ``[M, *event]`` points of the same event shape, or a :class:`SlicedReference`.
        n_projections: number of random directions.
        generator: source of the directions.
        directions: fixed unit directions ``[P, D]`` instead (``D = prod(event)``).

    Returns:
        The distance (a float, in the units of the data).
    """
    if not isinstance(y, SlicedReference):
        x_checked = _finite_tensor(x, "x")
        if x_checked.ndim < 1 or x_checked.shape[0] < 1:
            raise ShapeError(f"x must be a point cloud [N, *event], got shape {tuple(x_checked.shape)}")
        y_checked = _finite_tensor(y, "y")
        if tuple(x_checked.shape[1:]) != tuple(y_checked.shape[1:]):
            raise ShapeError(f"point clouds must share an event shape, got {tuple(x_checked.shape)} and "
                             f"{tuple(y_checked.shape)}")
        y = SlicedReference(y_checked, n_projections, generator, directions)
    return y.distance(x)


def mean_and_stderr(v: Tensor) -> Tuple[float, float]:
    """Mean of ``v`` ``[N]`` and its standard error ``std / sqrt(N)`` (NaN for ``N = 1``)."""
    v = v.detach().double().reshape(-1)
    if v.numel() < 2:
        return float(v.mean()), math.nan
    return float(v.mean()), float(v.std(unbiased=True)) / math.sqrt(v.numel())
