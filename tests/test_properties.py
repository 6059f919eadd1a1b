"""A property-based battery: the public API and the command-line parsers under generated bad values.

Every property draws one parameter's value from a pool of values of every kind (NaN, infinity, huge,
negative, a float for an integer, text for a number, a boolean for a number, a list, the wrong shape,
dtype or device: a ``meta`` tensor) while the other arguments stay valid, and asserts the contract of
:mod:`scoresde._validation`:

* a value the contract accepts gives a correct result: finite, of the right shape and type;
* any other value raises a :class:`~scoresde.errors.ScoreSDEError` whose one-line message names the
  parameter; never a raw torch/NumPy/OS error, never a NaN result, never a silent coercion;
* on the command line (parsing only), a value is either parsed into a value of the option's type (a
  finite number in range, an exact choice) or refused with ``SystemExit`` 1 or 2 and one line on stderr
  naming the option.

Whether a value is acceptable is decided here, independently of the library (:func:`as_count`,
:func:`as_number`, :func:`is_bool`), so a validator that lets a bad value through fails the battery.

The default run is bounded (a fixed number of examples per property, derandomized, no deadline);
``pytest -m slow tests/test_properties.py`` runs the same properties with many more examples. The
number of generated cases is printed at the end of the run.
"""

from __future__ import annotations

import argparse
import math
import re
from collections import Counter
from typing import Any, Callable, Optional

import numpy as np
import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import scoresde  # noqa: E402
from scoresde import SOLVERS, VESDE, VPSDE, SubVPSDE  # noqa: E402
from scoresde import guidance as G  # noqa: E402
from scoresde.cli import build_parser  # noqa: E402
from scoresde.config import TrainConfig  # noqa: E402
from scoresde.errors import IntegrationError, NonFiniteError, ScoreSDEError  # noqa: E402
from scoresde.metrics import FeatureStatistics, LeNet, QualityClassifier, frechet_distance, sample_quality  # noqa: E402
from scoresde.nets import build_network  # noqa: E402
from scoresde.noise import as_seeds, parse_seed_range  # noqa: E402
from scoresde.solvers import GRIDS, Karras, TimeGrid  # noqa: E402

#: Examples per property: the default run, and the slow profile (``pytest -m slow``).
FAST_EXAMPLES, SLOW_EXAMPLES = 100, 2000
_COMMON = dict(deadline=None, derandomize=True, database=None, print_blob=False,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])

#: Generated cases per property (reported at the end of the run).
CASES: Counter = Counter()


@pytest.fixture(scope="module", autouse=True)
def _report_cases(request):
    yield
    if CASES:
        lines = [f"hypothesis battery: {sum(CASES.values())} generated cases over {len(CASES)} properties"]
        lines += [f"  {name}: {n}" for name, n in sorted(CASES.items())]
        capture = request.config.pluginmanager.getplugin("capturemanager")
        if capture is not None:
            with capture.global_and_fixture_disabled():
                print("\n" + "\n".join(lines))
        else:
            print("\n".join(lines))


def battery(*strategies: Any, examples: Optional[int] = None, **named: Any):
    """Turn ``check(...)`` into two tests: the bounded default one and a ``slow`` one with many more examples."""

    def make(check: Callable) -> Callable:
        fast = settings(max_examples=examples or FAST_EXAMPLES, **_COMMON)(given(*strategies, **named)(check))
        slow = settings(max_examples=SLOW_EXAMPLES * (examples or FAST_EXAMPLES) // FAST_EXAMPLES,
                        **_COMMON)(given(*strategies, **named)(check))
        slow = pytest.mark.slow(slow)
        fast.slow_variant = slow
        return fast

    return make


# ---------------------------------------------------------------------------- values of every kind
NAN, INF = float("nan"), float("inf")


class _Opaque:
    def __repr__(self) -> str:
        return "<object>"


SPECIAL = [
    NAN, INF, -INF, 1e300, -1e300, 1e-300, -1, 0, 2.5, -0.5, 10**30, -(10**30), 2**63, "3", "0.5", "abc", "", "nan",
    True, False, None, [1], (2,), {}, _Opaque(), 1 + 1j, np.int64(2), np.float64(0.5), np.float32(NAN), np.bool_(True),
    torch.tensor(NAN), torch.tensor(2), torch.tensor(0.5), torch.tensor([1, 2]), torch.tensor(True),
    torch.zeros((), device="meta"), torch.zeros(2, device="meta"),
]
ANY = st.sampled_from(SPECIAL)
COUNTS = st.one_of(ANY, st.integers(-3, 6), st.floats(-10, 10), st.sampled_from([1.0, 2.0, 3.0, 4.0]))
NUMBERS = st.one_of(ANY, st.floats(allow_nan=True, allow_infinity=True), st.floats(-2, 2), st.integers(-5, 5))
BOOLS = st.one_of(st.sampled_from([True, False, "true", "false", "yes", 0, 1, 1.0, None, np.bool_(False),
                                   torch.tensor(True), [True]]), ANY)


def choices(valid) -> Any:
    valid = list(valid)
    return st.one_of(st.sampled_from(valid), st.sampled_from([v.upper() for v in valid] + [v + " " for v in valid]),
                     st.text(max_size=6), ANY)


def as_count(v: Any) -> Optional[int]:
    """The integer ``v`` stands for under the contract (``3``, ``3.0``, a 0-d integer tensor), else ``None``."""
    if isinstance(v, (bool, np.bool_)):
        return None
    if isinstance(v, torch.Tensor):
        if v.ndim or v.dtype == torch.bool or v.device.type == "meta" or v.is_complex():
            return None
        v = v.item()
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    if isinstance(v, float) and math.isfinite(v) and v.is_integer():
        return int(v)
    return None


def as_number(v: Any) -> Optional[float]:
    """The finite float ``v`` stands for (numbers and 0-d real tensors; not text, booleans or lists), else ``None``."""
    if isinstance(v, (bool, np.bool_, str, bytes, complex, list, tuple, dict)) or v is None:
        return None
    if isinstance(v, torch.Tensor):
        if v.ndim or v.dtype == torch.bool or v.device.type == "meta" or v.is_complex():
            return None
        v = v.item()
    try:
        f = float(v)
    except (TypeError, ValueError, OverflowError):
        return None
    return f if math.isfinite(f) else None


def is_bool(v: Any) -> bool:
    return isinstance(v, (bool, np.bool_))


def in_range(v: Optional[float], lo: float = -INF, hi: float = INF, open_lo: bool = False, open_hi: bool = False) -> bool:
    if v is None:
        return False
    return (lo < v if open_lo else lo <= v) and (v < hi if open_hi else v <= hi)


