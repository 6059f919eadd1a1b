"""``scoresde likelihood``: exact log-likelihoods and bits/dim through the probability-flow ODE."""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Dict

from ..errors import ShapeError, UserError
from ..flow import ADAPTIVE_METHODS, FIXED_METHODS
from . import args as A


def add_parsers(sub: Any, common: A.Common) -> None:
    """The ``likelihood`` sub-command."""
    lk = sub.add_parser(
        "likelihood", parents=common, help="log-likelihood (and bits/dim) of data under a trained or published model",
        description="Exact log-likelihood through the probability-flow ODE. For quantised data (images) the quantity "
        "reported is bits/dim under uniform dequantization; for continuous data, the mean log-density in nats. With "
        "--json the last line of stdout is one JSON object with log_prob_mean (nats), log_prob_stderr, nfe and, for "
        "discrete data, bits_per_dim.",
    )
    A.add_model_options(lk)
    lk.add_argument("--data", help="PATH.npy/.npz, mnist, fashion-mnist, cifar10, folder:PATH or a toy set name, its test "
                    "split (default: the data set the model was trained on)")
    lk.add_argument("--data-dir", help="folder with the data files (default: the run's, then SCORESDE_DATA)")
    lk.add_argument("--num", "--count", dest="num", type=A.positive_int,
                    help="evaluate the first NUM examples (default: 1000 for vectors, 16 for images); under torchrun "
                    "spell it --count")
    lk.add_argument("--trace", default="auto", type=A.choice_type("trace", ["auto", "exact", "hutchinson"]),
                    help="divergence estimator (default: auto = exact up to 32 dimensions, Hutchinson with its standard "
                    "error above)")
    lk.add_argument("--n-probes", type=A.int_from(1, 10**4), default=1, help="Hutchinson probes (default: 1)")
    lk.add_argument("--method", default="dopri5", type=A.choice_type("ODE method", [*ADAPTIVE_METHODS, *FIXED_METHODS]),
                    help="ODE method (default: dopri5)")
    lk.add_argument("--rtol", type=A.positive_float, default=1e-5, help="relative tolerance (default: 1e-5)")
    lk.add_argument("--atol", type=A.positive_float, default=1e-5, help="absolute tolerance (default: 1e-5)")
    lk.add_argument("--eps", type=A.positive_float, default=1e-5, help="start time of the ODE (default: 1e-5)")
    lk.add_argument("--max-steps", type=A.positive_int, default=10_000,
                    help="cap on the adaptive solver's steps per batch (default: 10000); raise it for stiff models")
    lk.add_argument("--steps", type=A.positive_int, help="uniform steps of a fixed-step --method (euler, midpoint, heun, rk4, ...)")
    lk.add_argument("--repeats", type=A.int_from(1, 10**4), default=1, help="dequantization draws for discrete data (default: 1)")
    lk.add_argument("--batch-size", type=A.positive_int, help="examples per ODE solve (default: 256 vectors, 16 images)")
    lk.add_argument("--seed", type=A.seed, default=0, help="seed of probes and dequantization noise")
    lk.add_argument("--device", type=A.device_name, default="auto", help="auto, cpu, cuda or cuda:N")
    lk.add_argument("--json", action="store_true", help="print the result as one JSON object on the last line")
    lk.add_argument("--quiet", action="store_true", help="no progress output")
    lk.add_argument("--out", help="FILE.npy of per-example log-likelihoods (nats; bits/dim for discrete data): seeds each "
                    "example by --seed + index and steps it on its own, so the numbers do not depend on the batch; "
                    "sharded over the ranks under torchrun (where this mode is implied)")
    A.add_shard_options(lk)
    lk.set_defaults(func=cmd_likelihood)


def likelihood_data(args: argparse.Namespace, model: Any, num: int):
    """The test split of ``--data`` (default: the model's data set), its first ``num`` examples, on the model's scale."""
    from ..data import TOY_DATASETS, get_dataset, to_levels, to_model_range

    spec = args.data or model.data
    if spec is None:
        raise UserError("this model does not say which data it was trained on; pass --data")
    if spec in TOY_DATASETS:
        return get_dataset(spec, split="test", n=num)
    ds = get_dataset(spec, data_dir=A.data_dir_for(spec, args.data_dir, model), split="test", n=None)
    ds.data = ds.data[:num]
    if ds.discrete_levels and ds.data_range and tuple(ds.data_range) != tuple(model.data_range):
        levels = to_levels(ds.data, ds.discrete_levels, tuple(ds.data_range))  # the same pixels on the model's scale
        ds.data, ds.data_range = to_model_range(levels, ds.discrete_levels, tuple(model.data_range)), tuple(model.data_range)
    return ds


