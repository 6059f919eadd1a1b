"""What every command shares: argparse types that call the shared validators, option groups, and their resolution.

Command modules (:mod:`~scoresde.cli.train`, :mod:`~scoresde.cli.sample`, ...) depend on this module and
on the library, never on each other. Every value a user types goes through :mod:`scoresde._validation`
(numbers finite and in range, counts integral, booleans from real words, choices exact with a
suggestion), so a new option cannot skip the checks; a bad value is one line on stderr.
"""

from __future__ import annotations

import argparse
import ast
import inspect
import math
import os
import sys
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from .. import _validation as V
from ..errors import OptionError, UserError

# ---------------------------------------------------------------------- argparse types
#: Limits of what a number on the command line may be (beyond them the work cannot be meant).
MAX_COUNT = 10**12


def _typed(parse: Callable[[str], Any], what: str) -> Callable[[str], Any]:
    """An argparse type from a parser of text that raises :class:`OptionError`; ``what`` names it in ``--help``."""

    def convert(text: str) -> Any:
        try:
            return parse(text)
        except OptionError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    convert.__name__ = what
    return convert


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise OptionError(f"expected a number, got {text!r}") from None


def _whole(text: str) -> int:
    t = text.strip()
    try:
        return int(t)
    except ValueError:
        raise OptionError(f"expected an integer, got {text!r}") from None


def int_from(minimum: int, maximum: int = MAX_COUNT) -> Callable[[str], int]:
    """An integer in ``[minimum, maximum]``."""
    return _typed(lambda s: V.integer(_whole(s), "the value", minimum=minimum, maximum=maximum), f"int>={minimum}")


positive_int = int_from(1)
nonneg_int = int_from(0)
seed = _typed(lambda s: V.seed_int(_whole(s)), "seed")
positive_float = _typed(lambda s: V.finite_float(_number(s), "the value", positive=True), "positive number")
nonneg_float = _typed(lambda s: V.finite_float(_number(s), "the value", minimum=0.0), "non-negative number")
finite = _typed(lambda s: V.finite_float(_number(s), "the value"), "number")
probability = _typed(lambda s: V.probability(_number(s), "the value"), "probability")


#: ``--guidance W``: a classifier-free guidance weight in ``[-1, 1e4]`` (-1: unconditional).
guidance_weight = _typed(lambda s: V.weight(_number(s), "--guidance", minimum=-1.0), "weight")
#: ``--classifier-scale S``: a classifier guidance scale in ``[0, 1e4]``.
classifier_scale = _typed(lambda s: V.weight(_number(s), "--classifier-scale", minimum=0.0), "scale")


def _seed_range(text: str) -> range:
    from ..noise import parse_seed_range

    return parse_seed_range(text)


#: ``--seeds A-B`` / ``A:B`` / ``N``: a bounded range of seeds in ``[0, 2**63 - 1]`` (:func:`scoresde.noise.parse_seed_range`).
seed_range = _typed(_seed_range, "seed range")


def _device_name(text: str) -> str:
    import re

    t = text.strip()
    if not re.fullmatch(r"auto|cpu|cuda(:\d{1,6})?", t):
        raise OptionError(f"expected auto, cpu, cuda or cuda:N, got {text!r}")
    return t


#: ``--device``: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (whether it exists is checked when it is resolved).
device_name = _typed(_device_name, "device")


def thread_count(text: str) -> Any:
    """``auto`` or a positive number of threads, at most 4 per CPU core."""
    if text.strip().lower() == "auto":
        return "auto"
    limit = 4 * (os.cpu_count() or 1)
    try:
        return V.integer(_whole(text), "--threads", minimum=1, maximum=limit,
                         need=f"'auto' or an integer in [1, {limit}] (4 per CPU core)")
    except OptionError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def literal(raw: str) -> Any:
    """A command-line value as a Python literal (number, bool word, None, string, tuple), else the string itself.

    ``true``/``false`` (any case) are booleans; integers stay integers, so a validator can refuse ``2.5``.
    """
    text = raw.strip()
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    if text.lower() in ("none", "null"):
        return None
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return text