def names(message: str, name: str) -> bool:
    """Whether the error message names the parameter (as a word; ``"max_steps"`` counts for ``"steps"`` too)."""
    return re.search(rf"(?<![A-Za-z]){re.escape(name)}(?![A-Za-z])", message) is not None


def check(what: str, call: Callable[[], Any], name: str, ok: bool, result: Callable[[Any], None] = lambda r: None,
          also: tuple = ()) -> None:
    """The contract: ``ok`` values give a correct result, others a one-line ScoreSDEError naming ``name``.

    ``also``: other words a message may name instead (a value that is refused where it is used, e.g. ``"grid"`` for
    ``eps`` given with a tensor of times).
    """
    CASES[what] += 1
    try:
        out = call()
    except ScoreSDEError as e:
        message = str(e)
        assert "\n" not in message.strip(), f"{what}: a multi-line message: {message!r}"
        if ok and isinstance(e, (NonFiniteError, IntegrationError)):
            return  # a valid but extreme value may make the computation diverge: reported, never returned as NaN
        assert not ok, f"{what}: the valid {name} was refused: {type(e).__name__}: {message}"
        assert any(names(message, n) for n in (name, *also)), f"{what}: the message does not name {name!r}: {message}"
        return
    except Exception as e:  # a raw error: the battery's finding
        raise AssertionError(f"{what}: {name} gave a raw {type(e).__name__}: {e}") from e
    assert ok, f"{what}: the invalid {name} was accepted (a silent coercion), returning {type(out).__name__}"
    result(out)


def finite_like(shape, dtype=torch.float32) -> Callable[[Any], None]:
    def result(x: Any) -> None:
        x = x.samples if hasattr(x, "samples") else x
        assert isinstance(x, torch.Tensor) and tuple(x.shape) == tuple(shape), (type(x), getattr(x, "shape", None))
        assert x.dtype == dtype and bool(torch.isfinite(x).all()), "non-finite samples returned"

    return result


# ---------------------------------------------------------------------------- the models the properties sample
SDES = {"vp": VPSDE(), "subvp": SubVPSDE(), "ve": VESDE(sigma_max=5.0)}


def exact_score(sde: scoresde.SDE) -> Callable:
    """The exact score of N(0, I) data under ``sde``: ``-x / (scale^2 + std^2)``."""

    def score(x, t):
        scale, std = sde.marginal_coeffs(t)
        return -x / scoresde.append_dims(scale * scale + std * std, x.ndim).to(x.dtype)

    return score


#: Options that make each solver cheap and valid with ``steps`` (the adaptive ODE chooses its own steps).
BASE = {name: {} for name in SOLVERS}
BASE["ode"] = dict(method="rk4")
BASE["annealed_langevin"] = dict(steps_per_level=2)
SOLVER_NAMES = sorted(SOLVERS)
SHAPE = (2, 2)


def _solve(solver: str, sde_name: str = "vp", **kw: Any):
    sde = SDES[sde_name]
    kw = {**BASE[solver], **kw}
    kw.setdefault("steps", 3)
    kw.setdefault("generator", torch.Generator().manual_seed(0))
    return scoresde.solve(sde, exact_score(sde), kw.pop("shape", SHAPE), solver, **kw)


@battery(st.sampled_from(SOLVER_NAMES), st.sampled_from(list(SDES)), st.sampled_from([None, *GRIDS]), COUNTS)
def test_solve_steps(solver, sde, grid, steps):
    n = as_count(steps)
    ok = steps is None or (n is not None and 1 <= n <= 6 and not (solver == "edm" and n == 1))
    if n is not None and n > 6:
        return  # valid but slow: a huge count is covered by the bound check below
    check("solve(steps)", lambda: _solve(solver, sde, grid=grid, steps=steps), "steps", ok, finite_like(SHAPE))


@battery(st.sampled_from(SOLVER_NAMES), st.sampled_from([10**6 + 1, 10**7, 10**30, 2**63, 1e300]))
def test_solve_huge_steps(solver, steps):
    check("solve(huge steps)", lambda: _solve(solver, steps=steps), "steps", False)


@battery(st.sampled_from(SOLVER_NAMES), st.sampled_from(list(SDES)), NUMBERS)
def test_solve_eps(solver, sde, eps):
    e = as_number(eps)
    ok = eps is None or (in_range(e, 0, 1, open_lo=True, open_hi=True) and float(torch.tensor(e, dtype=torch.float32)) > 0)
    check("solve(eps)", lambda: _solve(solver, sde, eps=eps), "eps", ok, finite_like(SHAPE), also=("grid",))


@battery(st.sampled_from(SOLVER_NAMES), st.one_of(choices(GRIDS), st.sampled_from([Karras(rho=3), GRIDS["uniform"]])))
def test_solve_grid_names(solver, grid):
    ok = grid is None or (isinstance(grid, str) and grid in GRIDS) or isinstance(grid, TimeGrid) or grid is GRIDS["uniform"]
    check("solve(grid name)", lambda: _solve(solver, grid=grid), "grid", ok, finite_like(SHAPE))


GRID_TENSORS = st.one_of(
    st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=0, max_size=5),
    st.lists(st.floats(0, 1.5), min_size=2, max_size=5).map(lambda v: sorted(v, reverse=True)),
    st.sampled_from([torch.tensor([1.0, 0.5, 0.001]), torch.tensor([[1.0, 0.5]]), torch.tensor([1, 0]),
                     torch.zeros(3, device="meta"), torch.tensor([1.0, 0.5, 0.3]), torch.tensor([0.5, 0.001])]),
    ANY,
)


def _valid_times(grid: Any) -> bool:
    if isinstance(grid, torch.Tensor):
        if grid.device.type == "meta" or grid.ndim != 1 or grid.is_complex() or grid.dtype == torch.bool:
            return False
        grid = grid.tolist()
    if not isinstance(grid, list) or len(grid) < 2 or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in grid):
        return False
    f32 = torch.tensor(grid, dtype=torch.float32)
    return (grid[0] == 1.0 and all(a > b for a, b in zip(grid, grid[1:])) and grid[-1] > 0
            and bool((f32.diff() < 0).all()) and float(f32[-1]) > 0)


@battery(st.sampled_from(SOLVER_NAMES), GRID_TENSORS)
def test_solve_grid_tensors(solver, grid):
    ok = grid is None or (_valid_times(grid) and not (solver == "edm" and len(grid) == 2))
    check("solve(grid tensor)", lambda: _solve(solver, grid=grid, steps=None), "grid", ok, finite_like(SHAPE),
          also=("steps", "eps"))