def _check_data(args: argparse.Namespace, model: Any, ds: Any) -> None:
    x = ds.data
    if tuple(x.shape[1:]) != tuple(model.data_shape):
        raise ShapeError(
            f"the data's examples have shape {tuple(x.shape[1:])} but the model was trained on examples of shape "
            f"{tuple(model.data_shape)} ({model.data}); pass --data with data of that shape, or leave it out to use "
            f"{model.data}")
    if (ds.discrete_levels or None) != (model.discrete_levels or None):
        what = lambda lv: f"{lv}-level quantised data" if lv else "continuous data"  # noqa: E731
        raise UserError(f"the model was trained on {what(model.discrete_levels)} but --data {args.data} holds "
                        f"{what(ds.discrete_levels)}; bits/dim would not be comparable")


def cmd_likelihood(args: argparse.Namespace) -> int:
    """Log-likelihood of ``--num`` test examples (or, with ``--out``/torchrun, per-example values, sharded)."""
    import torch

    from ..evaluate import choose_trace, dataset_likelihood

    sharded = args.out is not None or A.launched_sharded()
    out = A.check_output(args.out, (".npy",)) if args.out is not None else None
    info = None
    if sharded:
        from ..shard import shard_info

        info, dev = shard_info(args.timeout), A.shard_device(args.device)
    else:
        dev = A.device(args.device)
    model = A.load_model(args, dev)
    is_image = len(model.data_shape) == 3
    A.apply_threads(args, A.score_work(model, dev), small=not is_image)
    ds = likelihood_data(args, model, args.num or (16 if is_image else 1000))
    _check_data(args, model, ds)
    x = ds.data
    trace = choose_trace(math.prod(model.event_shape), args.trace)
    if trace == "exact" and args.n_probes != 1:
        raise UserError("--n-probes applies to --trace hutchinson only")
    if args.steps is not None and args.method in ADAPTIVE_METHODS:
        raise UserError(f"--steps applies to fixed-step methods ({', '.join(FIXED_METHODS)}); {args.method} chooses its "
                        "own steps (set --rtol/--atol, cap them with --max-steps)")
    if trace == "exact" and x[0].numel() > 4 * 32:
        A.note(f"the exact trace costs {x[0].numel()} VJPs per evaluation here; --trace hutchinson is far faster and "
               "reports its standard error")
    args.batch_size = args.batch_size or (16 if is_image else 256)
    options = dict(eps=args.eps, method=args.method, rtol=args.rtol, atol=args.atol, max_steps=args.max_steps,
                   steps=args.steps)
    if model.latent is not None:
        if sharded:
            raise UserError("a latent run's likelihood is a bound over latent draws; run it without --out and torchrun")
        return _latent_bound(args, model, x, dev, trace, options)
    if sharded:
        options.update(trace=trace, **({"n_probes": args.n_probes} if trace == "hutchinson" else {}))
        return _likelihood_sharded(args, model, ds, dev, options, info, trace, out or Path("likelihood.npy"))
    res = dataset_likelihood(model.sde, model.score_fn, x, levels=model.discrete_levels if ds.discrete_levels else None,
                             data_range=tuple(model.data_range), dequantization=model.dequantization_range(), trace=trace,
                             n_probes=args.n_probes, repeats=args.repeats, batch_size=args.batch_size,
                             generator=torch.Generator(device=dev).manual_seed(args.seed), device=dev,
                             progress=False if args.quiet else None, **options)
    summary: Dict[str, Any] = {**res.summary(), "data": args.data or model.data, "seconds": round(res.seconds, 3)}
    what = f"{x.shape[0]} examples of shape {tuple(x.shape[1:])}; {trace} trace, NFE {res.nfe}, {res.seconds:.1f} s"
    if res.bits_per_dim is not None:
        summary["levels"] = model.discrete_levels
        print(f"bits/dim: {summary['bits_per_dim']:.4f} +- {summary['bits_per_dim_stderr']:.4f} (standard error over the "
              f"examples; uniform dequantization, {args.repeats} draw(s)); {what}")
        print(f"  (the mean log-density of the dequantized points is {summary['log_prob_mean']:.2f} nats: a density, "
              "so it can be positive; bits/dim is the number to compare)")
    else:
        print(f"mean log-likelihood {summary['log_prob_mean']:.4f} +- {summary['log_prob_stderr']:.4f} nats "
              f"(NLL {-summary['log_prob_mean']:.4f}; standard error over the examples); {what}")
    if args.json:
        print(json.dumps(A.finite_json(summary)))
    return 0


