"""A restricted unpickler for plain data: containers, strings, numbers and numeric NumPy arrays.

The python distribution of CIFAR-10 is a set of pickles. ``pickle.load`` on an untrusted file runs
whatever the file names (``os.system``, ``builtins.eval``, ...), so these files are read only through
:func:`loads_plain`, which admits

* what the pickle opcodes build by themselves: ``dict``, ``list``, ``tuple``, ``set``, ``str``,
  ``bytes``, ``int``, ``float``, ``bool``, ``None``;
* NumPy arrays and scalars of plain numeric dtypes (bool, signed and unsigned integers, floats), as
  NumPy pickles them: ``numpy.core.multiarray._reconstruct`` / ``numpy._core.multiarray._reconstruct``
  with ``numpy.ndarray`` and ``numpy.dtype`` (protocols 0 to 4), ``numpy._core.numeric._frombuffer``
  (protocol 5) and ``numpy._core.multiarray.scalar``;
* ``_codecs.encode(text, "latin1")``, which Python 3 writes for ``bytes`` at protocols 0 to 2.

Every other global is refused, and so is any dtype other than the plain numeric ones (object,
structured, string, datetime dtypes). NumPy's own ``__setstate__`` is never run on the file's data:
the dtype and array states are checked here and the array is rebuilt with ``numpy.frombuffer`` from
its validated dtype, shape and raw bytes. The admitted callables are wrappers whose attributes a
``BUILD`` opcode cannot set, so one file cannot change how the next is read.
"""

from __future__ import annotations

import io
import math
import pickle
from typing import Any, Dict, Tuple

import numpy as np

from ..errors import DataError

#: Dtype codes admitted (``numpy.dtype(code)``): bool, integers and floats, no objects or records.
PLAIN_DTYPES = frozenset({"b1", "?", "i1", "u1", "i2", "u2", "i4", "u4", "i8", "u8", "f2", "f4", "f8"})


class _Refused(Exception):
    """Internal: the pickle asked for something outside the admitted set."""


class _NDArrayClass:
    """Stands in for ``numpy.ndarray`` inside the pickle: only ``_reconstruct`` accepts it."""

    __slots__ = ()  # no ``__dict__``: a BUILD opcode cannot set attributes on it


class _Global:
    """An admitted callable as the pickle sees it: callable, but no attribute of it can be set or replaced."""

    __slots__ = ("_fn",)

    def __init__(self, fn: Any) -> None:
        object.__setattr__(self, "_fn", fn)

    def __call__(self, *args: Any) -> Any:
        return self._fn(*args)

    def __setattr__(self, name: str, value: Any) -> None:
        raise _Refused("attributes set on an admitted global")


_NDARRAY = _NDArrayClass()


class _DTypeSpec:
    """A dtype named by the pickle, checked and turned into a real ``numpy.dtype`` once its state is set."""

    __slots__ = ("code", "byteorder", "_set")

    def __init__(self, code: Any, align: Any = 0, copy: Any = 1) -> None:
        if isinstance(code, bytes):
            code = code.decode("latin1")
        if not isinstance(code, str) or code not in PLAIN_DTYPES:
            raise _Refused(f"a dtype {code!r} that is not a plain numeric dtype")
        self.code, self.byteorder, self._set = code, "=", False

    def __setstate__(self, state: Any) -> None:
        if self._set or not isinstance(state, tuple) or len(state) not in (8, 9) or state[0] not in (3, 4):
            raise _Refused(f"an unexpected dtype state {state!r:.80}")
        if state[1] not in ("<", ">", "|", "=") or any(s is not None for s in state[2:5]):
            raise _Refused("a dtype with sub-arrays or fields")
        self.byteorder, self._set = state[1], True

    def dtype(self) -> np.dtype:
        dt = np.dtype(self.code)
        return dt if self.byteorder in ("|", "=") else dt.newbyteorder(self.byteorder)


def _as_dtype(value: Any) -> np.dtype:
    if not isinstance(value, _DTypeSpec):
        raise _Refused(f"a dtype given as {type(value).__name__}")
    return value.dtype()


def _as_shape(shape: Any) -> Tuple[int, ...]:
    if not isinstance(shape, tuple) or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape):
        raise _Refused(f"an array shape {shape!r:.80}")
    return shape


def _as_buffer(raw: Any) -> bytes:
    if isinstance(raw, str):  # Python 2 pickles hold the data as str (read as latin1)
        return raw.encode("latin1")
    if isinstance(raw, (bytes, bytearray)):
        return bytes(raw)
    if isinstance(raw, pickle.PickleBuffer):
        return bytes(raw.raw())
    raise _Refused(f"array data given as {type(raw).__name__}")