class _Custom(TimeGrid):
    """A grid object returning whatever it was given (bypassing TimeGrid's end snapping)."""

    def __init__(self, times):
        self.times_ = times

    def __call__(self, sde, steps, eps):
        return self.times_


@battery(st.sampled_from(["ddim", "euler_maruyama", "dpmpp_2m", "unipc"]), GRID_TENSORS)
def test_custom_time_grid_is_checked_like_a_tensor(solver, times):
    ok = _valid_times(times) and len(times) == 4 and abs(float(times[-1]) - 1e-3) <= 1e-9
    check("solve(custom TimeGrid)", lambda: _solve(solver, grid=_Custom(times), steps=3), "grid", ok, finite_like(SHAPE))


GENERATORS = st.one_of(ANY, st.sampled_from([torch.Generator().manual_seed(1), 0, "0", np.random.default_rng(0)]))


@battery(st.sampled_from(SOLVER_NAMES), GENERATORS)
def test_solve_generator(solver, generator):
    ok = generator is None or isinstance(generator, torch.Generator)
    check("solve(generator)", lambda: _solve(solver, generator=generator), "generator", ok, finite_like(SHAPE))


DTYPES = st.one_of(st.sampled_from([torch.float32, torch.float64, torch.int64, torch.bool, torch.complex64, "float32",
                                    np.float32, None]), ANY)


@battery(st.sampled_from(SOLVER_NAMES), DTYPES)
def test_solve_dtype(solver, dtype):
    ok = dtype in (torch.float32, torch.float64, None)
    want = dtype if isinstance(dtype, torch.dtype) else torch.float32
    check("solve(dtype)", lambda: _solve(solver, dtype=dtype), "dtype", ok, finite_like(SHAPE, want))


DEVICES = st.one_of(st.sampled_from(["cpu", torch.device("cpu"), "meta", torch.device("meta"), "gpu", "cuda:x", ""]), ANY)


@battery(st.sampled_from(SOLVER_NAMES), DEVICES)
def test_solve_device(solver, device):
    ok = device is None or str(device) == "cpu"
    check("solve(device)", lambda: _solve(solver, device=device), "device", ok, finite_like(SHAPE))


SHAPES = st.one_of(ANY, st.lists(COUNTS, min_size=0, max_size=4), st.sampled_from([(2, 2), [3, 1], (2,), "22", (0, 2),
                                                                                   (2, 2.0), torch.Size([2, 3])]))


@battery(st.sampled_from(SOLVER_NAMES), SHAPES)
def test_solve_shape(solver, shape):
    entries = [as_count(s) for s in shape] if isinstance(shape, (list, tuple, torch.Size)) else None
    ok = entries is not None and len(entries) >= 2 and all(e is not None and 1 <= e <= 6 for e in entries)
    if entries and all(e is not None and e > 0 for e in entries) and not ok and len(entries) >= 2:
        return  # a large valid shape: slow, not a validation case
    want = tuple(entries) if ok else None
    check("solve(shape)", lambda: _solve(solver, shape=shape), "shape", ok, finite_like(want) if ok else lambda r: None)


X_INITS = st.one_of(ANY, st.sampled_from([
    torch.zeros(2, 2), torch.zeros(2, 2, dtype=torch.float64), torch.zeros(3, 2), torch.zeros(2, 2, dtype=torch.int64),
    torch.full((2, 2), NAN), torch.zeros(2, 2, device="meta"), np.zeros((2, 2)), torch.zeros(2), [[0.0, 0.0]] * 2]))


@battery(st.sampled_from(SOLVER_NAMES), X_INITS)
def test_solve_x_init(solver, x_init):
    ok = x_init is None or (isinstance(x_init, torch.Tensor) and x_init.shape == SHAPE and x_init.is_floating_point()
                            and x_init.device.type == "cpu" and bool(torch.isfinite(x_init).all()))
    want = x_init.dtype if ok and x_init is not None else torch.float32
    check("solve(x_init)", lambda: _solve(solver, x_init=x_init), "x_init", ok, finite_like(SHAPE, want),
          also=("shape",))


SEEDS = st.one_of(ANY, st.lists(st.one_of(st.integers(-(2**64), 2**64), ANY), min_size=0, max_size=3),
                  st.sampled_from([[1, 2], range(2), torch.tensor([1, 2]), torch.tensor([1.0, 2.0]), np.array([1, 2]),
                                   [1, 2, 3], range(10**12), torch.tensor([[1, 2]]), torch.zeros(2, device="meta")]))


def _valid_seeds(seeds: Any) -> bool:
    if isinstance(seeds, torch.Tensor):
        return seeds.ndim == 1 and seeds.shape[0] == 2 and not seeds.is_floating_point() and seeds.dtype != torch.bool \
            and seeds.device.type == "cpu"
    if isinstance(seeds, (list, range)):
        return len(seeds) == 2 and all(type(v) is int and -(2**63) <= v < 2**63 for v in seeds)
    return False


@battery(st.sampled_from(SOLVER_NAMES), SEEDS)
def test_solve_seeds(solver, seeds):
    check("solve(seeds)", lambda: _solve(solver, seeds=seeds, generator=None), "seeds", seeds is None or _valid_seeds(seeds),
          finite_like(SHAPE))


@battery(st.sampled_from(SOLVER_NAMES), st.sampled_from(["return_log_prob", "record_trajectory", "denoise"]), BOOLS, examples=2 * FAST_EXAMPLES)
def test_solve_flags(solver, flag, value):
    ok = is_bool(value) or (flag == "denoise" and value is None)
    if flag == "return_log_prob" and is_bool(value) and bool(value) and solver != "ode":
        ok = False  # only the probability-flow ODE integrates the divergence
    check(f"solve({flag})", lambda: _solve(solver, **{flag: value}), flag, ok, finite_like(SHAPE))