def _latent_bound(args, model, x, dev, trace: str, options: Dict[str, Any]) -> int:
    """A latent run: the bound ``-log P(x) <= E_q[-log p(x|z)] - E_q[log p_SDE(z)] - H[q]`` in bits/dim, in batches."""
    import torch

    from ..metrics import mean_and_stderr

    gen = torch.Generator(device=dev).manual_seed(args.seed)
    draws = max(2, args.repeats)
    if trace == "hutchinson":
        options = {**options, "n_probes": args.n_probes}
    t0, parts, nfe = time.perf_counter(), [], 0
    for i in range(0, x.shape[0], args.batch_size):
        res = model.latent.bound(x[i:i + args.batch_size], model.sde, model.score_fn, n_samples=draws, generator=gen,
                                 trace=trace, **options)
        parts.append(res.bits_per_dim)
        nfe += res.nfe
        if not args.quiet:
            A.note(f"bound: {min(i + args.batch_size, x.shape[0])}/{x.shape[0]} images, {time.perf_counter() - t0:.0f} s")
    bpd = torch.cat(parts)
    mean, se = mean_and_stderr(bpd)
    seconds = time.perf_counter() - t0
    print(f"bits/dim <= {mean:.4f} +- {se:.4f} (a bound: the VAE's decoder and encoder with the score SDE's exact density "
          f"of codes; standard error over the images, {draws} latent draws each); {x.shape[0]} images, {trace} trace, "
          f"NFE {nfe}, {seconds:.1f} s")
    if args.json:
        print(json.dumps(A.finite_json({"bits_per_dim": mean, "bits_per_dim_stderr": se, "bpd_kind": "bound",
                                        "num": int(x.shape[0]), "trace": trace, "nfe": nfe, "seconds": round(seconds, 3),
                                        "data": args.data or model.data, "levels": 256})))
    return 0


def _likelihood_sharded(args, model, ds, dev, options: Dict[str, Any], info, trace: str, out: Path) -> int:
    """``likelihood --out FILE.npy`` (implied under torchrun): per-example results, examples shared among the ranks."""
    import torch

    from ..data import to_levels
    from ..metrics import mean_and_stderr
    from ..shard import log_likelihood_points

    folder = Path(args.shard_dir or f"{out}.shards")
    x, levels = ds.data, ds.discrete_levels
    t0 = time.perf_counter()
    common = dict(seed=args.seed, chunk_size=args.batch_size, timeout=args.timeout, device=dev, info=info)
    if levels:
        res = log_likelihood_points(model.sde, model.score_fn, to_levels(x, levels, tuple(model.data_range)), folder,
                                    levels=levels, data_range=model.dequantization_range(), repeats=args.repeats,
                                    **common, **options)
    else:
        res = log_likelihood_points(model.sde, model.score_fn, x.double() if dev.type != "mps" else x, folder,
                                    score_dtype=torch.float32, **common, **options)
    if res is None:  # not rank 0
        return 0
    seconds = time.perf_counter() - t0
    values = res["bits_per_dim"] if levels else res["log_prob"]
    A.save_array(out, values.numpy())
    mean, se = mean_and_stderr(values.double())
    what = "bits/dim" if levels else "log-likelihood (nats)"
    summary: Dict[str, Any] = {"num": int(x.shape[0]), "trace": trace, "data": args.data or model.data,
                               "seconds": round(seconds, 3), "processes": info.world_size, "out": str(out)}
    if levels:
        summary.update(bits_per_dim=mean, bits_per_dim_stderr=se, levels=levels)
    else:
        summary.update(log_prob_mean=mean, log_prob_stderr=se, nfe_per_example_mean=float(res["nfe"].double().mean()))
    print(f"{x.shape[0]} examples: mean {what} {mean:.4f} +- {se:.4f}; per-example values in {out} "
          f"({info.world_size} process(es), {seconds:.1f} s)")
    if args.json:
        print(json.dumps(A.finite_json(summary)))
    sys.stdout.flush()
    return 0