def key_value(text: str) -> Tuple[str, Any]:
    """``KEY=VALUE`` with a valid name as KEY and :func:`literal` VALUE."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    k, v = text.split("=", 1)
    k = k.strip().replace("-", "_")
    if not k.isidentifier():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE with a valid name as KEY, got {text!r}")
    return k, literal(v)


class Choice:
    """An exact choice among names, with a suggestion for a near miss (``--solver dpm++``: did you mean dpmpp_2m?)."""

    def __init__(self, what: str, valid: Iterable[str]):
        self.what = what
        self.valid = list(valid)
        self.__name__ = what

    def __call__(self, text: str) -> str:
        if text in self.valid:
            return text
        raise ChoiceError(f"unknown {self.what} {text!r}{V.suggest(text, self.valid)} (valid: {', '.join(self.valid)})")


class ChoiceError(argparse.ArgumentTypeError):
    """A value outside a :class:`Choice`: reported in one line with exit status 1."""


# ---------------------------------------------------------------------- the parser
class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line: a mistyped choice exits with 1, other malformed input with 2."""

    def _get_values(self, action: argparse.Action, arg_strings: List[str]) -> Any:
        # `--opt=--` hands argparse its end-of-options marker as the value, which it drops (the option became [])
        if action.option_strings and action.nargs is None and list(arg_strings) == ["--"]:
            self.error(f"argument {'/'.join(action.option_strings)}: expected a value, got '--'")
        return super()._get_values(action, arg_strings)

    def error(self, message: str) -> "NoReturn":  # type: ignore[name-defined]  # noqa: F821
        choice = _CHOICE_MARK in message
        message = message.replace(_CHOICE_MARK, "")
        if "invalid choice:" in message:  # a mistyped sub-command
            message, choice = _command_suggestion(self, message), True
        hint = "" if choice else f"; see `{self.prog} --help`"
        self.exit(EXIT_ERROR if choice else EXIT_USAGE, f"scoresde: error: {message}{hint}\n")


EXIT_ERROR, EXIT_USAGE = 1, 2
_CHOICE_MARK = "\x00choice\x00"


def _command_suggestion(parser: argparse.ArgumentParser, message: str) -> str:
    """``unknown command 'frobnicate'; did you mean ...?`` from argparse's invalid-choice message."""
    import re

    m = re.search(r"invalid choice: '([^']*)'", message)
    bad = m.group(1) if m else "?"
    names: List[str] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            names = list(action.choices)
    return f"unknown command {bad!r}{V.suggest(bad, names)} (commands: {', '.join(names)})"


def choice_type(what: str, valid: Iterable[str]) -> Callable[[str], str]:
    """An argparse type for an exact choice; a miss is reported in one line with a suggestion and exit status 1."""
    chooser = Choice(what, valid)

    def convert(text: str) -> str:
        try:
            return chooser(text)
        except ChoiceError as e:
            raise argparse.ArgumentTypeError(_CHOICE_MARK + str(e)) from None

    convert.__name__ = what
    return convert


def apply_threads(args: argparse.Namespace, work: Optional[Callable[[], None]] = None, small: bool = False,
                  stored: Optional[int] = None) -> int:
    """Set torch's CPU threads for this command: ``--threads N``, or ``auto``.

    ``auto``: 1 for small work (vector data, toy networks); the count stored with a resumed run (so that it
    repeats bit for bit); else the fastest of 1 and the number of cores for one unit of ``work``, measured
    (:func:`scoresde.threads.choose_threads`); else 1 when there is nothing to measure. Returns the count.
    """
    from ..threads import choose_threads, set_threads

    n = getattr(args, "threads", "auto")
    if n != "auto":
        return set_threads(n)
    if small or (os.cpu_count() or 1) == 1:
        return set_threads(1)
    if stored is not None:
        return set_threads(stored)
    if work is None:
        return set_threads(1)
    best, times = choose_threads(work)
    if len(times) > 1 and not getattr(args, "quiet", False):
        shown = ", ".join(f"{k}: {1e3 * v:.0f} ms" for k, v in sorted(times.items()))
        note(f"--threads auto: {best} (measured per step {shown}; pass --threads N to pin it)")
    return best


