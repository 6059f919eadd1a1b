"""The conditional side of the command line: ``train-classifier``, ``inpaint`` and the guidance flags of ``sample``.

Kept apart from :mod:`scoresde.cli`, which calls :func:`add_conditional_commands`,
:func:`add_guidance_flags` and :func:`guided_score`.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

GUIDANCE_FLAGS = ("class_label", "guidance", "classifier", "classifier_scale")

#: ``sample --class all``: every class in turn (sample ``i``, or the sample of seed ``i``, gets class ``i mod K``).
ALL_CLASSES = "all"


def _cli():
    from . import cli

    return cli


# ---------------------------------------------------------------------- parsers
def _class_or_all(text: str) -> Any:
    return ALL_CLASSES if text.strip().lower() == ALL_CLASSES else _cli()._nonneg_int(text)


def add_guidance_flags(s: argparse.ArgumentParser) -> None:
    """The ``sample`` flags for class-conditional sampling."""
    cli = _cli()
    g = s.add_argument_group("conditional sampling")
    g.add_argument("--class", dest="class_label", type=_class_or_all, metavar="K",
                   help="sample class K (a class-conditional model, or with --classifier); 'all': every class in turn, "
                   "sample i (or the sample of seed i) of class i mod K")
    g.add_argument("--guidance", type=float, metavar="W",
                   help="classifier-free guidance weight: (1 + W) s(x, t, K) - W s(x, t) (needs --class; 0 = conditional)")
    g.add_argument("--classifier", metavar="PATH", help="noise-conditional classifier file (scoresde train-classifier)")
    g.add_argument("--classifier-scale", type=cli._nonneg_float, metavar="S",
                   help="classifier guidance scale (default: 1 with --classifier)")


def add_conditional_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    """The ``train-classifier`` and ``inpaint`` sub-commands."""
    cli = _cli()
    from .solvers import SOLVERS

    c = sub.add_parser(
        "train-classifier",
        parents=[common],
        help="train a noise-conditional classifier for classifier guidance",
        description="Train a classifier p_t(y | x_t) on noisy labelled data (cross-entropy at random t). Give the score "
        "model's run with --checkpoint so that the classifier uses the same SDE.",
    )
    c.add_argument("--data", default="gmm", help="labelled data: mnist, fashion-mnist, moons, checkerboard, rings, gmm or PATH.npz with x and y")
    c.add_argument("--data-dir", help="folder with the MNIST-family files")
    c.add_argument("--n-train", type=cli._positive_int, help="number of training examples")
    c.add_argument("--checkpoint", help="the score model's run directory or checkpoint: its SDE is used")
    c.add_argument("--sde", choices=["vp", "subvp", "ve"], default="vp", help="forward SDE without --checkpoint (default: vp)")
    c.add_argument("--sde-arg", action="append", type=cli._key_value, default=[], metavar="KEY=VALUE", help="SDE argument")
    c.add_argument("--net-arg", action="append", type=cli._key_value, default=[], metavar="KEY=VALUE",
                   help="classifier argument, e.g. hidden=128 or channels=32 (repeatable)")
    c.add_argument("--steps", type=cli._positive_int, help="optimizer steps (default: 2000 vectors, 5000 images)")
    c.add_argument("--batch-size", type=cli._positive_int, help="batch size (default: 256 vectors, 128 images)")
    c.add_argument("--lr", type=cli._positive_float, help="learning rate (default: 2e-3 vectors, 5e-4 images)")
    c.add_argument("--seed", type=cli._nonneg_int, default=0, help="random seed (default: 0)")
    c.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    c.add_argument("--out", default="classifier.pt", help="classifier file to write (default: classifier.pt)")
    c.add_argument("--quiet", action="store_true", help="no progress lines")

    p = sub.add_parser(
        "inpaint",
        parents=[common],
        help="fill in the unknown entries of data given the known ones",
        description="Inpainting / imputation with a trained model: entries where the mask is 1 are kept, the others "
        "are drawn from the model given them (replacement method; --resample adds RePaint jump-backs).",
    )
    p.add_argument("--checkpoint", default="run", help="run directory or checkpoint file (default: run)")
    p.add_argument("--input", required=True, help="x.npy ([N, *event] or [*event], model space) or an image .png")
    p.add_argument("--mask", required=True, help="m.npy (0/1, broadcastable to the input) or a black/white .png (white = known)")
    p.add_argument("--out", default="inpainted.npy", help="FILE.npy (model space) or FILE.png (input, mask and result)")
    p.add_argument("--solver", default="ancestral", choices=sorted(SOLVERS), help="step solver (default: ancestral)")
    p.add_argument("--steps", type=cli._positive_int, help="solver steps (solver default when omitted)")
    p.add_argument("--resample", type=cli._positive_int, default=1, help="passes per step; > 1 adds RePaint jump-backs (default: 1)")
    p.add_argument("--num", type=cli._positive_int, default=1, help="completions per input (default: 1)")
    p.add_argument("--class", dest="class_label", type=cli._nonneg_int, metavar="K", help="condition on class K as well")
    p.add_argument("--guidance", type=float, metavar="W", help="classifier-free guidance weight (with --class)")
    p.add_argument("--seed", type=cli._nonneg_int, default=0, help="random seed (default: 0)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--raw-weights", action="store_true", help="use the raw weights instead of the EMA")


# ---------------------------------------------------------------------- guidance for `sample`
def guided_score(args: argparse.Namespace, score: Any, cfg: Any, device: Any) -> Tuple[Callable, str]:
    """The score function ``sample`` and ``inpaint`` use given the guidance flags, and a description."""
    guide = class_guidance(args, score, cfg, device)
    if guide is None:
        return score, "unconditional"
    make, _, how = guide
    k = int(args.class_label)
    return make(k), ", ".join([f"class {k}", *how])


def class_guidance(args: argparse.Namespace, score: Any, cfg: Any, device: Any) -> Optional[Tuple[Callable[[int], Callable], int, list]]:
    """Check the guidance flags once; ``None`` without ``--class``, else ``(make, K, how)``.

    ``make(k)`` is the score function of class ``k`` with the requested guidance, ``K`` the number of
    classes (the model's, or the classifier's) and ``how`` the guidance described in words (a list,
    empty for plain conditioning).
    """
    from . import guidance as G
    from .errors import LabelError

    k = getattr(args, "class_label", None)
    w = getattr(args, "guidance", None)
    clf_path = getattr(args, "classifier", None)
    scale = getattr(args, "classifier_scale", None)
    UserError = _cli().UserError
    if k is None:
        given = [f for f, v in (("--guidance", w), ("--classifier", clf_path), ("--classifier-scale", scale)) if v is not None]
        if given:
            raise UserError(f"{', '.join(given)} need --class K")
        return None
    if scale is not None and clf_path is None:
        raise UserError("--classifier-scale needs --classifier PATH")
    conditional_model = bool(getattr(score, "is_conditional", False))
    if w is not None and not conditional_model:
        raise LabelError("--guidance (classifier-free) needs a class-conditional model; train one with --conditional")
    if not conditional_model and clf_path is None:
        raise LabelError(
            f"--class {k}: the model has no classes; train it with --conditional, or guide it with --classifier PATH"
        )
    clf, how = None, []
    if conditional_model and w is not None:
        how.append(f"classifier-free guidance w = {w:g}")
    if clf_path is not None:
        from .classifier import load_classifier

        clf, sde_info = load_classifier(clf_path, device=device)
        if list(clf.event_shape) != list(cfg.event_shape):
            raise UserError(f"the classifier takes samples of shape {clf.event_shape} but the model makes {tuple(cfg.event_shape)}")
        if sde_info.get("name") != cfg.sde or dict(sde_info.get("kwargs") or {}) != dict(cfg.sde_kwargs):
            raise UserError(
                f"the classifier was trained for the {sde_info.get('name')!r} SDE {sde_info.get('kwargs')} but the model uses "
                f"{cfg.sde!r} {cfg.sde_kwargs}; train it with --checkpoint pointing at the model's run"
            )
        s = 1.0 if scale is None else float(scale)
        how.append(f"classifier guidance scale {s:g}")
    num_classes = G.num_classes_of(score) if conditional_model else G.num_classes_of(clf)

    def make(label: int) -> Callable:
        if conditional_model:
            base = G.conditional(score, label) if w is None else G.classifier_free(score, label, float(w))
        else:
            base = score
        return base if clf is None else G.classifier_guided(base, clf, label, scale=s)

    return make, int(num_classes), how


# ---------------------------------------------------------------------- train-classifier
def cmd_train_classifier(args: argparse.Namespace) -> int:
    import torch

    from .classifier import NoiseConditionalClassifier, save_classifier, train_classifier
    from .data import MNIST_DATASETS, get_dataset
    from .errors import DataError
    from .training import build_sde, read_config

    cli = _cli()
    if args.checkpoint:
        cfg = read_config(args.checkpoint)
        sde_name, sde_kwargs = cfg.sde, dict(cfg.sde_kwargs)
    else:
        sde_name, sde_kwargs = args.sde, dict(args.sde_arg)
    sde = build_sde(sde_name, **sde_kwargs)
    data_dir = args.data_dir
    if args.data in MNIST_DATASETS and data_dir is None:
        data_dir = cli._default_data_dir()
    ds = get_dataset(args.data, data_dir=data_dir, split="train", n=args.n_train,
                     generator=torch.Generator().manual_seed(args.seed))
    if ds.labels is None:
        raise DataError(f"{args.data!r} has no labels; use mnist, a toy set with components (moons, checkerboard, rings, gmm) "
                        "or an .npz file with arrays x and y")
    is_image = len(ds.event_shape) == 3
    device = cli._device(args.device)
    k = int(ds.labels.max()) + 1
    defaults = dict(steps=5000, batch_size=128, lr=5e-4) if is_image else dict(steps=2000, batch_size=256, lr=2e-3)
    steps = args.steps or defaults["steps"]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        try:
            clf = NoiseConditionalClassifier(ds.event_shape, max(k, 2), **dict(args.net_arg))
        except TypeError as e:
            raise cli.UserError(f"bad --net-arg for the classifier: {e}") from None
    clf = clf.to(device)
    print(f"training a {k}-class noise-conditional classifier on {args.data} {ds.event_shape} "
          f"({sum(p.numel() for p in clf.parameters()):,} parameters), {steps} steps, {sde_name} SDE", flush=True)
    t0 = time.perf_counter()
    gen = torch.Generator(device=device).manual_seed(args.seed)
    losses = train_classifier(clf, sde, ds.data.to(device), ds.labels.to(device), steps=steps,
                              batch_size=args.batch_size or defaults["batch_size"], lr=args.lr or defaults["lr"],
                              generator=gen, log_every=0 if args.quiet else max(1, steps // 10))
    save_classifier(args.out, clf, sde_name, sde_kwargs, data=args.data, steps=steps)
    tail = losses[-100:]
    print(f"cross-entropy {sum(tail) / len(tail):.4f} (mean of the last {len(tail)} steps), {time.perf_counter() - t0:.1f} s")
    print(f"classifier: {args.out}")
    return 0


# ---------------------------------------------------------------------- inpaint
def _read_input(path: str, what: str, event: Tuple[int, ...], data_range: Tuple[float, float]):
    """An ``.npy`` array or a PNG image (grey or RGB) as a float tensor; PNG images are mapped to the model range."""
    import numpy as np
    import torch

    cli = _cli()
    p = Path(path)
    if not p.is_file():
        raise cli.UserError(f"--{what} {path}: no such file")
    if p.suffix.lower() == ".npy":
        try:
            arr = np.load(p, allow_pickle=False)
        except (ValueError, OSError) as e:
            raise cli.UserError(f"--{what} {path}: not a readable .npy file ({e})") from None
        if arr.dtype.kind not in "iufb":
            raise cli.UserError(f"--{what} {path}: dtype {arr.dtype} is not numeric")
        return torch.from_numpy(np.asarray(arr, dtype=np.float32)), False
    if p.suffix.lower() == ".png":
        import matplotlib.image as mpimg

        img = np.asarray(mpimg.imread(p), dtype=np.float32)  # [H, W] or [H, W, C] in [0, 1]
        if img.ndim == 3:
            img = img[..., :3] if event and event[0] == 3 else img[..., :3].mean(-1)
        x = torch.from_numpy(img)
        x = x.permute(2, 0, 1) if x.ndim == 3 else x[None]  # [C, H, W]
        if what == "mask":
            return x, True
        lo, hi = data_range
        return lo + (hi - lo) * x, True
    raise cli.UserError(f"--{what} must be a .npy or .png file, got {path!r}")


def cmd_inpaint(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from .errors import MaskError, ShapeError
    from .inpainting import check_inpainting_inputs, inpaint
    from .training import load_model

    cli = _cli()
    out = Path(args.out)
    if out.suffix.lower() not in (".npy", ".png"):
        raise cli.UserError(f"--out must end in .npy or .png, got {args.out!r}")
    opts = cli._solver_options(args, args.solver)
    device = cli._device(args.device)
    sde, score, cfg = load_model(args.checkpoint, device=device, use_ema=not args.raw_weights)
    event = tuple(cfg.event_shape)
    rng = tuple(cfg.data_range) if cfg.data_range else (-1.0, 1.0)
    x, _ = _read_input(args.input, "input", event, rng)
    mask, from_png = _read_input(args.mask, "mask", event, rng)
    if from_png:
        mask = (mask > 0.5).to(mask.dtype) if bool(((mask < 0.02) | (mask > 0.98)).all()) else mask
    if tuple(x.shape) == event:
        x = x[None]
    if tuple(x.shape[1:]) != event:
        raise ShapeError(f"--input holds examples of shape {tuple(x.shape[1:]) if x.ndim > 1 else tuple(x.shape)} "
                         f"but the model makes samples of shape {event}")
    try:
        x, mask_b = check_inpainting_inputs(x, mask)
    except MaskError as e:
        raise MaskError(f"--mask: {e}") from None
    if args.num > 1:
        x, mask_b = x.repeat_interleave(args.num, 0), mask_b.repeat_interleave(args.num, 0)
    score_fn, what = guided_score(args, score, cfg, device)
    gen = torch.Generator(device=device).manual_seed(args.seed)
    t0 = time.perf_counter()
    try:
        result = inpaint(sde, score_fn, x.to(device), mask_b.to(device), solver=args.solver, steps=args.steps,
                         generator=gen, resample=args.resample, **opts)
    except (TypeError, ValueError) as e:
        if isinstance(e, (MaskError, ShapeError)):
            raise
        raise cli.UserError(f"inpainting with {args.solver!r}: {e}") from None
    seconds = time.perf_counter() - t0
    result = result.float().cpu()
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".npy":
        np.save(out, result.numpy())
    else:
        _save_inpainting_figure(x.float().cpu(), mask_b.cpu(), result, out, rng)
    print(f"inpainted {x.shape[0]} example(s) of shape {event} into {out} ({what}; solver {args.solver}, "
          f"resample {args.resample}, {seconds:.1f} s)")
    return 0


def _save_inpainting_figure(x, mask, result, path: Path, data_range) -> None:
    """Rows: the given entries (unknown ones grey), the result; for vectors, a scatter of the results."""
    import torch

    from .plotting import image_grid, save_samples_figure

    if x.ndim != 4:
        save_samples_figure(result, path, title="inpainted samples", data_range=data_range)
        return
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    mid = 0.5 * (data_range[0] + data_range[1])
    shown = torch.where(mask, x, torch.full_like(x, mid))
    n = x.shape[0]
    fig = Figure(figsize=(max(3.0, 1.0 * min(n, 16)), 2.4), dpi=100)
    FigureCanvasAgg(fig)
    for row, (imgs, title) in enumerate(((shown, "given (grey: unknown)"), (result, "inpainted"))):
        ax = fig.add_subplot(2, 1, row + 1)
        grid = image_grid(imgs, nrow=min(n, 16), data_range=data_range)
        ax.imshow(grid, cmap="gray" if grid.ndim == 2 else None, vmin=0, vmax=1)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path)


COMMANDS: Dict[str, Callable[[argparse.Namespace], int]] = {"train-classifier": cmd_train_classifier, "inpaint": cmd_inpaint}

__all__ = ["add_conditional_commands", "add_guidance_flags", "guided_score", "class_guidance", "COMMANDS", "GUIDANCE_FLAGS",
           "ALL_CLASSES"]
