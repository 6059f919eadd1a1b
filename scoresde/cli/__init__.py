"""The ``scoresde`` command line: ``train``, ``sample``, ``likelihood``, ``evaluate``, ``classifier``, ``demo``,
``train-classifier`` and ``inpaint``.

One module per command group (:mod:`~scoresde.cli.train`, :mod:`~scoresde.cli.sample`,
:mod:`~scoresde.cli.likelihood`, :mod:`~scoresde.cli.evaluate`, :mod:`~scoresde.cli.guidance`); what they
share (argument types, option groups, model loading, outputs) is in :mod:`~scoresde.cli.args`, and no
command module imports another. User errors (bad options, missing or corrupt files, NaN losses) print
``scoresde: error: ...`` in one line on stderr and exit with status 1 (2 for malformed command lines),
without a traceback.
"""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from .._version import __version__
from ..errors import ScoreSDEError, ShardError
from . import args as A
from . import evaluate, export, guidance, latent, likelihood, sample, train

EXIT_ERROR, EXIT_USAGE = A.EXIT_ERROR, A.EXIT_USAGE

#: The command modules, in the order ``--help`` lists their commands.
COMMAND_MODULES = (train, sample, likelihood, evaluate, guidance, latent, export)


def build_parser() -> argparse.ArgumentParser:
    """The ``scoresde`` argument parser with its sub-commands."""
    p = A.Parser(prog="scoresde", description="Score-based generative modelling with SDEs: train, sample, evaluate "
                 "likelihoods.")
    p.add_argument("--version", action="version", version=f"scoresde {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    common = argparse.ArgumentParser(add_help=False)
    A.add_common(common)
    for module in COMMAND_MODULES:
        module.add_parsers(sub, [common])
    return p


def main(argv: Optional[List[str]] = None) -> int:
    """Run the command line; returns the exit status (0 success, 1 error, 2 malformed command line, 130 interrupted)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # the parser printed its one line (or --help/--version)
        return int(e.code) if isinstance(e.code, int) else EXIT_USAGE
    try:
        return args.func(args)
    except ScoreSDEError as e:
        if A.is_main_process() or isinstance(e, ShardError):  # any rank may be the one that sees a dead peer
            print(f"scoresde: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as e:  # disk full, read-only or missing directories, a file where a folder belongs, ...
        if A.is_main_process():
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


__all__ = ["main", "build_parser", "EXIT_ERROR", "EXIT_USAGE"]