def _array(raw: Any, dtype: np.dtype, shape: Tuple[int, ...], fortran: bool) -> np.ndarray:
    buf = _as_buffer(raw)
    if len(buf) != math.prod(shape) * dtype.itemsize:
        raise _Refused(f"array data of {len(buf)} bytes for shape {shape} of {dtype}")
    return np.frombuffer(buf, dtype=dtype).reshape(shape, order="F" if fortran else "C").copy()


class _ArraySpec:
    """What ``_reconstruct`` returns: an array filled in by its (checked) state."""

    __slots__ = ("array",)

    def __init__(self) -> None:
        self.array = None

    def __setstate__(self, state: Any) -> None:
        if self.array is not None or not isinstance(state, tuple) or len(state) != 5 or state[0] != 1:
            raise _Refused(f"an unexpected array state {type(state).__name__}")
        _, shape, dtype, fortran, raw = state
        self.array = _array(raw, _as_dtype(dtype), _as_shape(shape), bool(fortran))


def _reconstruct(subtype: Any, shape: Any, typecode: Any) -> _ArraySpec:
    if subtype is not _NDARRAY:
        raise _Refused(f"an array of type {type(subtype).__name__}")
    return _ArraySpec()


def _frombuffer(buf: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    if order not in ("C", "F"):
        raise _Refused(f"an array order {order!r:.20}")
    return _array(buf, _as_dtype(dtype), _as_shape(shape), order == "F")


def _scalar(dtype: Any, raw: Any = None) -> Any:
    dt = _as_dtype(dtype)
    buf = _as_buffer(raw)
    if len(buf) != dt.itemsize:
        raise _Refused("a numpy scalar of the wrong size")
    return np.frombuffer(buf, dtype=dt)[0]


def _encode(text: Any, encoding: Any = "utf-8") -> bytes:
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise _Refused("_codecs.encode other than str -> bytes in latin1")
    return text.encode("latin1")


_ALLOWED: Dict[Tuple[str, str], Any] = {("_codecs", "encode"): _Global(_encode)}
for _mod in ("numpy.core", "numpy._core"):
    _ALLOWED[(f"{_mod}.multiarray", "_reconstruct")] = _Global(_reconstruct)
    _ALLOWED[(f"{_mod}.multiarray", "scalar")] = _Global(_scalar)
    _ALLOWED[(f"{_mod}.numeric", "_frombuffer")] = _Global(_frombuffer)
_ALLOWED[("numpy", "ndarray")] = _NDARRAY
_ALLOWED[("numpy", "dtype")] = _Global(_DTypeSpec)


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise _Refused(f"the global {module}.{name}") from None

    def persistent_load(self, pid: Any) -> Any:
        raise _Refused("a persistent id")


def _finish(obj: Any) -> Any:
    """Replace the array placeholders by their arrays, refusing ones whose state was never set."""
    if isinstance(obj, _ArraySpec):
        if obj.array is None:
            raise _Refused("an array without data")
        return obj.array
    if isinstance(obj, (_DTypeSpec, _NDArrayClass, _Global)):
        raise _Refused("a bare dtype, array type or function")
    if isinstance(obj, dict):
        return {_finish(k): _finish(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finish(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_finish(v) for v in obj)
    if isinstance(obj, (set, frozenset)):
        return type(obj)(_finish(v) for v in obj)
    return obj


def loads_plain(data: bytes, where: str, what: str = "a plain data pickle") -> Any:
    """Unpickle ``data`` admitting only plain containers, strings, numbers and numeric NumPy arrays.

    Python 2 strings are decoded as latin1 (as NumPy's arrays of Python 2 pickles need).

    Args:
        data: the pickle's bytes (read whole beforehand, so no opcode can ask the file for more than it holds).
        where: the file name, for messages.
        what: what the file should be, for messages (e.g. ``"a plain CIFAR-10 batch"``).

    Returns:
        The unpickled object, with NumPy arrays as ``numpy.ndarray``.

    Raises:
        DataError: a global outside the admitted set (e.g. ``os.system``), a non-numeric dtype, or
            a pickle that is corrupt or truncated; the message names ``where``.
    """
    try:
        obj = _PlainUnpickler(io.BytesIO(data), encoding="latin1").load()
        return _finish(obj)
    except _Refused as e:
        raise DataError(
            f"{where}: refused: the pickle asks for {e}, so it is not {what}; only plain containers, strings, "
            "numbers and numeric NumPy arrays are read. Replace the file with the original"
        ) from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            RecursionError, UnicodeError) as e:
        raise DataError(f"{where}: not {what}: the pickle is corrupt or truncated ({type(e).__name__}: {e}). "
                        "Replace the file with the original") from None


__all__ = ["loads_plain", "PLAIN_DTYPES"]
