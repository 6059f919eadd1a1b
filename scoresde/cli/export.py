"""``scoresde export``: a run's weights and configuration in the ecosystem's formats."""

from __future__ import annotations

import argparse
from typing import Any

from . import args as A


def add_parsers(sub: Any, common: A.Common) -> None:
    """The ``export`` sub-command."""
    e = sub.add_parser(
        "export", parents=common, help="write a run's weights as a safetensors file (loads back with "
        "--checkpoint safetensors:FILE)",
        description="Write a run's EMA weights (or, with --raw-weights, the raw ones) and its configuration as a "
        "safetensors file: tensors only, no pickle. scoresde sample/likelihood/evaluate take it back as "
        "--checkpoint safetensors:FILE; other tools read the weights by their parameter names.",
    )
    e.add_argument("run", help="the run directory or checkpoint file")
    e.add_argument("--safetensors", required=True, metavar="OUT", help="the file to write (.safetensors)")
    e.add_argument("--raw-weights", action="store_true", help="export the raw weights instead of the EMA")
    e.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    """Export a run as a safetensors file."""
    from ..pretrained.export import export_safetensors

    out = A.check_output(args.safetensors, (".safetensors",), "--safetensors")
    path = export_safetensors(args.run, out, use_ema=not args.raw_weights)
    print(f"wrote the {'raw' if args.raw_weights else 'EMA'} weights of {args.run} to {path} "
          f"(load with --checkpoint safetensors:{path})")
    return 0