def score_work(model: Any, dev: Any, batch: int = 16) -> Callable[[], None]:
    """One unit of a sampling or likelihood job for :func:`apply_threads`: a score evaluation on ``batch`` points."""
    import torch

    x = torch.randn((batch, *model.event_shape), generator=torch.Generator().manual_seed(0)).to(dev)
    t = torch.full((batch,), 0.5, device=dev)

    def work() -> None:
        with torch.no_grad():
            model.score_fn(x, t)

    return work


def add_common(p: argparse.ArgumentParser) -> None:
    """Options every command takes."""
    p.add_argument("--threads", type=thread_count, default="auto",
                   help="torch CPU threads: auto (default; measured for the job: 1 for small networks and on busy "
                   "machines) or a number")


# ---------------------------------------------------------------------- models and devices
def device(name: str):
    """``auto``/``cpu``/``cuda``/``cuda:N`` as a ``torch.device`` (one-line error otherwise)."""
    from ..distributed import resolve_device

    return resolve_device(name)


def add_model_options(p: argparse.ArgumentParser, default: Optional[str] = "run") -> None:
    """``--checkpoint`` (a run, ``score_sde:PATH`` or ``diffusers:PATH``), ``--config`` and ``--raw-weights``."""
    p.add_argument("--checkpoint", default=default,
                   help="the model: a run directory or checkpoint file, score_sde:PATH (with --config), diffusers:PATH or "
                   "safetensors:PATH "
                   f"(default: {default})")
    p.add_argument("--config", help="for score_sde:PATH: a published config name (e.g. vp/cifar10_ddpmpp_continuous) or "
                   "a JSON file with score_sde's model, data and training fields")
    p.add_argument("--raw-weights", action="store_true", help="use the raw weights instead of the EMA")


def load_model(args: argparse.Namespace, dev: Any):
    """The :class:`~scoresde.pretrained.PretrainedModel` of ``--checkpoint`` (and ``--config``) on ``dev``."""
    from ..pretrained.spec import load_model_spec

    return load_model_spec(args.checkpoint, getattr(args, "config", None), use_ema=not args.raw_weights, device=dev)


def data_dir_for(spec: str, given: Optional[str], model: Any = None) -> Optional[str]:
    """The data folder for ``spec``: ``--data-dir``, else the model's own (when it still exists), else ``SCORESDE_DATA``."""
    from ..data import default_data_dir

    if given:
        return given
    cfg = getattr(model, "run_config", None)
    if cfg is not None and spec == cfg.data and cfg.data_dir and os.path.isdir(cfg.data_dir):
        return cfg.data_dir
    return default_data_dir()


def is_main_process() -> bool:
    """Whether this process is rank 0 (or the only one)."""
    return int(os.environ.get("RANK", "0")) == 0