# ---------------------------------------------------------------------------- solver constructors
def _solver_params():
    """``(solver, option, kind, valid)`` for every number, count, flag and choice a solver class takes."""
    out = [
        ("ddim", "eta", "number", lambda v: in_range(as_number(v), 0, 1)),
        ("dpmpp_2m", "lower_order_final", "bool", is_bool),
        ("dpmpp_2m_sde", "eta", "number", lambda v: in_range(as_number(v), 0, 1)),
        ("unipc", "order", "count", lambda v: as_count(v) in (1, 2, 3)),
        ("unipc", "corrector", "bool", is_bool),
        ("unipc", "variant", "choice:bh1,bh2", lambda v: v in ("bh1", "bh2")),
        ("ipndm", "max_order", "count", lambda v: as_count(v) in (1, 2, 3, 4)),
        ("ipndm", "variable_step", "bool", is_bool),
        ("edm", "s_churn", "number", lambda v: in_range(as_number(v), 0)),
        ("edm", "s_noise", "number", lambda v: in_range(as_number(v), 0, open_lo=True)),
        ("langevin", "snr", "number", lambda v: in_range(as_number(v), 0, open_lo=True)),
        ("langevin", "corrector_steps", "count", lambda v: in_range(as_count(v), 1, 10**6)),
        ("pc", "corrector", "choice:langevin,none", lambda v: v in ("langevin", "none", None)),
        ("pc", "corrector_steps", "count", lambda v: v is None or in_range(as_count(v), 0, 10**6)),
        ("annealed_langevin", "steps_per_level", "count", lambda v: in_range(as_count(v), 1, 10**6)),
        ("annealed_langevin", "step_ratio", "number", lambda v: v is None or in_range(as_number(v), 0, 4, True, True)),
        ("ode", "rtol", "number", lambda v: in_range(as_number(v), 0, open_lo=True)),
        ("ode", "trace", "choice:exact,hutchinson", lambda v: v in ("exact", "hutchinson")),
        ("torchsde", "method", "choice:euler,milstein,srk", lambda v: v in ("euler", "milstein", "srk")),
    ]
    return out


PARAMS = _solver_params()
KIND = {"number": NUMBERS, "count": COUNTS, "bool": BOOLS}


@battery(st.data(), examples=6 * FAST_EXAMPLES)
def test_solver_options(data):
    solver, option, kind, valid = data.draw(st.sampled_from(PARAMS))
    value = data.draw(KIND[kind] if kind in KIND else choices(kind.split(":")[1].split(",")))
    ok = valid(value)
    if ok and kind == "count" and (as_count(value) or 0) > 3:
        return  # valid but slow (thousands of Langevin steps): the bound itself is what the huge values test
    opts = {**BASE[solver], option: value}
    check(f"SOLVERS[{solver}]({option})", lambda: _solve(solver, **opts), option, ok, finite_like(SHAPE),
          also=("torchsde method", "ODE method"))


@battery(NUMBERS)
def test_karras_rho(rho):
    r = as_number(rho)
    check("Karras(rho)", lambda: _solve("ddim", grid=Karras(rho=rho)), "rho", in_range(r, 0.1, 1000), finite_like(SHAPE))


# ---------------------------------------------------------------------------- SDEs and the networks
@battery(st.sampled_from([VPSDE, SubVPSDE]), st.sampled_from(["beta_min", "beta_max"]), NUMBERS, examples=2 * FAST_EXAMPLES)
def test_vp_sde_arguments(cls, name, value):
    v = as_number(value)
    kw = {name: value}
    lo, hi = (0.1 if name == "beta_max" else 0, 200.0 if name == "beta_max" else 20.0)
    ok = in_range(v, lo, hi, open_lo=name == "beta_min")

    def run():
        sde = cls(**kw)
        return scoresde.sample(sde, exact_score(sde), SHAPE, "ddim", steps=3, generator=torch.Generator().manual_seed(0))

    check(cls.__name__, run, name, ok, finite_like(SHAPE))


@battery(st.sampled_from(["sigma_min", "sigma_max"]), NUMBERS, examples=2 * FAST_EXAMPLES)
def test_ve_sde_arguments(name, value):
    v = as_number(value)
    kw = {name: value}
    if name == "sigma_min":
        ok = in_range(v, 0, 50.0, open_lo=True, open_hi=True) and 50.0 / v <= 1e12
    else:
        ok = in_range(v, 0.01, 1e6, open_lo=True) and v / 0.01 <= 1e12

    def run():
        sde = VESDE(**kw)
        return scoresde.sample(sde, exact_score(sde), SHAPE, "ddim", steps=3, generator=torch.Generator().manual_seed(0))

    check("VESDE", run, name, ok, finite_like(SHAPE))


NET_PARAMS = [
    ("mlp", "hidden", "count", 1, 64), ("mlp", "depth", "count", 0, 4), ("mlp", "embed_dim", "even", 2, 64),
    ("mlp", "fourier_scale", "number", 0, 1e6), ("mlp", "num_classes", "count", 1, 50),
    ("unet", "channels", "count", 8, 8), ("unet", "num_res_blocks", "count", 1, 2), ("unet", "dropout", "fraction", 0, 1),
    ("unet", "num_classes", "count", 1, 50), ("unet", "embed", "choice:fourier,positional", None, None),
]


@battery(st.data(), examples=4 * FAST_EXAMPLES)
def test_build_network_arguments(data):
    kind, name, what, lo, hi = data.draw(st.sampled_from(NET_PARAMS))
    strategy = {"even": COUNTS, "fraction": NUMBERS, **KIND}.get(what)
    value = data.draw(strategy if strategy is not None else choices(what.split(":")[1].split(",")))
    if what in ("count", "even"):
        n = as_count(value)
        if n is not None and n > hi and (lo <= n <= 10**4):
            return  # valid but larger than a quick test builds
        ok = (n is not None and lo <= n <= hi and (what == "count" or n % 2 == 0)) or (value is None and name == "num_classes")
        if name == "channels":
            ok = n is not None and n in (8, 16)
    elif what == "fraction":
        ok = in_range(as_number(value), lo, hi, open_hi=True)
    elif what == "number":
        v = as_number(value)
        ok = in_range(v, lo, hi, open_lo=name == "fourier_scale")
        if name == "fourier_scale" and v is not None and v > hi:
            return
    else:
        ok = value in what.split(":")[1].split(",")
    event = (2,) if kind == "mlp" else (1, 8, 8)
    base = dict(hidden=16, depth=1, embed_dim=16) if kind == "mlp" else dict(channels=8, channel_mults=(1, 2))

    def run():
        net = build_network(kind, event, **{**base, name: value})
        x = torch.zeros(2, *event)
        return net(x, torch.full((2,), 0.5))

    check(f"build_network({kind}, {name})", run, name, ok, finite_like((2, *event)))


@battery(st.one_of(ANY, st.lists(COUNTS, max_size=3), st.sampled_from([(2,), (1, 8, 8), "2", (2, 2.5), ()])))
def test_build_network_event_shape(event):
    entries = [as_count(s) for s in event] if isinstance(event, (list, tuple)) else None
    ok = bool(entries) and all(e is not None and 1 <= e <= 64 for e in entries)
    if entries and all(e is not None and e >= 1 for e in entries) and not ok:
        return
    check("build_network(event_shape)", lambda: build_network("mlp", event, hidden=8, depth=1, embed_dim=8),
          "event_shape", ok)


