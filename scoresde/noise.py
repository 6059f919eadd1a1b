"""Randomness, in one place: the :class:`Noise` sources every sampler and likelihood draws from.

Every random number scoresde draws comes from an explicit source, never from hidden global seeding:

* :class:`GeneratorNoise` wraps one ``torch.Generator`` (or torch's global RNG for ``None``): draws come
  in call order from that one stream, on the generator's device (so a CPU generator gives the same bits
  whatever the target device) and are then moved to the data's device.
* :class:`SeededNoise` gives sample ``i`` of a batch its own integer seed. Each number it produces is a
  counter-based hash (the splitmix64 finaliser, in torch ``int64`` ops) of

      (seed_i, stream, draw counter, element index within sample i),

  turned into a uniform, a sign or a standard normal (Box–Muller). Nothing depends on the batch size,
  on the other samples, on their order or on how a job is split across processes: sample ``i`` gets
  the same numbers alone or in a batch of 64, first or last. Named *streams* keep the kinds of draws
  apart (the prior, solver noise, Hutchinson probes, dequantization noise, Brownian motion).

Both implement the :class:`Noise` interface (``randn``, ``randn_like``, ``uniform``, ``rademacher``,
``probes``, ``prior``, ``repeat``, ``batch_invariant``); :func:`make_noise` builds one from a public
entry's ``generator=`` / ``seeds=`` arguments with one rule and one error. Lower-level functions
(:func:`randn`, :func:`rand`, ...) draw from a generator for code that has no batch to seed (network
initialisation, training noise, data sets).

The integer hash is exact on every device, so CPU and CUDA draw the same bits; the float transforms
(``log``, ``cos``) may differ between devices in the last unit of precision.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Optional, Sequence, Union

import torch
from torch import Tensor

from ._validation import check_generator, integer
from .errors import OptionError, ShapeError

__all__ = [
    "Noise", "GeneratorNoise", "SeededNoise", "make_noise", "SeedsLike", "STREAMS",
    "as_seeds", "derive_seeds", "parse_seed_range",
    "randn", "randn_like", "rand", "rademacher", "randint", "seed_from_generator",
]

SeedsLike = Union[Tensor, Sequence[int], range]
DeviceLike = Optional[Union[str, torch.device]]

#: Named streams of :class:`SeededNoise`: each kind of draw has its own, so adding a draw of one kind never shifts another.
STREAMS = {"prior": 1, "solver": 2, "probe": 3, "dequantize": 4, "brownian": 5, "derive": 6}


# --------------------------------------------------------------------------- draws from a generator
def _gen_device(generator: Optional[torch.Generator], device: DeviceLike) -> torch.device:
    """Where a draw from ``generator`` is made: the generator's own device (CPU for the global RNG)."""
    return torch.device(generator.device) if generator is not None else torch.device("cpu")


def _check_dtype(dtype: Optional[torch.dtype]) -> None:
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise OptionError(f"dtype must be a floating-point torch.dtype such as torch.float32, got {dtype!r}")


def randn(shape: Sequence[int], generator: Optional[torch.Generator] = None, device: DeviceLike = None,
          dtype: Optional[torch.dtype] = None) -> Tensor:
    """Standard normal noise of ``shape`` drawn from ``generator`` on its own device, then moved to ``device``."""
    check_generator(generator)
    _check_dtype(dtype)
    here = _gen_device(generator, device)
    if here.type == torch.device(device or "cpu").type:
        return torch.randn(tuple(shape), generator=generator, device=device, dtype=dtype)
    return torch.randn(tuple(shape), generator=generator, device=here, dtype=dtype).to(device)