def launched_sharded() -> bool:
    """Whether torchrun started several processes."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def note(text: str) -> None:
    """A note on stderr (rank 0 only)."""
    if is_main_process():
        print(f"scoresde: note: {text}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------- solver options
#: CLI flag (dest) -> solver constructor argument; every solver takes --steps and --eps.
SOLVER_FLAGS = ("snr", "corrector_steps", "method", "rtol", "atol", "max_steps", "predictor", "corrector", "eta",
                "steps_per_level", "step_ratio")


def add_solver_options(p: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """The per-solver flags (each applies only to the solvers that take it) and ``--solver-arg``."""
    from ..flow import ADAPTIVE_METHODS, FIXED_METHODS
    from ..solvers import SOLVERS, StepSolver
    from ..solvers.torchsde_solver import TORCHSDE_METHODS

    predictors = sorted(n for n, c in SOLVERS.items() if issubclass(c, StepSolver) and n != "pc")
    methods = list(dict.fromkeys([*ADAPTIVE_METHODS, *FIXED_METHODS, *TORCHSDE_METHODS]))
    g = p.add_argument_group("solver options (each only for the solvers that take it)")
    g.add_argument("--snr", type=positive_float, help="Langevin corrector signal-to-noise ratio (pc, langevin)")
    g.add_argument("--corrector-steps", type=nonneg_int, help="Langevin steps per time step (pc, langevin)")
    g.add_argument("--predictor", type=choice_type("predictor", predictors),
                   help="predictor of pc: reverse_diffusion, euler_maruyama, ancestral, ddim, ...")
    g.add_argument("--corrector", type=choice_type("corrector", ["langevin", "none"]), help="corrector of pc")
    g.add_argument("--method", type=choice_type("ODE method (or torchsde method)", methods),
                   help="ODE method (ode: dopri5, rk4, ...) or torchsde method (torchsde: euler, milstein, srk)")
    g.add_argument("--rtol", type=positive_float, help="relative tolerance (ode)")
    g.add_argument("--atol", type=positive_float, help="absolute tolerance (ode)")
    g.add_argument("--max-steps", type=positive_int, help="cap on adaptive steps (ode)")
    g.add_argument("--eta", type=probability, help="DDIM stochasticity in [0, 1] (ddim)")
    g.add_argument("--steps-per-level", type=positive_int, help="Langevin steps per noise level (annealed_langevin)")
    g.add_argument("--step-ratio", type=positive_float, help="Langevin step size over sigma^2 (annealed_langevin)")
    g.add_argument("--solver-arg", action="append", type=key_value, default=[], metavar="KEY=VALUE",
                   help="any other option of the solver's class, e.g. --solver-arg order=3 or variable_step=false "
                   "(repeatable; true/false for switches)")
    return g


def solver_options(args: argparse.Namespace, solver: str) -> Dict[str, Any]:
    """The solver options given on the command line, checked against what ``solver`` takes."""
    from ..solvers import SOLVERS

    params = inspect.signature(SOLVERS[solver].__init__).parameters
    accepted = [name for name in params if name != "self"]
    opts, rejected = {}, []
    for name in SOLVER_FLAGS:
        value = getattr(args, name, None)
        if value is None:
            continue
        if name in accepted:
            opts[name] = value
        else:
            rejected.append("--" + name.replace("_", "-"))
    for key, value in getattr(args, "solver_arg", None) or []:
        if key not in accepted:
            raise UserError(f"solver {solver!r} has no option {key!r}{V.suggest(key, accepted)}; its options: "
                            f"{', '.join(accepted) or 'none'}")
        opts[key] = value
    if rejected:
        takes = ", ".join("--" + n.replace("_", "-") for n in accepted if n in SOLVER_FLAGS)
        raise UserError(f"solver {solver!r} does not take {', '.join(rejected)}; it takes --steps, --eps"
                        + (f", {takes}" if takes else ""))
    return opts


def make_solver(args: argparse.Namespace, solver: str, opts: Dict[str, Any]):
    """The solver object, with constructor errors reported as one line naming the solver."""
    from ..errors import ScoreSDEError
    from ..solvers import make_solver as build

    try:
        return build(solver, **opts)
    except ScoreSDEError as e:
        raise UserError(f"solver {solver!r}: {e}") from None


# ---------------------------------------------------------------------- sharding
def add_shard_options(p: argparse.ArgumentParser) -> None:
    """``--shard-dir`` and ``--timeout`` of the sharded (torchrun) modes."""
    p.add_argument("--shard-dir", help="folder of the finished chunks, shared by all ranks; a rerun resumes from it "
                   "(default: OUT.shards)")
    p.add_argument("--timeout", type=positive_float, default=600.0,
                   help="seconds a rank may go silent (died, stopped) before the others exit with an error (default: 600)")


def shard_device(name: str):
    """The device of this rank: ``cuda:LOCAL_RANK`` for auto/cuda under torchrun."""
    from ..distributed import resolve_device

    return resolve_device(name, int(os.environ.get("LOCAL_RANK", "0")))


# ---------------------------------------------------------------------- guidance
#: ``sample --class all``: every class in turn (sample ``i``, or the sample of seed ``i``, gets class ``i mod K``).
ALL_CLASSES = "all"


def class_or_all(text: str) -> Any:
    """``all`` or a class index (a non-negative integer below 2**31; checked against the model's classes later)."""
    if text.strip().lower() == ALL_CLASSES:
        return ALL_CLASSES
    return int_from(0, 2**31 - 1)(text)


def add_guidance_options(p: argparse.ArgumentParser, allow_all: bool = True, classifier: bool = True) -> None:
    """``--class``, ``--guidance`` and (for ``sample``) ``--classifier``/``--classifier-scale``."""
    g = p.add_argument_group("conditional sampling")
    g.add_argument("--class", dest="class_label", type=class_or_all if allow_all else int_from(0, 2**31 - 1), metavar="K",
                   help="sample class K (a class-conditional model, or with --classifier)"
                   + ("; 'all': every class in turn, sample i (or the sample of seed i) of class i mod K" if allow_all else ""))
    g.add_argument("--guidance", type=guidance_weight, metavar="W",
                   help="classifier-free guidance weight in [-1, 1e4]: (1 + W) s(x, t, K) - W s(x, t) (needs --class; "
                   "0 = conditional)")
    if classifier:
        g.add_argument("--classifier", metavar="PATH", help="noise-conditional classifier file (scoresde train-classifier)")
        g.add_argument("--classifier-scale", type=classifier_scale, metavar="S", help="classifier guidance scale in [0, 1e4] (default: 1 with --classifier)")


def class_guidance(args: argparse.Namespace, model: Any, dev: Any) -> Optional[Tuple[Callable[[int], Callable], int, list]]:
    """Check the guidance flags once; ``None`` without ``--class``, else ``(make, K, how)``.

    ``make(k)`` is the score function of class ``k`` with the requested guidance, ``K`` the number of
    classes (the model's, or the classifier's) and ``how`` the guidance described in words.
    """
    from .. import guidance as G
    from ..errors import LabelError

    k, w = getattr(args, "class_label", None), getattr(args, "guidance", None)
    clf_path, scale = getattr(args, "classifier", None), getattr(args, "classifier_scale", None)
    if k is None:
        given = [f for f, v in (("--guidance", w), ("--classifier", clf_path), ("--classifier-scale", scale)) if v is not None]
        if given:
            raise UserError(f"{', '.join(given)} {'needs' if len(given) == 1 else 'need'} --class K")
        return None
    if scale is not None and clf_path is None:
        raise UserError("--classifier-scale needs --classifier PATH")
    score = model.score_fn
    conditional_model = bool(getattr(score, "is_conditional", False))
    if w is not None and not conditional_model:
        raise LabelError("--guidance (classifier-free) needs a class-conditional model; train one with --conditional")
    if not conditional_model and clf_path is None:
        raise LabelError(f"--class {k}: the model has no classes; train it with --conditional, or guide it with --classifier PATH")
    clf, how = None, []
    if conditional_model and w is not None:
        how.append(f"classifier-free guidance w = {w:g}")
    if clf_path is not None:
        clf = load_guidance_classifier(clf_path, model, dev)
        how.append(f"classifier guidance scale {1.0 if scale is None else scale:g}")
    num_classes = int(G.num_classes_of(score) if conditional_model else G.num_classes_of(clf))
    if k != ALL_CLASSES and not 0 <= k < num_classes:
        raise LabelError(f"--class {k} is out of range [0, {num_classes}): the {'model' if conditional_model else 'classifier'} "
                         f"has {num_classes} classes")
    s = 1.0 if scale is None else float(scale)

    def make(label: int) -> Callable:
        base = score
        if conditional_model:
            base = G.conditional(score, label) if w is None else G.classifier_free(score, label, float(w))
        return base if clf is None else G.classifier_guided(base, clf, label, scale=s)

    return make, num_classes, how


def load_guidance_classifier(path: str, model: Any, dev: Any) -> Any:
    """The noise-conditional classifier at ``path``, checked against the model: shape, SDE and data set."""
    from ..classifier import load_classifier

    clf, sde_info = load_classifier(path, device=dev)
    if list(clf.event_shape) != list(model.event_shape):
        raise UserError(f"the classifier takes samples of shape {tuple(clf.event_shape)} but the model makes "
                        f"{tuple(model.event_shape)}")
    ours = (type(model.sde).__name__, repr(model.sde))
    from ..checkpoint import build_sde

    theirs_sde = build_sde(sde_info.get("name"), **dict(sde_info.get("kwargs") or {}))
    if repr(theirs_sde) != ours[1]:
        raise UserError(f"the classifier was trained for the SDE {theirs_sde!r} but the model uses {model.sde!r}; "
                        "train it with --checkpoint pointing at the model's run")
    data = (getattr(clf, "metadata", None) or {}).get("data")
    if data is not None and model.data is not None and str(data) != str(model.data):
        raise UserError(f"the classifier was trained on {data!r} but the model on {model.data!r}; train a classifier on "
                        f"the model's data (scoresde train-classifier --data {model.data} --checkpoint RUN)")
    return clf


def guided_score(args: argparse.Namespace, model: Any, dev: Any) -> Tuple[Callable, str]:
    """The score function ``sample`` and ``inpaint`` use given the guidance flags, and a description."""
    guide = class_guidance(args, model, dev)
    if guide is None:
        return model.score_fn, "unconditional"
    make, _, how = guide
    return make(int(args.class_label)), ", ".join([f"class {args.class_label}", *how])


# ---------------------------------------------------------------------- outputs
def check_output(path: str, suffixes: Sequence[str], option: str = "--out", folder_ok: bool = False) -> Path:
    """An output path with one of ``suffixes`` (or a folder, ``DIR/``, when ``folder_ok``) whose folder can be written.

    Checked before any work starts, so a long job never ends on an unwritable output.
    """
    p = Path(path).expanduser()
    is_folder = folder_ok and (str(path).endswith(("/", os.sep)) or p.is_dir())
    if not is_folder and p.suffix.lower() not in suffixes:
        extra = " or a folder DIR/ (one PNG per image)" if folder_ok else ""
        raise UserError(f"{option} must end in {' or '.join(suffixes)}{extra}, got {str(path)!r}")
    if not is_folder and p.is_dir():
        raise UserError(f"{option} {p} is a folder; give a file name")
    parent = p if is_folder else p.parent
    probe = parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK):
        raise UserError(f"{option} {p}: cannot write into {probe} (not a writable folder)")
    return p