@battery(st.sampled_from(["parameterization", "scale_by_std", "sde", "net"]), st.one_of(BOOLS, choices(["eps", "score", "x0"])), examples=2 * FAST_EXAMPLES)
def test_network_score_arguments(name, value):
    net = build_network("mlp", (2,), hidden=8, depth=1, embed_dim=8)
    kw = dict(net=net, sde=SDES["vp"], parameterization="score", scale_by_std=False)
    kw[name] = value
    if name == "parameterization":
        ok = value in ("eps", "score", "x0")
    elif name == "scale_by_std":
        ok = is_bool(value)
    elif name == "sde":
        ok = False
    else:
        ok = callable(value)

    def run():
        score = scoresde.NetworkScore(**kw)
        return score(torch.zeros(2, 2), torch.full((2,), 0.5))

    check("NetworkScore", run, name, ok, finite_like((2, 2)))


# ---------------------------------------------------------------------------- likelihood
LIK_PARAMS = [
    ("eps", "number", lambda v: in_range(as_number(v), 0, 1, True, True)),
    ("rtol", "number", lambda v: in_range(as_number(v), 0, open_lo=True)),
    ("n_probes", "count", lambda v: in_range(as_count(v), 1, 10**4)),
    ("chunk_size", "count", lambda v: v is None or in_range(as_count(v), 1)),
    ("steps", "count", lambda v: v is None or in_range(as_count(v), 1, 10**6)),
    ("trace", "choice:exact,hutchinson", lambda v: v in ("exact", "hutchinson")),
    ("probe", "choice:rademacher,gaussian", lambda v: v in ("rademacher", "gaussian")),
    ("time_variable", "choice:t,log_sigma", lambda v: v in ("t", "log_sigma")),
    ("step_control", "choice:shared,per_sample", lambda v: v in ("shared", "per_sample", None)),
    ("max_steps", "count", lambda v: v is None or in_range(as_count(v), 1, 10**9)),
]


@battery(st.data(), examples=4 * FAST_EXAMPLES)
def test_log_likelihood_options(data):
    name, kind, valid = data.draw(st.sampled_from(LIK_PARAMS))
    value = data.draw(KIND[kind] if kind in KIND else choices(kind.split(":")[1].split(",")))
    if valid(value) and kind == "count" and (as_count(value) or 0) > 6 and name in ("n_probes", "steps"):
        return  # valid but slow
    kw = dict(method="rk4", steps=3)
    if name == "n_probes":
        kw["trace"] = "hutchinson"
    if name == "probe":
        kw["trace"] = "hutchinson"
    if name in ("rtol", "max_steps", "step_control"):
        kw = dict(method="dopri5", rtol=1e-3, atol=1e-3)
    kw[name] = value
    x = torch.tensor([[0.3, -0.2], [1.0, 0.5]], dtype=torch.float64)
    sde = SDES["vp"]

    def result(res):
        assert res.log_prob.shape == (2,) and bool(torch.isfinite(res.log_prob).all())

    check(f"log_likelihood({name})", lambda: scoresde.log_likelihood(sde, exact_score(sde), x, **kw), name, valid(value),
          result, also=("steps", "method"))


X_DATA = st.one_of(ANY, st.sampled_from([
    torch.zeros(2, 2), torch.zeros(2), torch.zeros(0, 2), torch.zeros(2, 2, dtype=torch.int64), torch.zeros(2, 2, device="meta"),
    torch.full((2, 2), INF), torch.zeros(2, 2, dtype=torch.float16), np.zeros((2, 2)), [[0.0, 0.0]]]))


@battery(X_DATA)
def test_log_likelihood_data(x):
    ok = (isinstance(x, torch.Tensor) and x.ndim == 2 and x.shape[0] > 0 and x.dtype in (torch.float32, torch.float64)
          and x.device.type == "cpu" and bool(torch.isfinite(x).all()))
    sde = SDES["vp"]

    def result(res):
        assert bool(torch.isfinite(res.log_prob).all())

    check("log_likelihood(x)", lambda: scoresde.log_likelihood(sde, exact_score(sde), x, method="rk4", steps=3), "x", ok,
          result)


BPD_PARAMS = [
    ("levels", "count", lambda v: in_range(as_count(v), 4, 2**31)),
    ("repeats", "count", lambda v: in_range(as_count(v), 1, 3)),
]


@battery(st.data(), examples=2 * FAST_EXAMPLES)
def test_bits_per_dim_options(data):
    name, kind, valid = data.draw(st.sampled_from(BPD_PARAMS + [("data_range", "range", None)]))
    if kind == "range":
        value = data.draw(st.one_of(ANY, st.tuples(NUMBERS, NUMBERS), st.sampled_from([(-1, 1), (0, 1), (1, 0), [0, 1, 2]])))
        pair = list(value) if isinstance(value, (tuple, list, torch.Tensor)) and getattr(value, "ndim", 1) == 1 \
            and len(value) == 2 else None
        lo, hi = (as_number(pair[0]), as_number(pair[1])) if pair else (None, None)
        ok = lo is not None and hi is not None and lo < hi and math.isfinite(hi - lo)
        if ok and (hi - lo > 1e6 or hi - lo < 1e-6):
            return  # valid but extreme scales of the data
    else:
        value = data.draw(KIND[kind])
        ok = valid(value)
        if kind == "count" and as_count(value) is not None and as_count(value) > 3 and name == "repeats":
            return
    x_int = torch.tensor([[0, 3], [2, 1]])
    sde = SDES["vp"]

    def result(res):
        assert res.bits_per_dim.shape == (2,) and bool(torch.isfinite(res.bits_per_dim).all())

    kw = {name: value}
    if name != "levels":
        kw["levels"] = 4
    check(f"bits_per_dim({name})", lambda: scoresde.bits_per_dim(sde, exact_score(sde), x_int, method="rk4", steps=2,
                                                                  **kw), name, ok, result, also=("x_int",))


# ---------------------------------------------------------------------------- inpainting
MASKS = st.one_of(ANY, st.sampled_from([
    torch.tensor([1.0, 0.0]), torch.tensor([True, False]), torch.tensor([1, 0]), torch.tensor([2.0, 0.0]),
    torch.tensor([NAN, 1.0]), torch.ones(3), torch.ones(2, 2), torch.zeros(2, device="meta"), np.array([1, 0]), [1, 0],
    "10", [[1, 0, 1]], torch.tensor([1 + 0j, 0j])]))