def randn_like(x: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
    """Standard normal noise shaped like ``x`` (its device and dtype) drawn from ``generator``."""
    return randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def rand(shape: Sequence[int], generator: Optional[torch.Generator] = None, device: DeviceLike = None,
         dtype: Optional[torch.dtype] = None, stratified: bool = False) -> Tensor:
    """``U[0, 1)`` entries of ``shape`` drawn on the generator's device, then moved to ``device``.

    ``stratified`` (1-D shapes ``[n]`` only): ``u_i = (i + v_i) / n`` with ``v_i ~ U[0, 1)``, one draw in
    each of the ``n`` strata ``[i/n, (i+1)/n)``. Each ``u_i`` alone is not uniform, but an index drawn at
    random is, so the batch mean of any ``h(u_i)`` keeps its expectation ``E h(U)`` while its variance
    drops (to ``O(1/n^3)`` for smooth ``h``).
    """
    check_generator(generator)
    _check_dtype(dtype)
    here = _gen_device(generator, device)
    dtype = dtype or torch.get_default_dtype()
    u = torch.rand(tuple(shape), generator=generator, device=here, dtype=dtype)
    if stratified:
        if len(shape) != 1:
            raise ShapeError(f"stratified draws are one per stratum along a single axis, got shape {tuple(shape)}")
        n = int(shape[0])
        u = ((torch.arange(n, device=here, dtype=dtype) + u) / n).clamp(max=1.0 - torch.finfo(dtype).eps)
    return u.to(device) if device is not None else u


def rademacher(shape: Sequence[int], generator: Optional[torch.Generator] = None, device: DeviceLike = None,
               dtype: Optional[torch.dtype] = None) -> Tensor:
    """Independent ``+-1`` entries with probability 1/2 each, drawn on the generator's device."""
    check_generator(generator)
    _check_dtype(dtype)
    bits = torch.randint(0, 2, tuple(shape), generator=generator, device=_gen_device(generator, device))
    return (2 * bits - 1).to(device=device, dtype=dtype or torch.get_default_dtype())


def randint(high: int, shape: Sequence[int], generator: Optional[torch.Generator] = None,
            device: DeviceLike = None) -> Tensor:
    """Integers uniform in ``[0, high)`` (``int64``) of ``shape``, drawn on the generator's device."""
    check_generator(generator)
    return torch.randint(0, int(high), tuple(shape), generator=generator, device=_gen_device(generator, device)).to(device)


def seed_from_generator(generator: Optional[torch.Generator]) -> int:
    """Draw a 62-bit integer seed from ``generator`` (or the global RNG when ``None``)."""
    check_generator(generator)
    return int(torch.randint(0, 2**62, (1,), generator=generator, device=_gen_device(generator, None)).item())


# --------------------------------------------------------------------------- the counter-based hash
_MASK64 = (1 << 64) - 1


def _signed(c: int) -> int:
    """A 64-bit constant as the signed integer torch stores."""
    c &= _MASK64
    return c - (1 << 64) if c >= 1 << 63 else c


_M1 = _signed(0xBF58476D1CE4E5B9)
_M2 = _signed(0x94D049BB133111EB)
_GOLDEN = _signed(0x9E3779B97F4A7C15)


def _srl(z: Tensor, k: int) -> Tensor:
    """Logical right shift of ``int64`` values (torch's ``>>`` is arithmetic)."""
    return (z >> k) & ((1 << (64 - k)) - 1)


def _mix(z: Tensor) -> Tensor:
    """The splitmix64 finaliser on ``int64`` tensors (multiplication wraps modulo 2^64)."""
    z = (z ^ _srl(z, 30)) * _M1
    z = (z ^ _srl(z, 27)) * _M2
    return z ^ _srl(z, 31)


def _key(seeds: Tensor, stream: int, counter: int) -> Tensor:
    """One 64-bit key per sample for draw ``counter`` of ``stream``: ``[B] -> [B]``."""
    z = _mix(seeds * _GOLDEN + _signed(stream * 0xD1B54A32D192ED03))
    return _mix(z + _signed((counter + 1) * 0x8CB92BA72F3D8DD7))


_UNSIGNED_WIDE = tuple(getattr(torch, n) for n in ("uint32", "uint64") if hasattr(torch, n))


def as_seeds(seeds: Any, batch: Optional[int] = None, name: str = "seeds") -> Tensor:
    """Validate per-sample seeds and return them as an ``int64`` CPU tensor ``[B]``.

    Args:
        seeds: a 1-D integer tensor, a list or tuple of ints, or a ``range``.
        batch: the batch size the seeds must match (``None``: any length >= 1).

    Raises:
        OptionError: not integers, or outside the signed 64-bit range.
        ShapeError: not one seed per sample.
    """
    if isinstance(seeds, Tensor):
        if seeds.dtype.is_floating_point or seeds.dtype.is_complex or seeds.dtype == torch.bool or seeds.device.type == "meta":
            raise OptionError(f"{name} must hold integers (an int64 tensor or a list of ints), got a {seeds.dtype} tensor "
                              f"on {seeds.device}")
        if seeds.dtype in _UNSIGNED_WIDE and seeds.numel() and int(seeds.max()) >= 1 << 63:
            raise OptionError(f"{name} must fit in a signed 64-bit integer")
        s = seeds.detach().to("cpu", torch.int64)
    elif isinstance(seeds, (list, tuple, range)):
        if len(seeds) > MAX_SEED_RANGE:
            raise OptionError(f"{name} holds {len(seeds):,} seeds, more than {MAX_SEED_RANGE:,} in one call; split the job")
        if isinstance(seeds, range) and len(seeds):
            if not (-(1 << 63) <= min(seeds[0], seeds[-1]) and max(seeds[0], seeds[-1]) < 1 << 63):
                raise OptionError(f"{name} must fit in a signed 64-bit integer")
            seeds = torch.arange(seeds.start, seeds.stop, seeds.step, dtype=torch.int64)
            return as_seeds(seeds, batch, name)
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in seeds):
            raise OptionError(f"{name} must be a list of ints (one per sample), got {list(seeds)[:5]!r}...")
        if any(not (-(1 << 63) <= v < 1 << 63) for v in seeds):
            raise OptionError(f"{name} must fit in a signed 64-bit integer")
        s = torch.tensor(list(seeds), dtype=torch.int64)
    else:
        raise OptionError(f"{name} must be a [B] integer tensor, a list of ints or a range, got {type(seeds).__name__}")
    if s.ndim != 1 or s.shape[0] == 0:
        raise ShapeError(f"{name} must be 1-D with one seed per sample, got shape {tuple(s.shape)}")
    if batch is not None and s.shape[0] != batch:
        raise ShapeError(f"{name} has {s.shape[0]} entries but the batch has {batch} samples; give one seed per sample")
    return s