def save_array(path: Path, array: Any) -> None:
    """``np.save`` of ``array`` to ``path``, atomically (:func:`scoresde.checkpoint.atomic_write`)."""
    import numpy as np

    from ..checkpoint import atomic_write

    atomic_write(path, lambda f: np.save(f, array), what="array")


def write_samples(x: Any, out: Path, data_range: Tuple[float, float], title: str,
                  column_labels: Optional[Sequence[str]] = None) -> None:
    """Samples ``[N, *event]`` to ``out``: ``.npy`` (model space), ``.png`` (a figure) or a folder (one PNG each)."""
    import numpy as np

    from .. import plotting

    if out.suffix.lower() == ".npy":
        save_array(out, x.float().numpy() if hasattr(x, "float") else np.asarray(x))
    elif out.suffix.lower() == ".png":
        kwargs = {"column_labels": list(column_labels)} if column_labels is not None and _takes(
            plotting.save_samples_figure, "column_labels") else {}
        plotting.save_samples_figure(x.float(), out, title=title, data_range=data_range, **kwargs)
    else:
        if x.ndim != 4:
            raise UserError(f"one PNG per image needs images [N, C, H, W]; these samples have shape {tuple(x.shape)}: "
                            "write a .npy or .png file instead")
        plotting.save_images(x.float(), out, data_range=data_range)


def _takes(fn: Callable, name: str) -> bool:
    return name in inspect.signature(fn).parameters


def check_sample_size(n: int, event: Sequence[int]) -> None:
    """Refuse up front a request whose samples alone would not fit in memory (``--num 10**12``)."""
    from .._utils import check_memory

    check_memory(n * math.prod(event) * 4, f"{n:,} samples of shape {tuple(event)}", "Ask for fewer samples (--num)")


def finite_json(obj: Any) -> Any:
    """``obj`` with non-finite floats as ``None`` (strict JSON)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: finite_json(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [finite_json(v) for v in obj]
    return obj


#: Options of a sub-command, for argparse's ``parents``.
Common = List[argparse.ArgumentParser]