def _valid_mask(mask: Any) -> bool:
    """A 0/1 (or boolean) tensor, array, number or nested list broadcastable to ``[2, 2]``."""
    if isinstance(mask, (str, bytes, dict)) or mask is None:
        return False
    if isinstance(mask, (bool, int, float, np.generic, np.ndarray, list, tuple)):
        try:
            mask = torch.as_tensor(np.asarray(mask))
        except (TypeError, ValueError, RuntimeError, OverflowError):
            return False
    if not isinstance(mask, torch.Tensor) or mask.device.type == "meta" or mask.is_complex():
        return False
    try:
        if torch.broadcast_shapes(mask.shape, (2, 2)) != (2, 2):
            return False
    except RuntimeError:
        return False
    return mask.dtype == torch.bool or bool(((mask == 0) | (mask == 1)).all())


@battery(st.sampled_from(["ancestral", "ddim", "pc", "dpmpp_2m"]), MASKS)
def test_inpaint_mask(solver, mask):
    x = torch.tensor([[0.5, 0.0], [-0.5, 0.0]])
    ok = _valid_mask(mask)
    sde = SDES["vp"]
    check("inpaint(mask)", lambda: scoresde.inpaint(sde, exact_score(sde), x, mask, solver, steps=3,
                                                     generator=torch.Generator().manual_seed(0)), "mask", ok,
          finite_like((2, 2)))


@battery(st.sampled_from(["ancestral", "ddim"]), st.sampled_from(["resample", "steps"]), COUNTS, examples=2 * FAST_EXAMPLES)
def test_inpaint_counts(solver, name, value):
    n = as_count(value)
    if n is not None and n > 3 and n <= 1000:
        return
    ok = (n is not None and 1 <= n <= 3) or (name == "steps" and value is None)
    sde = SDES["vp"]
    kw = dict(steps=3, resample=1)
    kw[name] = value
    check(f"inpaint({name})", lambda: scoresde.inpaint(sde, exact_score(sde), torch.zeros(2, 2), torch.tensor([1, 0]),
                                                        solver, generator=torch.Generator().manual_seed(0), **kw),
          name, ok, finite_like((2, 2)))


SMC_PARAMS = [
    ("num_particles", "count", lambda v: in_range(as_count(v), 1, 4)),
    ("steps", "count", lambda v: in_range(as_count(v), 1, 4)),
    ("eps", "number", lambda v: in_range(as_number(v), 1e-6, 1, open_hi=True)),
    ("ess_threshold", "number", lambda v: in_range(as_number(v), 0, 1)),
    ("proposal", "choice:twisted,model", lambda v: v in ("twisted", "model")),
    ("generator", "generator", lambda v: v is None or isinstance(v, torch.Generator)),
]


@battery(st.data(), examples=4 * FAST_EXAMPLES)
def test_smc_inpaint_options(data):
    name, kind, valid = data.draw(st.sampled_from(SMC_PARAMS))
    if kind == "generator":
        value = data.draw(GENERATORS)
    else:
        value = data.draw(KIND[kind] if kind in KIND else choices(kind.split(":")[1].split(",")))
    if kind == "count" and as_count(value) is not None and 4 < as_count(value) <= 10**6:
        return
    if name == "eps" and in_range(as_number(value), 0, 1e-6, open_lo=True):
        return  # valid, but an ancestral step to t ~ 0 in float32 is a numerical case, not a validation one
    sde = SDES["vp"]
    kw = dict(num_particles=2, steps=3)
    kw[name] = value

    def result(res):
        assert res.samples.shape == (2, 2) and bool(torch.isfinite(res.samples).all())
        assert bool(torch.isfinite(res.weights).all()) and bool(torch.isfinite(res.log_evidence).all())

    check(f"smc_inpaint({name})", lambda: scoresde.smc_inpaint(sde, exact_score(sde), torch.zeros(2, 2),
                                                                torch.tensor([1, 0]), **kw), name, valid(value), result,
          also=("particles",))


# ---------------------------------------------------------------------------- guidance
def _mixture():
    from scoresde.exact import GaussianMixture

    return GaussianMixture([0.5, 0.5], torch.tensor([[-2.0, 0.0], [2.0, 0.0]]), 0.5)


LABELS = st.one_of(ANY, st.integers(-3, 3), st.sampled_from([torch.tensor([0, 1]), torch.tensor([0, 5]), torch.tensor([0.0, 1.0]),
                                                             torch.tensor([[0, 1]]), torch.tensor([0, 1, 1]), 10**12,
                                                             torch.tensor([0, -1]), torch.zeros(2, dtype=torch.long, device="meta")]))
WEIGHTS = st.one_of(NUMBERS, st.sampled_from([torch.tensor([1.0, 2.0]), torch.tensor([1.0, NAN]), torch.tensor([1, 2]),
                                              torch.ones(2, 2), torch.tensor([1.0, 2.0, 3.0]), torch.tensor(0.5),
                                              torch.tensor([1e5, 0.0])]))


def _valid_label(y: Any, K: int = 2) -> bool:
    if isinstance(y, torch.Tensor):
        if y.device.type == "meta" or y.is_floating_point() or y.dtype == torch.bool or y.is_complex():
            return False
        if y.ndim == 0:
            return 0 <= int(y) < K
        return y.ndim == 1 and y.shape[0] == 2 and bool(((y >= 0) & (y < K)).all())
    n = as_count(y) if not isinstance(y, float) else None
    return n is not None and 0 <= n < K


def _valid_weight(w: Any, lo: float = -1e4, hi: float = 1e4) -> bool:
    if isinstance(w, torch.Tensor) and w.ndim == 1:
        return w.device.type == "cpu" and w.is_floating_point() and w.shape[0] == 2 and bool(torch.isfinite(w).all()) and bool(((w >= lo) & (w <= hi)).all())
    return in_range(as_number(w), lo, hi)