def derive_seeds(seeds: Tensor, index: int) -> Tensor:
    """Independent seeds for the ``index``-th repetition of a per-sample computation, ``[B] -> [B]``."""
    return _key(seeds, STREAMS["derive"], int(index))


#: The largest seed range :func:`parse_seed_range` accepts in one job (the seeds are materialised).
MAX_SEED_RANGE = 10**8


def parse_seed_range(spec: str, max_len: int = MAX_SEED_RANGE) -> range:
    """Parse ``"A-B"`` (inclusive), ``"A:B"`` (exclusive end) or ``"N"`` (one seed) into a ``range``.

    Seeds must lie in ``[0, 2**63 - 1]`` and a range may hold at most ``max_len`` seeds (one job's
    samples are held in memory); both are checked before anything is allocated.
    """
    if not isinstance(spec, (str, int)) or isinstance(spec, bool):
        raise OptionError(f"seeds must be text like A-B (inclusive), A:B (end excluded) or N, got {type(spec).__name__}")
    max_len = integer(max_len, "max_len", minimum=1)
    text = str(spec).strip()
    try:
        if ":" in text:
            a, b = text.split(":", 1)
            lo, hi = int(a), int(b)
        elif "-" in text[1:]:
            i = text.index("-", 1)
            lo, hi = int(text[:i]), int(text[i + 1:]) + 1
        else:
            lo = int(text)
            hi = lo + 1
    except ValueError:
        raise OptionError(f"seeds must look like A-B (inclusive), A:B (end excluded) or N, got {spec!r}") from None
    if lo < 0 or hi - 1 > 2**63 - 1:
        raise OptionError(f"seeds must lie in [0, 2**63 - 1], got the range {spec!r}")
    if hi <= lo:
        raise OptionError(f"the seed range {spec!r} is empty")
    if hi - lo > max_len:
        raise OptionError(f"the seed range {spec!r} holds {hi - lo:,} seeds, more than {max_len:,} in one job; split it "
                          "into several ranges")
    return range(lo, hi)


