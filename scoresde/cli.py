"""The ``scoresde`` command line: ``train``, ``sample``, ``likelihood``, ``demo``, ``train-classifier`` and ``inpaint``.

User errors (bad options, missing or corrupt files, NaN losses) print ``scoresde: error: ...`` to
stderr and exit with status 1 (2 for malformed command lines), without a traceback.
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from .cli_conditional import COMMANDS as CONDITIONAL_COMMANDS
from .cli_conditional import add_conditional_commands, add_guidance_flags, guided_score

EXIT_ERROR = 1
EXIT_USAGE = 2

# CLI flag (dest) -> solver constructor argument; every solver takes --steps and --eps.
SOLVER_FLAGS = {
    "snr": "snr",
    "corrector_steps": "corrector_steps",
    "method": "method",
    "rtol": "rtol",
    "atol": "atol",
    "max_steps": "max_steps",
    "predictor": "predictor",
    "corrector": "corrector",
    "eta": "eta",
    "steps_per_level": "steps_per_level",
    "step_ratio": "step_ratio",
}

# TrainConfig field -> CLI flag, for the options `scoresde train` accepts.
TRAIN_OPTIONS = (
    "data", "data_dir", "n_train", "sde", "net", "parameterization", "weighting", "importance_sampling",
    "loss_eps", "steps", "batch_size", "lr", "weight_decay", "warmup", "lr_schedule", "grad_clip",
    "ema_decay", "seed", "device", "out", "checkpoint_every", "sample_every", "log_every", "precision", "compile",
    "conditional", "p_uncond",
)


class UserError(Exception):
    """A problem with the command line's input, reported without a traceback."""


