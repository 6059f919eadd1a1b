"""``scoresde sample`` and ``scoresde inpaint``."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any, Tuple

from ..errors import MaskError, ScoreSDEError, ShapeError, UserError
from ..solvers import GRIDS, SOLVERS
from . import args as A


def add_parsers(sub: Any, common: A.Common) -> None:
    """The ``sample`` and ``inpaint`` sub-commands."""
    s = sub.add_parser("sample", parents=common, help="draw samples from a trained or published model",
                       description="Draw samples with any solver. Solver options apply only to the solvers that take them.")
    A.add_model_options(s)
    s.add_argument("--solver", default="ode", type=A.choice_type("solver", sorted(SOLVERS)), help="sampler (default: ode)")
    s.add_argument("--num", "--count", dest="num", type=A.positive_int,
                   help="number of samples (default: 1000 vectors, 64 images); under torchrun spell it --count")
    s.add_argument("--seed", type=A.seed, default=0, help="random seed (default: 0)")
    s.add_argument("--out", default="samples.npy", help="FILE.npy (raw model-space array), FILE.png (a figure) or DIR/ "
                   "(one PNG per image)")
    s.add_argument("--device", type=A.device_name, default="auto", help="auto, cpu, cuda or cuda:N")
    s.add_argument("--batch-size", type=A.positive_int, help="samples per solver call (default: all at once)")
    s.add_argument("--steps", type=A.positive_int, help="solver steps (solver default when omitted)")
    s.add_argument("--eps", type=A.positive_float, help="final time of the reverse process")
    s.add_argument("--no-denoise", action="store_true", help="skip the final Tweedie denoising step")
    s.add_argument("--grid", type=A.choice_type("grid", sorted(GRIDS)), help="time grid (default: the solver's own)")
    s.add_argument("--seeds", type=A.seed_range, help="per-sample seeds A-B (inclusive) or A:B: sample i is a function of its seed only, "
                   "the same in any batch; sharded over the ranks under torchrun")
    A.add_shard_options(s)
    s.add_argument("--quiet", action="store_true", help="no progress output")
    A.add_solver_options(s)
    A.add_guidance_options(s)
    s.set_defaults(func=cmd_sample)

    p = sub.add_parser("inpaint", parents=common, help="fill in the unknown entries of data given the known ones",
                       description="Inpainting / imputation with a trained model: entries where the mask is 1 are kept, "
                       "the others are drawn from the model given them (replacement method; --resample adds RePaint "
                       "jump-backs).")
    A.add_model_options(p)
    p.add_argument("--input", required=True, help="x.npy ([N, *event] or [*event], model space) or an image .png")
    p.add_argument("--mask", required=True, help="m.npy (0/1, broadcastable to the input) or a black/white .png (white = known)")
    p.add_argument("--out", default="inpainted.npy", help="FILE.npy (model space) or FILE.png (input, mask and result)")
    p.add_argument("--solver", default="ancestral", type=A.choice_type("solver", sorted(SOLVERS)),
                   help="step solver (default: ancestral)")
    p.add_argument("--steps", type=A.positive_int, help="solver steps (solver default when omitted)")
    p.add_argument("--resample", type=A.int_from(1, 1000), default=1,
                   help="passes per step; > 1 adds RePaint jump-backs (default: 1)")
    p.add_argument("--num", type=A.int_from(1, 10**6), default=1, help="completions per input (default: 1)")
    p.add_argument("--seed", type=A.seed, default=0, help="random seed (default: 0)")
    p.add_argument("--device", type=A.device_name, default="auto", help="auto, cpu, cuda or cuda:N")
    A.add_solver_options(p)
    A.add_guidance_options(p, allow_all=False, classifier=False)
    p.set_defaults(func=cmd_inpaint)


def cmd_sample(args: argparse.Namespace) -> int:
    """Draw samples (or, with ``--seeds`` or under torchrun, one sample per seed, sharded)."""
    import torch

    from ..evaluate import draw_class_samples, draw_samples

    out = A.check_output(args.out, (".npy", ".png"), folder_ok=True)
    opts = A.solver_options(args, args.solver)
    if args.seeds is not None or A.launched_sharded():
        return _sample_sharded(args, out, opts)
    dev = A.device(args.device)
    model = A.load_model(args, dev)
    A.apply_threads(args, A.score_work(model, dev), small=len(model.event_shape) == 1)
    every_class = args.class_label == A.ALL_CLASSES
    if every_class:
        make, num_classes, how = A.class_guidance(args, model, dev)
        what = ", ".join([f"classes 0-{num_classes - 1} in turn", *how])
    else:
        score, what = A.guided_score(args, model, dev)
    event = tuple(model.event_shape)
    n = args.num or (64 if len(event) == 3 else 1000)
    A.check_sample_size(n, event)
    solver = A.make_solver(args, args.solver, opts)
    gen = torch.Generator(device=dev).manual_seed(args.seed)
    options = dict(solver=solver, steps=args.steps, batch_size=args.batch_size, generator=gen, device=dev,
                   progress=False if args.quiet else None, desc=f"sample ({args.solver})", eps=args.eps,
                   denoise=False if args.no_denoise else None, grid=args.grid)
    if every_class:
        drawn = draw_class_samples(model.sde, make, n, num_classes, event, **options)
    else:
        drawn = draw_samples(model.sde, score, n, event, **options)
    labels = [str(k) for k in range(num_classes)] if every_class and n >= num_classes else None
    x = model.decode(drawn.samples)  # a latent run's codes become images
    A.write_samples(x, out, model.data_range, f"{args.solver}: {n} samples ({what})", column_labels=labels)
    print(f"wrote {n} samples of shape {tuple(x.shape[1:])} to {out} ({what}; solver {args.solver}, NFE {drawn.nfe}, "
          f"{drawn.seconds:.1f} s" + (", decoded from codes" if model.latent is not None else "") + ")")
    return 0


def _sample_sharded(args: argparse.Namespace, out: Path, opts: dict) -> int:
    """``sample --seeds A-B``: one sample per seed, the seeds shared among the torchrun ranks."""
    from ..shard import sample_seeds, shard_info

    if args.seeds is None:
        raise UserError("under torchrun, give the seeds to share among the ranks: --seeds A-B (e.g. --seeds 0-49999)")
    seeds = args.seeds  # a range, bounded when parsed
    named = f"{seeds.start}-{seeds.stop - 1}"
    if args.num is not None and args.num != len(seeds):
        raise UserError(f"--seeds {named} gives {len(seeds)} samples but --count says {args.num}; give one")
    info = shard_info(args.timeout)
    dev = A.shard_device(args.device)
    model = A.load_model(args, dev)
    A.apply_threads(args, A.score_work(model, dev), small=len(model.event_shape) == 1)
    event = tuple(model.event_shape)
    A.check_sample_size(len(seeds), event)
    solver = A.make_solver(args, args.solver, opts)
    folder = Path(args.shard_dir or f"{out}.shards")
    options = dict(chunk_size=args.batch_size or 256, timeout=args.timeout, device=dev, info=info, solver=solver,
                   steps=args.steps, eps=args.eps, denoise=False if args.no_denoise else None, grid=args.grid)
    t0 = time.perf_counter()
    if args.class_label == A.ALL_CLASSES:  # the sample of seed s is of class s mod K, whatever the seed range
        make, num_classes, how = A.class_guidance(args, model, dev)
        what, x = ", ".join([f"class of seed s = s mod {num_classes}", *how]), None
        for k in range(num_classes):
            mine = [i for i, s in enumerate(seeds) if s % num_classes == k]
            if mine:
                part = sample_seeds(model.sde, make(k), [seeds[i] for i in mine], event, folder / f"class-{k}", **options)
                if part is not None:
                    x = part.new_empty((len(seeds), *part.shape[1:])) if x is None else x
                    x[mine] = part
    else:
        score, what = A.guided_score(args, model, dev)
        x = sample_seeds(model.sde, score, seeds, event, folder, **options)
    if x is None:  # not rank 0
        return 0
    x = model.decode(x)
    A.write_samples(x, out, model.data_range, f"{args.solver}: seeds {named} ({what})")
    print(f"wrote {len(seeds)} samples (seeds {named}) of shape {event} to {out} ({what}; solver {args.solver}, "
          f"{info.world_size} process(es), {time.perf_counter() - t0:.1f} s; chunks in {folder})")
    return 0


# ---------------------------------------------------------------------- inpaint
def read_input(path: str, what: str, event: Tuple[int, ...], data_range: Tuple[float, float]):
    """An ``.npy`` array or a PNG image (grey or RGB) as a float tensor, and whether it came from a PNG.

    PNG images are mapped to the model range (masks stay in ``[0, 1]``); a broken file is one line naming it.
    """
    import numpy as np
    import torch

    p = Path(path)
    if not p.is_file():
        raise UserError(f"--{what} {path}: no such file")
    if p.suffix.lower() == ".npy":  # NaN may mark the unknown entries of the input: the mask decides
        try:
            arr = np.load(p, allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise UserError(f"--{what} {path}: not a readable .npy file ({e})") from None
        if arr.dtype.kind not in "iufb":
            raise UserError(f"--{what} {path}: dtype {arr.dtype} is not numeric")
        return torch.from_numpy(np.asarray(arr, dtype=np.float32)), False
    if p.suffix.lower() == ".png":
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(p) as im:
                im.load()
                img = np.asarray(im.convert("RGB" if event and event[0] == 3 else "L"), dtype=np.float32) / 255.0
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
            raise UserError(f"--{what} {path} is not a readable PNG image ({e})") from None
        x = torch.from_numpy(img)
        x = x.permute(2, 0, 1) if x.ndim == 3 else x[None]  # [C, H, W]
        if what == "mask":
            return x, True
        lo, hi = data_range
        return lo + (hi - lo) * x, True
    raise UserError(f"--{what} must be a .npy or .png file, got {path!r}")


def cmd_inpaint(args: argparse.Namespace) -> int:
    """Fill in the unknown entries of ``--input`` where ``--mask`` is 0."""
    import torch

    from ..inpainting import check_inpainting_inputs, inpaint

    out = A.check_output(args.out, (".npy", ".png"))
    opts = A.solver_options(args, args.solver)
    dev = A.device(args.device)
    model = A.load_model(args, dev)
    A.apply_threads(args, A.score_work(model, dev), small=len(model.event_shape) == 1)
    if model.latent is not None:
        raise UserError("inpainting fills in entries of the data the score model sees; a latent run models codes, not "
                        "pixels: inpaint with a pixel-space run")
    event, rng = tuple(model.event_shape), model.data_range
    x, _ = read_input(args.input, "input", event, rng)
    mask, from_png = read_input(args.mask, "mask", event, rng)
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
    A.check_sample_size(x.shape[0] * args.num, event)
    if args.num > 1:
        x, mask_b = x.repeat_interleave(args.num, 0), mask_b.repeat_interleave(args.num, 0)
    score_fn, what = A.guided_score(args, model, dev)
    gen = torch.Generator(device=dev).manual_seed(args.seed)
    t0 = time.perf_counter()
    try:
        result = inpaint(model.sde, score_fn, x.to(dev), mask_b.to(dev), solver=args.solver, steps=args.steps,
                         generator=gen, resample=args.resample, **opts)
    except (MaskError, ShapeError):
        raise
    except ScoreSDEError as e:
        raise UserError(f"inpainting with {args.solver!r}: {e}") from None
    seconds = time.perf_counter() - t0
    result = result.float().cpu()
    if out.suffix.lower() == ".npy":
        A.save_array(out, result.numpy())
    else:
        from ..plotting import save_inpainting_figure

        save_inpainting_figure(x.float().cpu(), mask_b.cpu(), result, out, rng)
    print(f"inpainted {x.shape[0]} example(s) of shape {event} into {out} ({what}; solver {args.solver}, "
          f"resample {args.resample}, {seconds:.1f} s)")
    return 0