# --------------------------------------------------------------------------- noise sources
class Noise:
    """The interface of a noise source; solvers and the likelihood draw through it only.

    Shapes are ``[B, *event]`` (batch first). ``stream`` names the kind of draw (a key of
    :data:`STREAMS`) and ``counter`` numbers the draws of a stream; a generator-backed source has one
    stream and ignores both, a seeded source uses them to make sample ``i``'s draw a function of
    ``(seeds[i], stream, counter)`` only.
    """

    #: Whether result ``i`` depends on sample ``i``'s own seed only (solvers may rely on it).
    batch_invariant: ClassVar[bool] = False

    def randn(self, shape: Sequence[int], device: DeviceLike = None, dtype: Optional[torch.dtype] = None,
              stream: str = "solver", counter: Optional[int] = None) -> Tensor:
        """Standard normal entries of ``shape``."""
        raise NotImplementedError

    def uniform(self, shape: Sequence[int], device: DeviceLike = None, dtype: Optional[torch.dtype] = None,
                stream: str = "solver", counter: Optional[int] = None) -> Tensor:
        """``U[0, 1)`` entries of ``shape``."""
        raise NotImplementedError

    def rademacher(self, shape: Sequence[int], device: DeviceLike = None, dtype: Optional[torch.dtype] = None,
                   stream: str = "probe", counter: Optional[int] = None) -> Tensor:
        """``+-1`` entries with probability 1/2 each, of ``shape``."""
        raise NotImplementedError

    def probes(self, n: int, like: Tensor, kind: str = "rademacher") -> Tensor:
        """``n`` Hutchinson probes per sample, ``[n, B, *event]`` (``kind``: ``"rademacher"`` or ``"gaussian"``).

        Probe ``k`` of sample ``i`` is draw ``k`` of the probe stream.
        """
        raise NotImplementedError

    def randn_like(self, x: Tensor) -> Tensor:
        """Standard normal noise shaped like ``x``: the next draw of the solver stream."""
        return self.randn(x.shape, x.device, x.dtype, stream="solver")

    def prior(self, sde: Any, shape: Sequence[int], device: DeviceLike = None, dtype: Optional[torch.dtype] = None) -> Tensor:
        """A draw ``[B, *event]`` from the SDE's prior."""
        raise NotImplementedError

    def repeat(self, index: int) -> "Noise":
        """The source of the ``index``-th repetition of a per-sample computation (fresh, independent draws)."""
        raise NotImplementedError