# ---------------------------------------------------------------------- argument types
def _positive_int(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {s!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {s!r}")
    return v


def _thread_count(s: str) -> int:
    v = _positive_int(s)
    limit = 4 * (os.cpu_count() or 1)
    if v > limit:
        raise argparse.ArgumentTypeError(f"expected at most {limit} threads (4 per CPU core), got {s!r}")
    return v


def _nonneg_int(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {s!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {s!r}")
    return v


def _int_from(minimum: int):
    def parse(s: str) -> int:
        try:
            v = int(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {s!r}") from None
        if v < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {s!r}")
        return v

    return parse


def _seed(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer seed in [0, 2**63 - 1], got {s!r}") from None
    if not 0 <= v <= 2**63 - 1:
        raise argparse.ArgumentTypeError(f"expected an integer seed in [0, 2**63 - 1], got {s!r}")
    return v


def _positive_float(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {s!r}") from None
    if not (math.isfinite(v) and v > 0):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {s!r}")
    return v


def _nonneg_float(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative number, got {s!r}") from None
    if not (math.isfinite(v) and v >= 0):
        raise argparse.ArgumentTypeError(f"expected a non-negative number, got {s!r}")
    return v


def _key_value(s: str) -> tuple:
    if "=" not in s:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {s!r}")
    k, v = s.split("=", 1)
    if not k.isidentifier():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE with a valid name as KEY, got {s!r}")
    try:
        value = json.loads(v)
    except ValueError:
        value = v
    return k, value


# ---------------------------------------------------------------------- the parser
def build_parser() -> argparse.ArgumentParser:
    """The ``scoresde`` argument parser with its four sub-commands."""
    from . import __version__
    from .solvers import GRIDS, SOLVERS

    p = argparse.ArgumentParser(
        prog="scoresde",
        description="Score-based generative modelling with SDEs: train, sample, evaluate likelihoods.",
    )
    p.add_argument("--version", action="version", version=f"scoresde {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--threads", type=_thread_count,
                        help="torch CPU threads (1 is often fastest for small networks and on shared machines)")

    # ---- train
    t = sub.add_parser(
        "train",
        parents=[common],
        help="train a score network",
        description="Train a score network with denoising score matching. Options left out take sensible "
        "defaults (MLP for vectors, U-Net for images); with --resume they are taken from the checkpoint.",
    )
    t.add_argument("--data", help="toy set (moons, swiss_roll, checkerboard, rings, gmm), mnist, fashion-mnist, or PATH.npy/.npz (default: moons)")
    t.add_argument("--data-dir", help="folder with the MNIST-family files (default: ../shared/data or ./data when present)")
    t.add_argument("--n-train", type=_positive_int, help="number of training examples (toy sets: points drawn; files and images: the first N)")
    t.add_argument("--sde", choices=["vp", "subvp", "ve"], help="forward SDE (default: vp)")
    t.add_argument("--sde-arg", action="append", type=_key_value, default=[], metavar="KEY=VALUE",
                   help="SDE argument, e.g. beta_max=20 or sigma_max=50 (repeatable)")
    t.add_argument("--net", choices=["auto", "mlp", "unet"], help="network (default: auto = MLP for vectors, U-Net for images)")
    t.add_argument("--net-arg", action="append", type=_key_value, default=[], metavar="KEY=VALUE",
                   help="network argument, e.g. hidden=128 or channels=64 (repeatable)")
    t.add_argument("--parameterization", choices=["eps", "score", "x0"], help="what the network predicts (default: eps)")
    t.add_argument("--weighting", choices=["std2", "likelihood"], help="DSM weighting lambda(t) (default: std2)")
    t.add_argument("--importance-sampling", action="store_true", default=None, help="importance-sample t (with --weighting likelihood)")
    t.add_argument("--loss-eps", type=_positive_float, help="smallest training time (default: 1e-5)")
    t.add_argument("--steps", type=_positive_int, help="total optimizer steps (default: 5000 vectors, 20000 images)")
    t.add_argument("--batch-size", type=_positive_int, help="global batch size (default: 256 vectors, 128 images)")
    t.add_argument("--lr", type=_positive_float, help="peak learning rate (default: 2e-3 vectors, 2e-4 images)")
    t.add_argument("--weight-decay", type=_nonneg_float, help="AdamW weight decay (default: 0)")
    t.add_argument("--warmup", type=_nonneg_int, help="linear warm-up steps (default: 100 vectors, 1000 images)")
    t.add_argument("--lr-schedule", choices=["constant", "cosine"], help="after warm-up (default: constant)")
    t.add_argument("--grad-clip", type=_nonneg_float, help="gradient-norm clipping, 0 = off (default: 1)")
    t.add_argument("--ema-decay", type=float, help="EMA decay in [0, 1) (default: 0.999 vectors, 0.9999 images)")
    t.add_argument("--seed", type=_seed, help="random seed (default: 0)")
    t.add_argument("--device", help="auto, cpu, cuda or cuda:N (default: auto)")
    t.add_argument("--out", help="output directory (default: run)")
    t.add_argument("--checkpoint-every", type=_positive_int, help="checkpoint interval in steps")
    t.add_argument("--sample-every", type=_int_from(-1), help="sample-figure interval; 0 = only at the end, -1 = never")
    t.add_argument("--log-every", type=_positive_int, help="log interval in steps (default: 100)")
    t.add_argument("--precision", choices=["fp32", "bf16"], help="bf16 autocasts the forward pass (default: fp32)")
    t.add_argument("--compile", action="store_true", default=None, help="torch.compile the network")
    t.add_argument("--conditional", action="store_true", default=None,
                   help="train a class-conditional model on the data's labels (MNIST digits, toy components, .npz y)")
    t.add_argument("--p-uncond", type=_nonneg_float, help="label dropout for classifier-free guidance (default: 0.1)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    t.add_argument("--quiet", action="store_true", help="no progress bar")

    # ---- sample
    s = sub.add_parser(
        "sample",
        parents=[common],
        help="draw samples from a trained model",
        description="Draw samples with any solver. Solver options apply only to the solvers that take them.",
    )
    s.add_argument("--checkpoint", default="run", help="run directory or checkpoint file (default: run)")
    s.add_argument("--solver", default="ode", choices=sorted(SOLVERS), help="sampler (default: ode)")
    s.add_argument("--num", type=_positive_int, help="number of samples (default: 1000 vectors, 64 images)")
    s.add_argument("--seed", type=_seed, default=0, help="random seed (default: 0)")
    s.add_argument("--out", default="samples.npy", help="FILE.npy (raw model-space array) or FILE.png (figure)")
    s.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    s.add_argument("--batch-size", type=_positive_int, help="samples per solver call (default: all at once)")
    s.add_argument("--raw-weights", action="store_true", help="use the raw weights instead of the EMA")
    s.add_argument("--steps", type=_positive_int, help="solver steps (solver default when omitted)")
    s.add_argument("--eps", type=_positive_float, help="final time of the reverse process")
    s.add_argument("--no-denoise", action="store_true", help="skip the final Tweedie denoising step")
    s.add_argument("--grid", choices=sorted(GRIDS), help="time grid (default: the solver's own)")
    g = s.add_argument_group("solver options (each only for the solvers that take it)")
    g.add_argument("--snr", type=_positive_float, help="Langevin corrector signal-to-noise ratio (pc, langevin)")
    g.add_argument("--corrector-steps", type=_nonneg_int, help="Langevin steps per time step (pc, langevin)")
    g.add_argument("--predictor", help="predictor of pc: reverse_diffusion, euler_maruyama, ancestral, ddim")
    g.add_argument("--corrector", choices=["langevin", "none"], help="corrector of pc")
    g.add_argument("--method", help="ODE method (ode: dopri5, rk4, ...) or torchsde method (torchsde: euler, milstein, srk)")
    g.add_argument("--rtol", type=_positive_float, help="relative tolerance (ode)")
    g.add_argument("--atol", type=_positive_float, help="absolute tolerance (ode)")
    g.add_argument("--max-steps", type=_positive_int, help="cap on adaptive steps (ode)")
    g.add_argument("--eta", type=_nonneg_float, help="DDIM stochasticity in [0, 1] (ddim)")
    g.add_argument("--steps-per-level", type=_positive_int, help="Langevin steps per noise level (annealed_langevin)")
    g.add_argument("--step-ratio", type=_positive_float, help="Langevin step size over sigma^2 (annealed_langevin)")
    add_guidance_flags(s)
    g.add_argument("--solver-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="any other option of the solver's class, e.g. --solver-arg order=3 (repeatable)")

    # ---- likelihood
    lk = sub.add_parser(
        "likelihood",
        parents=[common],
        help="log-likelihood (and bits/dim) of data under a trained model",
        description="Exact log-likelihood through the probability-flow ODE. With --json the last line of "
        "stdout is one JSON object with log_prob_mean (nats), log_prob_stderr, nfe and, for discrete data, bits_per_dim.",
    )
    lk.add_argument("--checkpoint", default="run", help="run directory or checkpoint file (default: run)")
    lk.add_argument("--data", required=True, help="PATH.npy/.npz, mnist, fashion-mnist or a toy set name (its test split)")
    lk.add_argument("--data-dir", help="folder with the MNIST-family files")
    lk.add_argument("--num", type=_positive_int, help="evaluate the first NUM examples (default: all)")
    lk.add_argument("--trace", choices=["exact", "hutchinson"], default="exact", help="divergence estimator (default: exact)")
    lk.add_argument("--n-probes", type=_positive_int, default=1, help="Hutchinson probes (default: 1)")
    lk.add_argument("--method", default="dopri5", help="ODE method (default: dopri5)")
    lk.add_argument("--rtol", type=_positive_float, default=1e-5, help="relative tolerance (default: 1e-5)")
    lk.add_argument("--atol", type=_positive_float, default=1e-5, help="absolute tolerance (default: 1e-5)")
    lk.add_argument("--eps", type=_positive_float, default=1e-5, help="start time of the ODE (default: 1e-5)")
    lk.add_argument("--max-steps", type=_positive_int, default=10_000,
                    help="cap on the adaptive solver's steps per batch (default: 10000); raise it for stiff models")
    lk.add_argument("--steps", type=_positive_int, help="uniform steps of a fixed-step --method (euler, midpoint, heun, rk4, ...)")
    lk.add_argument("--repeats", type=_positive_int, default=1, help="dequantization draws for discrete data (default: 1)")
    lk.add_argument("--batch-size", type=_positive_int, default=256, help="examples per ODE solve (default: 256)")
    lk.add_argument("--seed", type=_seed, default=0, help="seed of probes and dequantization noise")
    lk.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    lk.add_argument("--raw-weights", action="store_true", help="use the raw weights instead of the EMA")
    lk.add_argument("--json", action="store_true", help="print the result as one JSON object on the last line")

    # ---- demo
    d = sub.add_parser(
        "demo",
        parents=[common],
        help="train on a 2-D toy set, sample with three solvers, compute the test NLL, draw a figure",
        description="The end-to-end demo (about two minutes on two CPU cores; --quick: well under one).",
    )
    d.add_argument("--out", default="demo", help="output directory (default: demo)")
    d.add_argument("--steps", type=_positive_int, help="training steps (default: 3000; 2000 with --quick)")
    d.add_argument("--seed", type=_seed, default=0, help="random seed (default: 0)")
    d.add_argument("--data", default="gmm", choices=["gmm", "moons", "swiss_roll", "checkerboard", "rings"],
                   help="toy set (default: gmm, whose entropy is known)")
    d.add_argument("--quick", action="store_true", help="a smaller, faster run")
    d.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    d.add_argument("--quiet", action="store_true", help="no progress bar")

    add_conditional_commands(sub, common)
    return p


# ---------------------------------------------------------------------- commands
def _is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _default_data_dir() -> Optional[str]:
    for cand in ("../shared/data", "data"):
        if os.path.isdir(cand):
            return cand
    return None


def cmd_train(args: argparse.Namespace) -> int:
    from .training import TrainConfig, Trainer, read_config
    from .training.checkpoint import LATEST

    given: Dict[str, Any] = {k: getattr(args, k) for k in TRAIN_OPTIONS if getattr(args, k) is not None}
    if args.sde_arg:
        given["sde_kwargs"] = dict(args.sde_arg)
    if args.net_arg:
        given["net_kwargs"] = dict(args.net_arg)
    out = Path(given.get("out", TrainConfig.out))
    saved = _saved_run_config(out) if args.resume and not (out / LATEST).exists() else None
    if args.resume and ((out / LATEST).exists() or saved is not None):
        base = read_config(out) if saved is None else saved
        if "net_kwargs" in given:
            given["net_kwargs"] = {**base.net_kwargs, **given["net_kwargs"]}
        if "sde_kwargs" in given:
            given["sde_kwargs"] = {**base.sde_kwargs, **given["sde_kwargs"]}
        config = base.replace(**given)
    else:
        if args.resume and _is_main_process():
            print(f"scoresde: note: no checkpoint in {out}; starting a new run", file=sys.stderr)
        if "data_dir" not in given and given.get("data", "moons") in ("mnist", "fashion-mnist"):
            given["data_dir"] = _default_data_dir()
        config = TrainConfig(**given)
    trainer = Trainer(config, resume=args.resume, progress=False if args.quiet else None)
    main = trainer.dist.is_main
    cfg = trainer.config
    if main:
        start = f"resuming at step {trainer.step}" if trainer.resumed_from is not None else "starting"
        print(
            f"{start}: {cfg.data} {tuple(cfg.event_shape)}, {cfg.sde} SDE, {cfg.net} network "
            f"({sum(p.numel() for p in trainer.net.parameters()):,} parameters), {cfg.steps} steps of batch {cfg.batch_size} "
            f"on {trainer.device}" + (f" x {trainer.dist.world_size} processes" if trainer.dist.distributed else ""),
            flush=True,
        )
    result = trainer.train()
    if main:
        tail = result.losses[-100:]
        loss = f"{sum(tail) / len(tail):.4f}" if tail else "n/a"
        print(
            f"trained to step {result.step} in {result.seconds:.1f} s ({result.examples_per_s:,.0f} examples/s); "
            f"loss {loss} (mean of the last {len(tail)} steps)"
        )
        print(f"checkpoint: {result.checkpoint}")
        print(f"log: {result.log_file}")
        for f in result.figures[-1:]:
            print(f"samples: {f}")
    return 0


def _saved_run_config(out: Path):
    """The configuration in ``out/config.json`` of a run that died before its first checkpoint (or ``None``)."""
    from .training import TrainConfig
    from .training.trainer import CONFIG_FILE

    path = out / CONFIG_FILE
    if not path.is_file():
        return None
    try:
        cfg = TrainConfig.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError) as e:
        raise UserError(f"cannot resume {out}: its {CONFIG_FILE} is unreadable ({e}); use a new --out") from None
    if _is_main_process():
        print(f"scoresde: note: {out} has no checkpoint yet; restarting its run from step 0 with its {CONFIG_FILE}", file=sys.stderr)
    return cfg


def _literal(raw: str) -> Any:
    """A command-line value as a Python literal (number, bool, None, string, tuple), else the string itself."""
    import ast

    try:
        return ast.literal_eval(raw.strip())
    except (ValueError, SyntaxError):
        return raw.strip()


def _solver_options(args: argparse.Namespace, solver: str) -> Dict[str, Any]:
    """The solver options given on the command line, checked against what ``solver`` takes."""
    from .solvers import SOLVERS

    params = inspect.signature(SOLVERS[solver].__init__).parameters
    accepted = [name for name in params if name != "self"]
    opts, rejected = {}, []
    for dest, name in SOLVER_FLAGS.items():
        value = getattr(args, dest, None)
        if value is None:
            continue
        if name in accepted:
            opts[name] = value
        else:
            rejected.append("--" + dest.replace("_", "-"))
    for item in getattr(args, "solver_arg", None) or []:
        key, sep, raw = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise UserError(f"--solver-arg takes KEY=VALUE, got {item!r}")
        if key not in accepted:
            raise UserError(f"solver {solver!r} has no option {key!r}; its options: {', '.join(accepted) or 'none'}")
        opts[key] = _literal(raw)
    if rejected:
        takes = ", ".join("--" + n.replace("_", "-") for n in accepted if n in SOLVER_FLAGS.values())
        raise UserError(
            f"solver {solver!r} does not take {', '.join(rejected)}; it takes --steps, --eps"
            + (f", {takes}" if takes else "")
        )
    return opts


def _save_npy_atomically(path: Path, array) -> None:
    """``np.save`` through a temporary file renamed into place: a full disk never leaves a truncated ``.npy``."""
    import numpy as np

    tmp = path.parent / f".{path.name}.tmp.{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            np.save(f, array)
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise


def _check_sample_size(n: int, event: tuple) -> None:
    """Refuse up front a request whose samples alone would not fit in memory (``--num 10**12``)."""
    from ._utils import check_memory

    check_memory(n * math.prod(event) * 4, f"{n:,} samples of shape {event}", "Ask for fewer samples (--num)")


def _device(name: str):
    from .training.distributed import resolve_device

    return resolve_device(name)


def cmd_sample(args: argparse.Namespace) -> int:
    import torch

    from .solvers import make_solver, solve
    from .training import load_model

    out = Path(args.out)
    if out.suffix.lower() not in (".npy", ".png"):
        raise UserError(f"--out must end in .npy or .png, got {args.out!r}")
    opts = _solver_options(args, args.solver)
    device = _device(args.device)
    sde, score, cfg = load_model(args.checkpoint, device=device, use_ema=not args.raw_weights)
    score, what = guided_score(args, score, cfg, device)
    event = tuple(cfg.event_shape)
    n = args.num or (64 if len(event) == 3 else 1000)
    batch = args.batch_size or n
    _check_sample_size(n, event)
    try:
        solver = make_solver(args.solver, **opts)
    except (TypeError, ValueError) as e:
        raise UserError(f"solver {args.solver!r}: {e}") from None
    gen = torch.Generator(device=device).manual_seed(args.seed)
    chunks, nfe = [], 0
    t0 = time.perf_counter()
    for start in range(0, n, batch):
        b = min(batch, n - start)
        res = solve(sde, score, (b, *event), solver=solver, steps=args.steps, generator=gen, device=device,
                    eps=args.eps, denoise=False if args.no_denoise else None, grid=args.grid)
        chunks.append(res.samples.float().cpu())
        nfe += res.nfe
    seconds = time.perf_counter() - t0
    x = torch.cat(chunks)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".npy":
        _save_npy_atomically(out, x.numpy())
    else:
        from .training.plotting import save_samples_figure

        rng = tuple(cfg.data_range) if cfg.data_range else (-1.0, 1.0)
        save_samples_figure(x, out, title=f"{args.solver}: {n} samples ({what})", data_range=rng)
    print(f"wrote {n} samples of shape {event} to {out} ({what}; solver {args.solver}, NFE {nfe}, {seconds:.1f} s)")
    return 0


def _likelihood_data(args: argparse.Namespace):
    from .data import MNIST_DATASETS, TOY_DATASETS, get_dataset

    spec = args.data
    data_dir = args.data_dir
    if spec in MNIST_DATASETS and data_dir is None:
        data_dir = _default_data_dir()
    if spec in TOY_DATASETS:
        return get_dataset(spec, split="test", n=args.num or 1000)
    ds = get_dataset(spec, data_dir=data_dir, split="test")
    if args.num is not None:
        ds.data = ds.data[: args.num]
    return ds


def cmd_likelihood(args: argparse.Namespace) -> int:
    import torch

    from .data import dequantization_range, to_levels
    from .errors import ShapeError
    from .likelihood import bits_per_dim, log_likelihood
    from .training import load_model
    from .training.metrics import mean_and_stderr

    device = _device(args.device)
    sde, score, cfg = load_model(args.checkpoint, device=device, use_ema=not args.raw_weights)
    ds = _likelihood_data(args)
    x = ds.data
    if tuple(x.shape[1:]) != tuple(cfg.event_shape):
        raise ShapeError(
            f"the data's examples have shape {tuple(x.shape[1:])} but the model was trained on examples of shape "
            f"{tuple(cfg.event_shape)}"
        )
    if args.trace == "exact" and args.n_probes != 1:
        raise UserError("--n-probes applies to --trace hutchinson only")
    from .solvers.odeint import ADAPTIVE_METHODS, FIXED_METHODS

    if args.method not in ADAPTIVE_METHODS and args.method not in FIXED_METHODS:
        raise UserError(f"unknown ODE method {args.method!r}; valid methods: {', '.join([*ADAPTIVE_METHODS, *FIXED_METHODS])}")
    if args.steps is not None and args.method in ADAPTIVE_METHODS:
        raise UserError(f"--steps applies to fixed-step methods ({', '.join(FIXED_METHODS)}); {args.method} chooses its "
                        "own steps (set --rtol/--atol, cap them with --max-steps)")
    options = dict(eps=args.eps, method=args.method, rtol=args.rtol, atol=args.atol, trace=args.trace,
                   max_steps=args.max_steps, steps=args.steps)
    if args.trace == "hutchinson":
        options["n_probes"] = args.n_probes
    gen = torch.Generator(device=device).manual_seed(args.seed)
    levels = ds.discrete_levels
    log_probs, bpds, nfe = [], [], 0
    t0 = time.perf_counter()
    for start in range(0, x.shape[0], args.batch_size):
        xb = x[start : start + args.batch_size].to(device)
        if levels:
            lo, hi = ds.data_range or (-1.0, 1.0)
            res = bits_per_dim(sde, score, to_levels(xb, levels, (lo, hi)), levels=levels,
                               data_range=dequantization_range(levels, (lo, hi)), repeats=args.repeats,
                               generator=gen, **options)
            d = xb[0].numel()
            width = (hi - lo) / (levels - 1)
            bpds.append(res.bits_per_dim.cpu())
            # log p of the dequantized points: -(bpd D ln 2) - D log(bin width)
            log_probs.append(-(res.bits_per_dim.cpu().double() * d * math.log(2.0)) - d * math.log(width))
            nfe += res.nfe
        else:
            res = log_likelihood(sde, score, xb.double() if device.type != "mps" else xb, generator=gen,
                                 score_dtype=torch.float32, **options)
            log_probs.append(res.log_prob.cpu().double())
            nfe += res.nfe
    seconds = time.perf_counter() - t0
    lp_mean, lp_se = mean_and_stderr(torch.cat(log_probs))
    summary: Dict[str, Any] = {
        "log_prob_mean": lp_mean, "log_prob_stderr": lp_se, "nfe": nfe, "num": int(x.shape[0]),
        "trace": args.trace, "data": args.data, "seconds": round(seconds, 3),
    }
    print(f"{x.shape[0]} examples of shape {tuple(x.shape[1:])}: mean log-likelihood {lp_mean:.4f} +- {lp_se:.4f} nats "
          f"(NLL {-lp_mean:.4f}); {args.trace} trace, NFE {nfe}, {seconds:.1f} s")
    if levels:
        bpd_mean, bpd_se = mean_and_stderr(torch.cat(bpds))
        summary.update(bits_per_dim=bpd_mean, bits_per_dim_stderr=bpd_se, levels=levels)
        print(f"bits/dim: {bpd_mean:.4f} +- {bpd_se:.4f} (uniform dequantization, {args.repeats} draw(s))")
    if args.json:
        print(json.dumps({k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in summary.items()}))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .training.demo import run_demo

    run_demo(out=args.out, steps=args.steps, seed=args.seed, quick=args.quick, data=args.data, device=args.device,
             progress=False if args.quiet else None, threads=args.threads)
    return 0


COMMANDS = {"train": cmd_train, "sample": cmd_sample, "likelihood": cmd_likelihood, "demo": cmd_demo,
            **CONDITIONAL_COMMANDS}


def main(argv: Optional[List[str]] = None) -> int:
    """Run the command line; returns the exit status (0 success, 1 error, 2 usage error)."""
    from .errors import ScoreSDEError

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse already printed usage and the message
        return int(e.code) if isinstance(e.code, int) else EXIT_USAGE
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)
    try:
        return COMMANDS[args.command](args)
    except (ScoreSDEError, UserError) as e:
        if _is_main_process():
            print(f"scoresde: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as e:  # disk full, read-only or missing directories, a file where a folder belongs, ...
        if _is_main_process():
            print(f"scoresde: error: {_os_error_text(e)}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("scoresde: interrupted", file=sys.stderr)
        return 130


def _os_error_text(e: OSError) -> str:
    """One line for an operating-system error: what failed, on which path."""
    what = e.strerror or str(e) or type(e).__name__
    where = " -> ".join(str(p) for p in (e.filename, e.filename2) if p is not None)
    return f"{where}: {what}" if where else what


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
