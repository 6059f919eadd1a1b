"""Per-sample seeds: noise that is a function of (seed, stream, draw counter, element) only.

A :class:`SeededNoise` gives sample ``i`` of a batch its own integer seed. Every random number it
produces is a counter-based hash (the splitmix64 finaliser, written in torch ``int64`` ops) of

    (seed_i, stream, draw counter, element index within sample i),

turned into a uniform, a sign or a standard normal (Box–Muller). Nothing depends on the batch
size, on the other samples, on their order or on how a job is split across processes or devices:
the ``k``-th draw a solver makes gives sample ``i`` the same numbers whether ``i`` is drawn alone or
in a batch of 64, first or last. Streams keep the kinds of draws apart (the prior, solver noise,
Hutchinson probes, dequantization noise, torchsde's Brownian motion).

The integer hash is exact on every device, so CPU and CUDA draw the same bits; the float
transform (``log``, ``cos``) may differ between devices in the last unit of precision.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence, Union

import torch
from torch import Tensor

from .errors import OptionError, ShapeError

__all__ = ["SeededNoise", "SeedsLike", "as_seeds", "derive_seeds", "parse_seed_range"]

SeedsLike = Union[Tensor, Sequence[int], range]

_MASK64 = (1 << 64) - 1


def _signed(c: int) -> int:
    """A 64-bit constant as the signed integer torch stores."""
    c &= _MASK64
    return c - (1 << 64) if c >= 1 << 63 else c


_M1 = _signed(0xBF58476D1CE4E5B9)
_M2 = _signed(0x94D049BB133111EB)
_GOLDEN = _signed(0x9E3779B97F4A7C15)

#: Named streams: each kind of draw has its own, so that adding a draw of one kind never shifts another.
STREAMS = {"prior": 1, "solver": 2, "probe": 3, "dequantize": 4, "brownian": 5, "derive": 6}


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


def as_seeds(seeds: Any, batch: Optional[int] = None, name: str = "seeds") -> Tensor:
    """Validate per-sample seeds and return them as an ``int64`` CPU tensor ``[B]``.

    Args:
        seeds: a 1-D integer tensor, a list or tuple of ints, or a ``range``.
        batch: the batch size the seeds must match (``None``: any length >= 1).

    Raises:
        TypeError: not integers.
        ShapeError: not one seed per sample.
    """
    if isinstance(seeds, Tensor):
        if seeds.dtype.is_floating_point or seeds.dtype.is_complex or seeds.dtype == torch.bool:
            raise OptionError(f"{name} must hold integers (an int64 tensor or a list of ints), got dtype {seeds.dtype}")
        s = seeds.detach().to("cpu", torch.int64)
    elif isinstance(seeds, (list, tuple, range)):
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


def parse_seed_range(spec: str) -> range:
    """Parse ``"A-B"`` (inclusive), ``"A:B"`` (exclusive end) or ``"N"`` (one seed) into a ``range``."""
    text = spec.strip()
    try:
        if ":" in text:
            a, b = text.split(":", 1)
            r = range(int(a), int(b))
        elif "-" in text[1:]:
            i = text.index("-", 1)
            r = range(int(text[:i]), int(text[i + 1:]) + 1)
        else:
            v = int(text)
            r = range(v, v + 1)
    except ValueError:
        raise OptionError(f"seeds must look like A-B (inclusive), A:B (end excluded) or N, got {spec!r}") from None
    if len(r) == 0:
        raise OptionError(f"the seed range {spec!r} is empty")
    return r


class SeededNoise:
    """A noise source with one seed per sample: draws are batch-invariant.

    It serves :class:`~scoresde.solvers.base.SolveContext` like ``GeneratorNoise`` does
    (``randn_like``, ``prior``), and the likelihood's probes and dequantization noise
    (``rademacher``, ``uniform``). Draws of one stream are numbered by a counter kept on the object,
    so build one per solve (the driver does).

    Args:
        seeds: one integer per sample, ``[B]`` (tensor, list or range).

    Example:
        >>> import torch
        >>> a = SeededNoise([7, 8]).randn_like(torch.zeros(2, 3))
        >>> b = SeededNoise([8]).randn_like(torch.zeros(1, 3))
        >>> torch.equal(a[1], b[0])  # sample 1 of the pair equals the sample drawn alone
        True
    """

    #: Result ``i`` depends on seed ``i`` only (solvers may rely on it, e.g. for per-sample step control).
    batch_invariant = True

    def __init__(self, seeds: SeedsLike):
        self.seeds = as_seeds(seeds)
        self._counters: dict = {}
        self._on: dict = {}

    def __len__(self) -> int:
        return self.seeds.shape[0]

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
             device: Optional[Union[str, torch.device]] = None) -> Tensor:
        """Uniform 64-bit integers ``[B, *event]`` (``int64``); draw ``counter`` of ``stream`` (default: the next)."""
        shape = tuple(int(s) for s in shape)
        if not shape or shape[0] != len(self):
            raise ShapeError(f"a draw for {len(self)} seeds must have shape [{len(self)}, *event], got {shape}")
        device = torch.device(device or "cpu")
        if counter is None:
            counter = self._next(stream)
        keys = _key(self._seeds_on(device), STREAMS[stream], counter)  # [B]
        n = math.prod(shape[1:])
        idx = torch.arange(1, n + 1, device=device, dtype=torch.int64) * _GOLDEN  # element counter
        return _mix(keys[:, None] + idx[None, :]).reshape(shape)

    def uniform(self, shape: Sequence[int], device=None, dtype: Optional[torch.dtype] = None, stream: str = "solver",
                counter: Optional[int] = None) -> Tensor:
        """``U[0, 1)`` entries ``[B, *event]`` (53 random bits in float64, 24 in float32)."""
        dtype = dtype or torch.get_default_dtype()
        b = self.bits(shape, stream, counter, device)
        if dtype == torch.float64:
            return _srl(b, 11).to(torch.float64) * 2.0**-53
        return (_srl(b, 40).to(torch.float32) * 2.0**-24).to(dtype)

    def rademacher(self, shape: Sequence[int], device=None, dtype: Optional[torch.dtype] = None, stream: str = "probe",
                   counter: Optional[int] = None) -> Tensor:
        """Entries ``+-1`` with probability 1/2 each, ``[B, *event]`` (the sign bit of the hash)."""
        b = self.bits(shape, stream, counter, device)
        return torch.where(b < 0, -1.0, 1.0).to(dtype or torch.get_default_dtype())

    def randn(self, shape: Sequence[int], device=None, dtype: Optional[torch.dtype] = None, stream: str = "solver",
              counter: Optional[int] = None) -> Tensor:
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

    # ------------------------------------------------------------ the solver-facing interface
    def randn_like(self, x: Tensor) -> Tensor:
        """Standard normal noise shaped like ``x`` ``[B, *event]``: the next draw of the solver stream."""
        return self.randn(x.shape, x.device, x.dtype, stream="solver")

    def prior(self, sde: Any, shape: Sequence[int], device, dtype) -> Tensor:
        """A draw ``[B, *event]`` from the SDE's prior ``N(0, prior_std^2 I)``."""
        return sde.prior_std * self.randn(shape, device, dtype, stream="prior", counter=0)

    def sample_seeds(self, stream: str = "brownian") -> Tensor:
        """One non-negative 62-bit integer per sample for a library that takes a seed, ``[B]`` (CPU)."""
        return _srl(_key(self.seeds, STREAMS[stream], 0), 2)

    def seed(self) -> int:
        """Refused: a per-sample noise source has no single seed (use :meth:`sample_seeds`)."""
        raise OptionError("per-sample seeds have no single integer seed; use sample_seeds() for one seed per sample")

    def select(self, index: Tensor) -> "SeededNoise":
        """The noise source of a subset of the samples (same seeds, fresh counters), ``index`` ``[b]``."""
        return SeededNoise(self.seeds[index.cpu()])
