"""The public table of samplers: :data:`SOLVERS` maps each name to its solver class.

A solver class joins the table with the :func:`register` decorator, in the module that defines it; the
package (``scoresde.solvers``) imports every solver module, so the table is complete once it is imported.
"""

from __future__ import annotations

from typing import Dict, Type, TypeVar

from ..errors import OptionError
from .base import Solver

#: Public name -> solver class. Pass a name (with options as keyword arguments) or an instance
#: of any :class:`~scoresde.solvers.base.Solver` subclass, your own included, to :func:`scoresde.sample`.
SOLVERS: Dict[str, Type[Solver]] = {}

S = TypeVar("S", bound=Type[Solver])


def register(cls: S) -> S:
    """Class decorator: add ``cls`` to :data:`SOLVERS` under ``cls.name``.

    Raises:
        OptionError: ``cls`` has no name, or another class holds that name already.
    """
    name = getattr(cls, "name", "")
    if not isinstance(name, str) or not name:
        raise OptionError(f"{cls.__name__} needs a class attribute `name` to be registered as a solver")
    if name in SOLVERS and SOLVERS[name] is not cls:
        raise OptionError(f"the solver name {name!r} is taken by {SOLVERS[name].__name__}")
    SOLVERS[name] = cls
    return cls