@battery(st.sampled_from(["conditional", "classifier_free", "classifier_guided"]), st.sampled_from(["y", "w"]), st.data(), examples=4 * FAST_EXAMPLES)
def test_guidance_arguments(kind, name, data):
    if kind == "conditional" and name == "w":
        name = "y"
    value = data.draw(LABELS if name == "y" else WEIGHTS)
    mix = _mixture()
    sde = SDES["vp"]
    cond = mix.conditional_score_fn(sde)
    y, w = (value, 1.0) if name == "y" else (0, value)
    valid_w = _valid_weight(w) if kind == "classifier_free" else in_range(as_number(w), -1e4, 1e4)
    ok = _valid_label(y) and (name == "y" or valid_w)
    label = name if kind != "classifier_guided" or name == "y" else "scale"

    def classifier(x, t):
        return torch.stack([-x[:, 0], x[:, 0]], 1)

    def run():
        if kind == "conditional":
            score = G.conditional(cond, y)
        elif kind == "classifier_free":
            score = G.classifier_free(cond, y, w)
        else:
            score = G.classifier_guided(mix.score_fn(sde), classifier, y, scale=w)
        return scoresde.sample(sde, score, SHAPE, "ddim", steps=3, generator=torch.Generator().manual_seed(0))

    check(f"guidance.{kind}({label})", run, label, ok, finite_like(SHAPE))


# ---------------------------------------------------------------------------- metrics
def _quality_classifier() -> QualityClassifier:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = LeNet(1, 11, feature_dim=4).eval().requires_grad_(False)
    return QualityClassifier(net, "mnist", [1, 8, 8], [-1.0, 1.0], 0.9, reject_class=10)


QUALITY = _quality_classifier()
REF = FeatureStatistics(torch.zeros(4, dtype=torch.float64), torch.eye(4, dtype=torch.float64), 100)
IMAGES = st.one_of(ANY, st.sampled_from([
    torch.zeros(3, 1, 8, 8), torch.full((3, 1, 8, 8), NAN), torch.zeros(3, 1, 8, 8, dtype=torch.uint8),
    torch.zeros(1, 1, 8, 8), torch.zeros(3, 8, 8), torch.zeros(3, 1, 4, 4), torch.zeros(3, 1, 8, 8, device="meta"),
    torch.full((3, 1, 8, 8), INF), torch.zeros(3, 1, 8, 8, dtype=torch.float64), np.zeros((3, 1, 8, 8))]))


@battery(st.sampled_from(["samples", "threshold"]), st.data(), examples=2 * FAST_EXAMPLES)
def test_sample_quality_arguments(name, data):
    value = data.draw(IMAGES if name == "samples" else NUMBERS)
    if name == "samples":
        x = value
        ok = (isinstance(x, torch.Tensor) and x.device.type == "cpu" and x.is_floating_point() and x.ndim == 4
              and x.shape[0] >= 2
              and tuple(x.shape[1:]) == (1, 8, 8) and bool(torch.isfinite(x).all()))
        call = lambda: sample_quality(QUALITY, value, REF)  # noqa: E731
    else:
        ok = in_range(as_number(value), 0, 1, True, True)
        call = lambda: sample_quality(QUALITY, torch.zeros(3, 1, 8, 8), REF, threshold=value)  # noqa: E731

    def result(q):
        assert math.isfinite(q.fld) and 0 <= q.confident_fraction <= 1 and 0 <= q.min_class_fraction <= 1

    check(f"sample_quality({name})", call, name, ok, result)


COVS = st.one_of(ANY, st.sampled_from([
    torch.eye(3), torch.zeros(3, 3), torch.diag(torch.tensor([1.0, -1.0, 1.0])), torch.eye(2), torch.full((3, 3), NAN),
    torch.ones(3, 3), torch.triu(torch.ones(3, 3)), torch.eye(3, device="meta"), torch.eye(3, dtype=torch.complex64),
    np.eye(3)]), st.lists(st.floats(-3, 3), min_size=9, max_size=9).map(lambda v: torch.tensor(v).reshape(3, 3)))


MEANS = st.one_of(ANY, st.sampled_from([torch.zeros(3), torch.zeros(2), torch.full((3,), NAN), torch.zeros(1, 3),
                                         torch.zeros(3, device="meta"), torch.zeros(3, dtype=torch.int64), np.zeros(3)]))


@battery(MEANS)
def test_frechet_distance_mean(mu):
    ok = isinstance(mu, torch.Tensor) and mu.numel() == 3 and mu.device.type == "cpu" and bool(torch.isfinite(mu).all()) \
        and not mu.is_complex() and mu.dtype != torch.bool

    def result(d):
        assert isinstance(d, float) and math.isfinite(d) and d >= -1e-9

    check("frechet_distance(mu1)", lambda: frechet_distance(mu, torch.eye(3), torch.zeros(3), torch.eye(3)), "mu1", ok,
          result)


@battery(COVS)
def test_frechet_distance_covariance(sigma):
    ok = isinstance(sigma, torch.Tensor) and sigma.shape == (3, 3) and sigma.device.type == "cpu" and not sigma.is_complex() \
        and bool(torch.isfinite(sigma).all())
    if ok:
        s = sigma.double()
        sym = bool(torch.allclose(s, s.T, atol=1e-6 * max(float(s.abs().max()), 1e-300)))
        ok = sym and float(torch.linalg.eigvalsh(0.5 * (s + s.T)).min()) >= -1e-6 * max(float(s.abs().max()), 1e-300)
        if sym and not ok and float(torch.linalg.eigvalsh(s).min()) > -1e-4:
            return  # within the round-off band of the two checks
    m = torch.zeros(3)

    def result(d):
        assert isinstance(d, float) and math.isfinite(d) and d >= -1e-9

    check("frechet_distance(sigma1)", lambda: frechet_distance(m, sigma, m, torch.eye(3)), "sigma1", ok, result)


# ---------------------------------------------------------------------------- seeds and training configuration
@battery(SEEDS)
def test_as_seeds(seeds):
    ok = _valid_seeds(seeds) or (isinstance(seeds, (list, tuple, range)) and 1 <= len(seeds) <= 10**8 and all(
        type(v) is int and -(2**63) <= v < 2**63 for v in seeds)) or (
        isinstance(seeds, torch.Tensor) and seeds.ndim == 1 and seeds.shape[0] >= 1 and not seeds.is_floating_point()
        and seeds.dtype != torch.bool and seeds.device.type == "cpu")

    def result(s):
        assert isinstance(s, torch.Tensor) and s.dtype == torch.int64 and s.ndim == 1

    check("as_seeds", lambda: as_seeds(seeds), "seeds", ok, result)


SEED_TEXT = st.one_of(st.text(max_size=12), st.sampled_from(["0-9", "3", "5:10", "0-999999999999", f"{2**63}", "-1",
                                                             "1-0", "a-b", "0:0", " 4 ", "1e3", "0--5", f"0-{10**8 - 1}"]),
                      st.builds(lambda a, b: f"{a}-{b}", st.integers(-5, 2**64), st.integers(-5, 2**64)))