class GeneratorNoise(Noise):
    """Every draw of a computation from one ``torch.Generator`` (``None``: torch's global RNG), in call order.

    Draws are made on the generator's device and moved to the requested one.
    """

    batch_invariant: ClassVar[bool] = False

    def __init__(self, generator: Optional[torch.Generator] = None):
        check_generator(generator)
        self.generator = generator

    def randn(self, shape, device=None, dtype=None, stream="solver", counter=None) -> Tensor:
        return randn(shape, self.generator, device, dtype)

    def uniform(self, shape, device=None, dtype=None, stream="solver", counter=None) -> Tensor:
        return rand(shape, self.generator, device, dtype)

    def rademacher(self, shape, device=None, dtype=None, stream="probe", counter=None) -> Tensor:
        return rademacher(shape, self.generator, device, dtype)

    def probes(self, n: int, like: Tensor, kind: str = "rademacher") -> Tensor:
        shape = (n, *like.shape)
        draw = rademacher if kind == "rademacher" else randn
        return draw(shape, self.generator, like.device, like.dtype)

    def prior(self, sde: Any, shape: Sequence[int], device: DeviceLike = None, dtype: Optional[torch.dtype] = None) -> Tensor:
        return sde.prior_sample(shape, generator=self.generator, device=device, dtype=dtype)

    def repeat(self, index: int) -> "GeneratorNoise":
        return self  # one stream: the next repetition continues it

    def seed(self) -> int:
        """An integer seed for a library that takes one (torchsde's Brownian motion)."""
        return seed_from_generator(self.generator)

    def __repr__(self) -> str:
        return f"GeneratorNoise({self.generator!r})"


