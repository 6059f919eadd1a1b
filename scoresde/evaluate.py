"""Sampling and likelihoods of whole data sets with progress, and the evaluation of a trained run.

These are the loops behind ``scoresde sample``, ``scoresde likelihood`` and ``scoresde evaluate``:
they split the work into batches, report progress (:mod:`scoresde.progress`) and collect the results.

* :func:`draw_samples`: ``n`` samples in batches; step solvers report steps, adaptive ODE solvers
  the number of score evaluations (NFE) and the current time. :func:`draw_class_samples`: the same
  for every class of a conditional model in turn.
* :func:`dataset_likelihood`: log-likelihoods (and bits/dim for quantised data) of a data set,
  batch by batch, with the NFE and current time of the ODE shown.
* :func:`choose_trace`: the divergence estimator that fits the dimension (exact only where cheap).
* :func:`evaluate_run`: sample quality (:mod:`scoresde.metrics`) and test bits/dim of a trained run.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from .errors import DataError, OptionError, ShapeError
from .progress import Progress, ScoreProgress

__all__ = ["SampleBatch", "DatasetLikelihood", "EvaluationResult", "draw_samples", "draw_class_samples", "dataset_likelihood",
           "choose_trace", "evaluate_run", "evaluate_model", "EXACT_TRACE_MAX_DIM", "get_quality_classifier", "quality_hook",
           "CLASSIFIER_FILE"]

#: Largest dimension for which ``trace="auto"`` computes the exact divergence (``D`` VJPs per
#: evaluation); above it the Hutchinson estimator (one VJP per probe) is used.
EXACT_TRACE_MAX_DIM = 32


def choose_trace(dim: int, trace: str = "auto") -> str:
    """``"exact"`` or ``"hutchinson"`` for data of ``dim`` dimensions.

    ``"auto"`` picks the exact trace when ``dim <= EXACT_TRACE_MAX_DIM`` (it costs ``dim``
    vector-Jacobian products per evaluation, against one per probe for Hutchinson) and Hutchinson
    otherwise; ``"exact"`` and ``"hutchinson"`` are returned unchanged.
    """
    if trace not in ("auto", "exact", "hutchinson"):
        raise OptionError(f"trace must be 'auto', 'exact' or 'hutchinson', got {trace!r}")
    if trace != "auto":
        return trace
    return "exact" if int(dim) <= EXACT_TRACE_MAX_DIM else "hutchinson"


# ---------------------------------------------------------------------- sampling
@dataclass
class SampleBatch:
    """Samples ``[n, *event]`` (CPU, float32), the total NFE and the wall seconds."""

    samples: Tensor
    nfe: int
    seconds: float


def draw_samples(
    sde: Any,
    score_fn: Callable[[Tensor, Tensor], Tensor],
    n: int,
    event_shape: Sequence[int],
    solver: Any = "ddim",
    steps: Optional[int] = None,
    batch_size: Optional[int] = None,
    generator: Optional[torch.Generator] = None,
    device: Optional[Union[str, torch.device]] = None,
    progress: Optional[bool] = None,
    desc: str = "sample",
    **solve_options: Any,
) -> SampleBatch:
    """Draw ``n`` samples with :func:`scoresde.solve`, ``batch_size`` at a time, reporting progress.

    Args:
        sde, score_fn: the model.
        n: number of samples; event_shape: shape of one sample.
        solver: a solver name or object (see :data:`scoresde.SOLVERS`).
        steps: solver steps (the solver's default when ``None``).
        batch_size: samples per :func:`scoresde.solve` call (default: all at once).
        generator, device: as in :func:`scoresde.solve`.
        progress: ``False`` prints nothing; otherwise progress goes to stderr: steps for step
            solvers, percent of the time interval with NFE and ``t`` for adaptive ODE solvers.
        **solve_options: further arguments of :func:`scoresde.solve` (``eps``, ``denoise``, solver options).

    Returns:
        A :class:`SampleBatch`.
    """
    from .solvers import make_solver, solve

    event_shape = tuple(int(s) for s in event_shape)
    n = int(n)
    batch = int(batch_size or n)
    options = {k: v for k, v in solve_options.items() if k in ("eps", "denoise", "x_init", "grid")}
    solver_options = {k: v for k, v in solve_options.items() if k not in options}
    solver_obj = make_solver(solver, **solver_options)
    adaptive = bool(getattr(solver_obj, "adaptive", False))
    eps_default = options.get("eps") or solver_obj.default_eps
    n_steps = int(steps or solver_obj.steps_for(sde, torch.Size([min(n, int(batch_size or n)), *event_shape]), eps_default))
    batches = math.ceil(n / batch)
    if adaptive:
        bar = Progress(100, desc, "%", enabled=progress)
        eps = options.get("eps") or getattr(solver_obj, "default_eps", 1e-3)
        score = ScoreProgress(score_fn, bar, sde.T, eps, sde=sde)
    else:
        bar = Progress(batches * n_steps, desc, "step", enabled=progress)
        score = score_fn
    chunks, nfe = [], 0
    t0 = time.perf_counter()
    with bar:
        for j, start in enumerate(range(0, n, batch)):
            b = min(batch, n - start)
            callback = None
            if adaptive:
                score.segment(100.0 * start / n, 100.0 * b / n)
            else:
                done = j * n_steps

                def callback(i: int, t_next: Tensor, x: Tensor, done: int = done) -> None:
                    bar.set(done + i + 1)

            res = solve(sde, score, (b, *event_shape), solver=solver_obj, steps=steps, generator=generator,
                        device=device, callback=callback, **options)
            chunks.append(res.samples.float().cpu())
            nfe += res.nfe
            if not adaptive:
                bar.set((j + 1) * n_steps, NFE=nfe)
    return SampleBatch(torch.cat(chunks), nfe, time.perf_counter() - t0)


def draw_class_samples(
    sde: Any,
    score_for_class: Callable[[int], Callable[[Tensor, Tensor], Tensor]],
    n: int,
    num_classes: int,
    event_shape: Sequence[int],
    *,
    desc: str = "sample",
    **draw_options: Any,
) -> SampleBatch:
    """``n`` samples of every class in turn: sample ``i`` is of class ``i mod K``.

    Class ``k``'s samples (``ceil((n - k) / K)`` of them) are drawn together by :func:`draw_samples`
    with the score function ``score_for_class(k)``, classes in order, so that one ``generator`` gives
    the same result on every run.

    Args:
        sde: the SDE.
        score_for_class: ``k -> score_fn(x, t)`` of class ``k`` (e.g. ``lambda k:
            guidance.classifier_free(score, k, w)``).
        n: number of samples; num_classes: ``K``; event_shape: shape of one sample.
        desc: the progress label (the class is appended).
        **draw_options: passed to :func:`draw_samples` (``solver``, ``steps``, ``batch_size``,
            ``generator``, ``device``, ``progress`` ...).

    Returns:
        A :class:`SampleBatch` whose ``samples`` are ``[n, *event_shape]``, in label order ``i mod K``.
    """
    n, num_classes = int(n), int(num_classes)
    if num_classes < 1:
        raise OptionError(f"num_classes must be positive, got {num_classes}")
    labels = torch.arange(n) % num_classes
    out, nfe, t0 = None, 0, time.perf_counter()
    for k in range(min(num_classes, n)):
        idx = (labels == k).nonzero().squeeze(1)
        part = draw_samples(sde, score_for_class(k), idx.numel(), event_shape, desc=f"{desc} class {k}", **draw_options)
        if out is None:
            out = part.samples.new_empty((n, *part.samples.shape[1:]))
        out[idx] = part.samples
        nfe += part.nfe
    if out is None:
        out = torch.empty((0, *event_shape))
    return SampleBatch(out, nfe, time.perf_counter() - t0)


# ---------------------------------------------------------------------- likelihoods
@dataclass
class DatasetLikelihood:
    """Log-likelihoods of a data set.

    Attributes:
        log_prob: ``[N]`` float64 log-densities in nats (of the dequantized points for quantised data).
        bits_per_dim: ``[N]`` float64 bits per dimension for quantised data, else ``None``.
        trace: the divergence estimator used; nfe: score evaluations in all; seconds: wall time.
    """

    log_prob: Tensor
    bits_per_dim: Optional[Tensor]
    trace: str
    nfe: int
    seconds: float

    def summary(self) -> Dict[str, Any]:
        """Means and standard errors (over examples; Hutchinson's probe noise included) as a dict."""
        from .metrics import mean_and_stderr

        lp, lp_se = mean_and_stderr(self.log_prob)
        out: Dict[str, Any] = {"log_prob_mean": lp, "log_prob_stderr": lp_se, "nfe": self.nfe,
                               "num": int(self.log_prob.shape[0]), "trace": self.trace}
        if self.bits_per_dim is not None:
            b, b_se = mean_and_stderr(self.bits_per_dim)
            out.update(bits_per_dim=b, bits_per_dim_stderr=b_se)
        return out


def dataset_likelihood(
    sde: Any,
    score_fn: Callable[[Tensor, Tensor], Tensor],
    x: Tensor,
    *,
    levels: Optional[int] = None,
    data_range: Optional[Tuple[float, float]] = None,
    dequantization: Optional[Tuple[float, float]] = None,
    trace: str = "auto",
    n_probes: int = 1,
    repeats: int = 1,
    batch_size: int = 64,
    generator: Optional[torch.Generator] = None,
    device: Optional[Union[str, torch.device]] = None,
    progress: Optional[bool] = None,
    desc: str = "likelihood",
    **likelihood_options: Any,
) -> DatasetLikelihood:
    """Log-likelihood (and bits/dim for quantised data) of every example of ``x``, in batches, with progress.

    Args:
        sde, score_fn: the model.
        x: data ``[N, *event]`` in the model's range (quantised data: on the levels of
            :func:`scoresde.data.to_model_range`).
        levels, data_range: for quantised data, the number of levels and the ``(lo, hi)`` the
            levels were mapped to; bits/dim then use uniform dequantization (:func:`scoresde.bits_per_dim`).
        dequantization: the interval the dequantization bins tile on the model's scale (default:
            :func:`scoresde.data.dequantization_range` of ``levels`` and ``data_range``, bins centred on the levels).
        trace: ``"auto"`` (see :func:`choose_trace`), ``"exact"`` or ``"hutchinson"``.
        n_probes: Hutchinson probes; repeats: dequantization draws (quantised data).
        batch_size: examples per ODE solve.
        generator, device: randomness and placement.
        progress: ``False`` prints nothing; otherwise the percentage done with the NFE and the ODE's
            current time go to stderr.
        **likelihood_options: ``eps``, ``method``, ``rtol``, ``atol``, ... of :func:`scoresde.log_likelihood`.

    Returns:
        A :class:`DatasetLikelihood`.
    """
    from .data import dequantization_range, to_levels
    from .likelihood import bits_per_dim, log_likelihood

    if x.ndim < 2 or x.shape[0] < 1:
        raise ShapeError(f"x must be [N, *event] with N >= 1, got shape {tuple(x.shape)}")
    device = torch.device(device) if device is not None else x.device
    dim = int(x[0].numel())
    trace = choose_trace(dim, trace)
    options = dict(likelihood_options, trace=trace)
    if trace == "hutchinson":
        options["n_probes"] = n_probes
    eps = float(options.get("eps", 1e-5))
    n = x.shape[0]
    bar = Progress(100, desc, "%", enabled=progress)
    score = ScoreProgress(score_fn, bar, eps, sde.T, sde=sde)
    log_probs, bpds = [], []
    t0 = time.perf_counter()
    with bar:
        for start in range(0, n, batch_size):
            xb = x[start : start + batch_size].to(device)
            b = xb.shape[0]
            score.segment(100.0 * start / n, 100.0 * b / n, passes=repeats if levels else 1)
            if levels:
                lo, hi = data_range or (-1.0, 1.0)
                bins = dequantization or dequantization_range(levels, (lo, hi))
                res = bits_per_dim(sde, score, to_levels(xb, levels, (lo, hi)), levels=levels, data_range=bins,
                                   repeats=repeats, generator=generator, **options)
                width = (bins[1] - bins[0]) / levels
                bpd = res.bits_per_dim.detach().cpu().double()
                bpds.append(bpd)
                # log p of the dequantized points: -(bpd D ln 2) - D log(bin width)
                log_probs.append(-(bpd * dim * math.log(2.0)) - dim * math.log(width))
            else:
                xd = xb.double() if device.type != "mps" else xb
                res = log_likelihood(sde, score, xd, generator=generator, score_dtype=torch.float32, **options)
                log_probs.append(res.log_prob.detach().cpu().double())
    return DatasetLikelihood(torch.cat(log_probs), torch.cat(bpds) if bpds else None, trace, score.nfe,
                             time.perf_counter() - t0)


# ---------------------------------------------------------------------- evaluating a run
@dataclass
class EvaluationResult:
    """What :func:`evaluate_run` measured.

    Attributes:
        quality: the :class:`scoresde.metrics.SampleQuality` of the samples.
        likelihood: test-set log-likelihoods and bits/dim (``None`` when skipped).
        samples: the samples ``[n, *event]`` (CPU).
        sampling: solver name, steps, NFE and seconds of the sampling.
    """

    quality: Any
    likelihood: Optional[DatasetLikelihood]
    samples: Tensor
    sampling: Dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, Any]:
        """A JSON-able summary."""
        out = {"sampling": dict(self.sampling), **self.quality.to_dict()}
        if self.likelihood is not None:
            out["likelihood"] = {**self.likelihood.summary(), "seconds": round(self.likelihood.seconds, 2)}
        return out


def evaluate_run(checkpoint: Union[str, Path], classifier: Any, *, device: Union[str, torch.device] = "cpu",
                 use_ema: bool = True, **options: Any) -> EvaluationResult:
    """Sample quality and test bits/dim of a run trained by scoresde: :func:`evaluate_model` of its model.

    Args:
        checkpoint: a run directory or checkpoint file.
        classifier: a :class:`scoresde.metrics.QualityClassifier` trained on the run's data set.
        device: where to put the model.
        use_ema: load the EMA weights (default) rather than the raw ones.
        **options: the options of :func:`evaluate_model`.
    """
    from .pretrained.spec import from_run

    return evaluate_model(from_run(checkpoint, use_ema=use_ema, device=torch.device(device)), classifier, **options)


def evaluate_model(
    model: Any,
    classifier: Any,
    *,
    data_dir: Optional[Union[str, Path]] = None,
    num: int = 1000,
    solver: str = "ddim",
    steps: Optional[int] = None,
    batch_size: int = 250,
    likelihood_num: int = 16,
    likelihood_options: Optional[Dict[str, Any]] = None,
    threshold: float = 0.9,
    seed: int = 0,
    progress: Optional[bool] = None,
    guidance: Optional[float] = None,
    **solver_options: Any,
) -> EvaluationResult:
    """Sample quality and test bits/dim of an image model (a run, or a published model).

    Args:
        model: a :class:`scoresde.pretrained.PretrainedModel` (:func:`scoresde.pretrained.spec.load_model_spec`).
        classifier: a :class:`scoresde.metrics.QualityClassifier` trained on the model's data set.
        data_dir: the data folder (default: the run's, then ``SCORESDE_DATA``).
        num: samples to draw; solver, steps, batch_size, solver_options: how.
        likelihood_num: test images for bits/dim (0: skip); likelihood_options: for
            :func:`dataset_likelihood` (default: Hutchinson, dopri5 at ``rtol = atol = 1e-5``).
        threshold: the confidence threshold.
        seed: seed of the samples and of the likelihood's noise.
        progress: as in :func:`draw_samples`.
        guidance: for a class-conditional model, sample every class in turn (:func:`draw_class_samples`)
            with classifier-free guidance of this weight (0: the plain conditional score); ``None``
            samples the unconditional score (the null label). Bits/dim are always unconditional.

    Returns:
        An :class:`EvaluationResult`.
    """
    from .data import get_dataset, to_levels, to_model_range
    from .metrics import sample_quality

    device, event, image = model.device, tuple(model.event_shape), tuple(model.data_shape)
    if len(image) != 3:
        raise ShapeError(f"evaluate needs an image model; this model's examples have shape {image}")
    if list(classifier.event_shape) != list(image):
        raise ShapeError(f"the classifier was trained on images of shape {tuple(classifier.event_shape)} "
                         f"({classifier.data}) but the model makes images of shape {image}")
    cfg = model.run_config
    data_dir = data_dir or (cfg.data_dir if cfg is not None else None)
    if data_dir is not None and not Path(data_dir).exists():
        data_dir = None  # the run was trained elsewhere: fall back to SCORESDE_DATA
    test = get_dataset(model.data, data_dir=data_dir, split="test")
    if test.data.shape[0] < 2:
        raise DataError(f"the test split of {model.data} has fewer than 2 images")
    if test.discrete_levels and tuple(test.data_range) != tuple(model.data_range):  # the same pixels on the model's scale
        test.data = to_model_range(to_levels(test.data, test.discrete_levels, tuple(test.data_range)), test.discrete_levels,
                                   tuple(model.data_range))
    gen = torch.Generator(device=device).manual_seed(seed)
    options = dict(solver=solver, steps=steps, batch_size=batch_size, generator=gen, device=device, progress=progress,
                   desc=f"sample ({solver})", **solver_options)
    score = model.score_fn
    if guidance is None:
        drawn = draw_samples(model.sde, score, num, event, **options)
    else:
        from .errors import LabelError
        from .guidance import classifier_free

        if not getattr(score, "is_conditional", False):
            raise LabelError("guidance needs a class-conditional run (train it with --conditional)")
        w = float(guidance)
        drawn = draw_class_samples(model.sde, lambda k: classifier_free(score, k, w), num, score.num_classes, event,
                                   **options)
    drawn.samples = model.decode(drawn.samples)  # a latent run's codes become images
    samples = _to_classifier_scale(drawn.samples, model, classifier)
    quality = sample_quality(classifier, samples, _to_classifier_scale(test.data, model, classifier), threshold=threshold)
    lik = None
    if likelihood_num and model.latent is not None:
        opts = dict(trace="hutchinson", rtol=1e-5, atol=1e-5)
        opts.update(likelihood_options or {})
        lik = latent_likelihood(model, test.data[:likelihood_num], seed=seed, **opts)
    elif likelihood_num:
        opts = dict(trace="hutchinson", rtol=1e-5, atol=1e-5)
        opts.update(likelihood_options or {})
        lik = dataset_likelihood(model.sde, score, test.data[:likelihood_num], levels=model.discrete_levels,
                                 data_range=tuple(model.data_range), dequantization=model.dequantization_range(),
                                 generator=torch.Generator(device=device).manual_seed(seed), device=device,
                                 progress=progress, desc="test bits/dim", **opts)
    sampling = {"solver": solver, "steps": steps, "nfe": drawn.nfe, "seconds": round(drawn.seconds, 2), "num": num,
                "guidance": guidance}
    return EvaluationResult(quality, lik, drawn.samples, sampling)


def latent_likelihood(model: Any, images: Tensor, *, seed: int = 0, n_samples: int = 2, batch_size: int = 16,
                      **likelihood_options: Any) -> DatasetLikelihood:
    """The likelihood bound of a latent run on ``images`` ``[N, C, H, W]`` (:meth:`scoresde.latent.LatentSpace.bound`).

    ``bits_per_dim`` holds the per-image bounds on ``-log2 P(x) / D`` and ``log_prob`` the matching bound on
    ``log P(x)`` in nats; ``trace`` names the divergence estimator of the codes' density.
    """
    device = model.device
    gen = torch.Generator(device=device).manual_seed(seed)
    t0, parts, nfe = time.perf_counter(), [], 0
    for i in range(0, images.shape[0], batch_size):
        res = model.latent.bound(images[i:i + batch_size], model.sde, model.score_fn, n_samples=n_samples, generator=gen,
                                 **likelihood_options)
        parts.append(res.bits_per_dim)
        nfe += res.nfe
    bpd = torch.cat(parts).double()
    dims = math.prod(model.data_shape)
    return DatasetLikelihood(-(bpd * dims * math.log(2.0)), bpd, str(likelihood_options.get("trace", "auto")), nfe,
                             time.perf_counter() - t0)


def _to_classifier_scale(x: Tensor, model: Any, classifier: Any) -> Tensor:
    """Images on the model's scale mapped affinely to the classifier's data range (``[0, 1]`` -> ``[-1, 1]``, say)."""
    lo, hi = (float(v) for v in model.data_range)
    clo, chi = (float(v) for v in classifier.data_range)
    if (lo, hi) == (clo, chi):
        return x
    return clo + (chi - clo) * (x - lo) / (hi - lo)


# ---------------------------------------------------------------------- the quality classifier of a run
#: File name of the sample-quality classifier inside a run directory.
CLASSIFIER_FILE = "classifier.pt"
#: Samples and DDIM steps of the periodic quality report of ``train --eval-every``.
EVAL_SAMPLES, EVAL_STEPS = 256, 50


def get_quality_classifier(path: Optional[Union[str, Path]], run: Union[str, Path], data: str,
                           data_dir: Optional[Union[str, Path]], device: Any, quiet: bool = False) -> Any:
    """The quality classifier at ``path`` or ``RUN/classifier.pt``; trained on ``data`` and saved there when neither exists.

    Returns:
        A :class:`scoresde.metrics.QualityClassifier` on ``device``.
    """
    from .metrics import load_quality_classifier, train_quality_classifier

    if path is not None:
        return load_quality_classifier(path, device=device)
    run = Path(run)
    default = (run if run.is_dir() else run.parent) / CLASSIFIER_FILE
    if default.is_file():
        return load_quality_classifier(default, device=device)
    if not quiet:
        print(f"note: no classifier at {default}; training one on {data} (done once, saved there)", file=sys.stderr, flush=True)
    clf = train_quality_classifier(data, data_dir=data_dir, device=device, progress=False if quiet else None)
    clf.save(default)
    if not quiet:
        print(f"classifier: test accuracy {100 * clf.test_accuracy:.2f}%, saved to {default}", file=sys.stderr, flush=True)
    return clf.to(device)


def quality_hook(trainer: Any, every: int, classifier: Optional[str], quiet: bool = False,
                 num: Optional[int] = None, steps: Optional[int] = None) -> Callable[[Any], Optional[Dict[str, Any]]]:
    """A :attr:`~scoresde.training.Trainer.on_checkpoint` hook: sample quality every ``every`` steps.

    Draws ``num`` DDIM samples (``steps`` steps; default :data:`EVAL_SAMPLES`, :data:`EVAL_STEPS`) from the EMA
    weights, measures them with the quality classifier against the test split and returns the figures (which
    the trainer logs); also prints one line on stderr. The classifier is loaded (or trained and saved into the
    run) once, here.

    Raises:
        ShapeError: the run's model is not an image model.
    """
    from .checkpoint import LATEST
    from .data import get_dataset
    from .metrics import reference_statistics, sample_quality

    cfg = trainer.config
    num, steps = num or EVAL_SAMPLES, steps or EVAL_STEPS
    if len(cfg.event_shape) != 3:
        raise ShapeError("--eval-every measures image models only")
    if not trainer.dist.is_main:
        return lambda t: None
    clf = get_quality_classifier(classifier, Path(cfg.out) / LATEST, cfg.data, cfg.data_dir, trainer.device, quiet)
    ref = reference_statistics(clf, get_dataset(cfg.data, data_dir=cfg.data_dir, split="test").data)

    def hook(t: Any) -> Optional[Dict[str, Any]]:
        if t.step % every and t.step != t.config.steps:
            return None
        gen = torch.Generator(device=t.device).manual_seed(cfg.seed)
        x = draw_samples(t.sde, t.ema_model, num, cfg.event_shape, solver="ddim", steps=steps, generator=gen,
                         device=t.device, progress=False).samples
        q = sample_quality(clf, x, ref)
        if not quiet:
            print(f"\nstep {t.step}: {q.summary()}", file=sys.stderr, flush=True)
        return {"fld": q.fld, "confident_fraction": q.confident_fraction, "min_class_fraction": q.min_class_fraction}

    return hook