def _seed_range_ok(spec: str) -> bool:
    """Whether ``spec`` is ``A-B``, ``A:B`` or ``N`` (integers as Python reads them) of 1 to 10**8 seeds in [0, 2**63 - 1]."""
    integer = r"\s*[+-]?\d+(?:_\d+)*\s*"
    match = re.fullmatch(rf"(?P<a>{integer})(?P<sep>[:-])(?P<b>{integer})|(?P<n>{integer})", spec.strip())
    if match is None:
        return False
    if match["n"] is not None:
        lo = int(match["n"])
        hi = lo + 1
    else:
        lo, hi = int(match["a"]), int(match["b"]) + (match["sep"] == "-")
    return 0 <= lo < hi and hi - 1 <= 2**63 - 1 and hi - lo <= 10**8


@battery(SEED_TEXT)
def test_parse_seed_range(spec):
    ok = _seed_range_ok(spec)

    def result(r):
        assert isinstance(r, range) and len(r) >= 1 and r.start >= 0 and r.stop - 1 <= 2**63 - 1

    check("parse_seed_range", lambda: parse_seed_range(spec), "seed", ok, result, also=("seeds",))


CONFIG_FIELDS = [
    ("steps", "count", lambda v: v is None or in_range(as_count(v), 1)),
    ("batch_size", "count", lambda v: v is None or in_range(as_count(v), 1)),
    ("lr", "number", lambda v: v is None or in_range(as_number(v), 0, torch.finfo(torch.float32).max, open_lo=True)),
    ("ema_decay", "number", lambda v: v is None or in_range(as_number(v), 0, 1, open_hi=True)),
    ("p_uncond", "number", lambda v: in_range(as_number(v), 0, 1)),
    ("loss_eps", "number", lambda v: in_range(as_number(v), 0, 1, True, True)),
    ("conditional", "bool", is_bool),
    ("compile", "bool", is_bool),
    ("seed", "count", lambda v: in_range(as_count(v), 0, 2**63 - 1)),
    ("sde", "choice:vp,subvp,ve", lambda v: v in ("vp", "subvp", "ve")),
    ("weighting", "choice:std2,likelihood,min_snr", lambda v: v in (None, "std2", "likelihood", "min_snr")),
]


@battery(st.data(), examples=4 * FAST_EXAMPLES)
def test_train_config_fields(data):
    name, kind, valid = data.draw(st.sampled_from(CONFIG_FIELDS))
    value = data.draw(KIND[kind] if kind in KIND else choices(kind.split(":")[1].split(",")))
    check(f"TrainConfig({name})", lambda: TrainConfig(data="moons", **{name: value}).validate(), name, valid(value))


# ---------------------------------------------------------------------------- the command line (parsing only)
def _subcommands():
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    out = []
    for command, sp in sub.choices.items():
        required = []
        for a in sp._actions:
            if a.required and a.option_strings:
                required += [a.option_strings[0], "x.npy"]
            elif not a.option_strings and a.nargs not in ("?", "*"):  # a positional argument
                required.insert(0, "x.npy")
        for a in sp._actions:
            if a.option_strings and not isinstance(a, (argparse._HelpAction, argparse._StoreTrueAction)):
                out.append((command, a.option_strings[0], a.dest, required))
    return out


OPTIONS = _subcommands()
PARSER = build_parser()
CLI_TEXT = st.one_of(
    st.sampled_from(["nan", "inf", "-inf", "1e400", "-1", "0", "1", "2", "2.5", "abc", "", "true", "false", "1e300",
                     "99999999999999999999", f"{2**63}", "-0", "0x10", "1_000", " 3", "3 ", "all", "vp", "ddim", "x=1",
                     "hidden=2.5", "variable_step=false", "--help", "0.5", "1e-300", "auto", "cpu"]),
    st.text(max_size=8), st.integers(-10, 10**6).map(str), st.floats(allow_nan=True, allow_infinity=True).map(repr))


def _type_of(parser: argparse.ArgumentParser, command: str, dest: str) -> Any:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return next(a for a in sub.choices[command]._actions if a.dest == dest)


def _parsed_value_ok(action: argparse.Action, text: str, value: Any) -> None:
    """A parsed value keeps the option's type: finite numbers in range, exact choices, the text itself when untyped."""
    kind = getattr(action.type, "__name__", None) if action.type is not None else None
    if isinstance(action, argparse._AppendAction):
        value = value[-1]
    if kind is None:
        assert value == text, (action.dest, text, value)
    elif kind.startswith("int>="):
        assert type(value) is int and value >= int(kind[5:]), (action.dest, text, value)
    elif kind in ("seed",):
        assert type(value) is int and 0 <= value <= 2**63 - 1
    elif kind == "thread_count":
        assert value == "auto" or (type(value) is int and value >= 1)
    elif kind == "class_or_all":
        assert value == "all" or (type(value) is int and value >= 0)
    elif kind == "key_value":
        assert isinstance(value, tuple) and value[0].isidentifier()
    elif isinstance(value, float):
        assert math.isfinite(value), (action.dest, text, value)
    elif isinstance(value, str):
        assert value == text or value.strip() == text.strip(), (action.dest, text, value)


@battery(st.sampled_from(OPTIONS), CLI_TEXT, examples=8 * FAST_EXAMPLES)
def test_cli_option_values(option, text):
    command, flag, dest, required = option
    CASES["cli parse"] += 1
    parser = PARSER
    action = _type_of(parser, command, dest)
    argv = [command, *required, flag, text] if not text.startswith("-") else [command, *required, f"{flag}={text}"]
    import contextlib
    import io

    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            args = parser.parse_args(argv)
    except SystemExit as e:
        lines = [line for line in err.getvalue().splitlines() if line.strip()]
        if e.code == 0:
            return  # --help given as a value of a flag that takes none
        assert e.code in (1, 2), (argv, e.code)
        assert len(lines) == 1, (argv, lines)
        opt_words = [o.lstrip("-") for o in action.option_strings]
        assert any(o in lines[0] for o in opt_words) or "unrecognized" in lines[0] or "expected one argument" in lines[0], \
            (argv, lines)
        return
    except Exception as e:  # noqa: BLE001  (a raw error from a type function: the finding)
        raise AssertionError(f"{argv}: raw {type(e).__name__}: {e}") from e
    _parsed_value_ok(action, text, getattr(args, dest))


# ---------------------------------------------------------------------------- the slow variants
for _name, _test in list(globals().items()):
    if _name.startswith("test_") and hasattr(_test, "slow_variant"):
        globals()[_name + "_slow"] = _test.slow_variant