class SeededNoise(Noise):
    """A noise source with one seed per sample: draws are batch-invariant.

    Draws of one stream are numbered by a counter kept on the object, so build one per computation
    (the driver does).

    Args:
        seeds: one integer per sample, ``[B]`` (tensor, list or range).

    Example:
        >>> import torch
        >>> a = SeededNoise([7, 8]).randn_like(torch.zeros(2, 3))
        >>> b = SeededNoise([8]).randn_like(torch.zeros(1, 3))
        >>> torch.equal(a[1], b[0])  # sample 1 of the pair equals the sample drawn alone
        True
    """

    batch_invariant: ClassVar[bool] = True

    def __init__(self, seeds: SeedsLike):
        self.seeds = as_seeds(seeds)
        self._counters: dict = {}
        self._on: dict = {}

    def __len__(self) -> int:
        return self.seeds.shape[0]

    def __repr__(self) -> str:
        return f"SeededNoise({len(self)} seeds)"

    def _seeds_on(self, device: torch.device) -> Tensor:
        key = str(device)
        if key not in self._on:
            self._on[key] = self.seeds.to(device)
        return self._on[key]

    def _next(self, stream: str) -> int:
        c = self._counters.get(stream, 0)
        self._counters[stream] = c + 1
        return c

    def bits(self, shape: Sequence[int], stream: str = "solver", counter: Optional[int] = None,
             device: DeviceLike = None) -> Tensor:
        """Uniform 64-bit integers ``[B, *event]`` (``int64``); draw ``counter`` of ``stream`` (default: the next)."""
        shape = tuple(int(s) for s in shape)
        if not shape or shape[0] != len(self):
            raise ShapeError(f"a draw for {len(self)} seeds must have shape [{len(self)}, *event], got {shape}")
        if stream not in STREAMS:
            raise OptionError(f"unknown noise stream {stream!r}; valid streams: {', '.join(STREAMS)}")
        device = torch.device(device or "cpu")
        if counter is None:
            counter = self._next(stream)
        keys = _key(self._seeds_on(device), STREAMS[stream], counter)  # [B]
        n = math.prod(shape[1:])
        idx = torch.arange(1, n + 1, device=device, dtype=torch.int64) * _GOLDEN  # element counter
        return _mix(keys[:, None] + idx[None, :]).reshape(shape)

    def uniform(self, shape, device=None, dtype=None, stream="solver", counter=None) -> Tensor:
        """``U[0, 1)`` entries ``[B, *event]`` (53 random bits in float64, 24 in float32)."""
        dtype = dtype or torch.get_default_dtype()
        b = self.bits(shape, stream, counter, device)
        if dtype == torch.float64:
            return _srl(b, 11).to(torch.float64) * 2.0**-53
        return (_srl(b, 40).to(torch.float32) * 2.0**-24).to(dtype)

    def rademacher(self, shape, device=None, dtype=None, stream="probe", counter=None) -> Tensor:
        """Entries ``+-1`` with probability 1/2 each, ``[B, *event]`` (the sign bit of the hash)."""
        b = self.bits(shape, stream, counter, device)
        return torch.where(b < 0, -1.0, 1.0).to(dtype or torch.get_default_dtype())

    def randn(self, shape, device=None, dtype=None, stream="solver", counter=None) -> Tensor:
        """Standard normal entries ``[B, *event]`` by Box–Muller on the two 32-bit halves of each hash.

        The transform runs in float64 for float64 results and in float32 otherwise.
        """
        dtype = dtype or torch.get_default_dtype()
        work = torch.float64 if dtype == torch.float64 else torch.float32
        b = self.bits(shape, stream, counter, device)
        hi = _srl(b, 32).to(work)  # [0, 2^32)
        lo = (b & 0xFFFFFFFF).to(work)
        u1 = (hi + 0.5) * 2.0**-32  # in (0, 1): the log is finite
        u2 = lo * 2.0**-32
        z = torch.sqrt(-2.0 * torch.log(u1)) * torch.cos((2.0 * math.pi) * u2)
        return z.to(dtype)

    def probes(self, n: int, like: Tensor, kind: str = "rademacher") -> Tensor:
        draw = self.rademacher if kind == "rademacher" else self.randn
        return torch.stack([draw(like.shape, like.device, like.dtype, stream="probe", counter=k) for k in range(n)])

    def prior(self, sde: Any, shape: Sequence[int], device: DeviceLike = None, dtype: Optional[torch.dtype] = None) -> Tensor:
        """A prior draw ``[B, *event]``: the SDE's :meth:`~scoresde.SDE.prior_from_normal` of this source's prior noise.

        Raises:
            IncompatibleSDEError: (from the SDE) it overrides ``prior_sample`` (a prior of its own) without
                saying, through ``prior_from_normal``, how standard normal noise maps to a draw from it.
        """
        return sde.prior_from_normal(self.randn(shape, device, dtype, stream="prior", counter=0))

    def repeat(self, index: int) -> "SeededNoise":
        return SeededNoise(derive_seeds(self.seeds, integer(index, "index", minimum=0)))

    def seed(self) -> int:
        """Refused: a per-sample noise source has no single seed (use :meth:`sample_seeds`)."""
        raise OptionError("per-sample seeds have no single integer seed; use sample_seeds() for one seed per sample")

    def sample_seeds(self, stream: str = "brownian") -> Tensor:
        """One non-negative 62-bit integer per sample for a library that takes a seed, ``[B]`` (CPU)."""
        return _srl(_key(self.seeds, STREAMS[stream], 0), 2)

    def select(self, index: Tensor) -> "SeededNoise":
        """The noise source of a subset of the samples (same seeds, fresh counters), ``index`` ``[b]``."""
        return SeededNoise(self.seeds[index.cpu()])


def make_noise(generator: Optional[torch.Generator] = None, seeds: Optional[SeedsLike] = None,
               batch: Optional[int] = None) -> Noise:
    """The noise source of a public entry given its ``generator=`` and ``seeds=`` arguments.

    Args:
        generator: one stream for the whole batch (``None``: torch's global RNG).
        seeds: one integer per sample, ``[B]``, instead: sample ``i``'s draws depend on ``seeds[i]`` only.
        batch: the batch size the seeds must match.

    Raises:
        OptionError: both given, a ``generator`` that is not a ``torch.Generator``, or seeds that are not integers.
        ShapeError: not one seed per sample.
    """
    if seeds is not None and generator is not None:
        raise OptionError("give either generator= (one stream for the batch) or seeds= (one per sample), not both")
    if seeds is not None:
        return SeededNoise(as_seeds(seeds, batch))
    return GeneratorNoise(generator)
