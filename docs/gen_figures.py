"""Regenerate the figures of the documentation and copy in the benchmark results.

    python docs/gen_figures.py                         # everything (about 40 minutes on 2 CPU cores)
    python docs/gen_figures.py toy_2d solver_comparison
    python docs/gen_figures.py benchmark               # only copy benchmarks/results/cpu-quick.* into docs/

Targets:

* ``toy_2d``, ``langevin_vs_pc_vs_ode``, ``solver_comparison``, ``mnist``, ``conditional_toy``,
  ``mnist_conditional``, ``mnist_inpainting``: run ``examples/<name>.py`` with its full (non-quick)
  settings and write ``docs/figures/<name>.png``. The ``mnist*`` examples read the MNIST files from
  ``--data-dir`` (default: the environment variable ``SCORESDE_DATA``) and keep their training runs in
  ``runs/`` (``runs/mnist-cpu``; the last two share ``runs/mnist-conditional``).
* ``benchmark``: copy the plot ``benchmarks/results/cpu-quick-quality_vs_nfe.png`` to
  ``docs/figures/benchmark_quality_vs_nfe.png``, and the "Quality against NFE" and "Solver
  overhead" sections of ``benchmarks/results/cpu-quick.md`` to ``docs/snippets/benchmark_quality.md``
  and ``docs/snippets/benchmark_overhead.md``, which the solver guide includes. Produce those results first with
  ``python benchmarks/run.py --quick --out benchmarks/results/cpu-quick.json``. Likewise the
  few-step comparison: ``benchmarks/results/cpu-fewstep-fewstep.png`` to ``docs/figures/benchmark_fewstep.png``
  and its "Few-step quality" section to ``docs/snippets/benchmark_fewstep.md``, from
  ``python benchmarks/run.py --quick --sections fewstep --threads 1 --out benchmarks/results/cpu-fewstep.json``.
* ``families``: copy ``benchmarks/results/families-cpu.png`` to ``docs/figures/families_cpu.png`` and the
  per-data-set tables of ``benchmarks/results/families-cpu.md`` to ``docs/snippets/families_<dataset>.md``,
  which the families page includes; produce them with ``python benchmarks/families.py --profile cpu``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

ROOT = Path(__file__).resolve().parent.parent
FIGURES = ROOT / "docs" / "figures"
SNIPPETS = ROOT / "docs" / "snippets"
RESULTS = ROOT / "benchmarks" / "results"
EXAMPLES = ("toy_2d", "langevin_vs_pc_vs_ode", "solver_comparison", "mnist", "conditional_toy", "mnist_conditional",
            "mnist_inpainting")
BENCH_MD = RESULTS / "cpu-quick.md"
BENCH_PNG = RESULTS / "cpu-quick-quality_vs_nfe.png"
#: section title of the benchmark report -> snippet file the solver guide includes
SECTIONS = {"Quality against NFE": "benchmark_quality.md", "Solver overhead": "benchmark_overhead.md"}
#: the few-step comparison has its own results file (run with --sections fewstep)
FEWSTEP_MD = RESULTS / "cpu-fewstep.md"
FEWSTEP_PNG = RESULTS / "cpu-fewstep-fewstep.png"
FEWSTEP_SECTIONS = {"Few-step quality": "benchmark_fewstep.md"}
FEWSTEP_FIGURE = "benchmark_fewstep.png"
FAMILIES_MD = RESULTS / "families-cpu.md"
FAMILIES_PNG = RESULTS / "families-cpu.png"
FAMILIES_SECTIONS = {"mnist": "families_mnist.md", "fashion-mnist": "families_fashion-mnist.md"}
TARGETS = (*EXAMPLES, "benchmark", "families")


def report_section(report: str, title: str) -> str:
    """The section ``## <title>`` of a benchmark report, without its heading and image lines."""
    heading = f"## {title}"
    start = report.find(heading + "\n")
    if start < 0:
        raise ValueError(f"the benchmark report has no {heading!r} section")
    body = report[start + len(heading):]
    end = body.find("\n## ")
    body = body if end < 0 else body[:end]
    lines = [line for line in body.splitlines() if not line.startswith("![")]
    return "\n".join(lines).strip() + "\n"


def copy_report(md: Path, png: Path, figure: str, sections: Dict[str, str], how: str) -> List[Path]:
    """Copy the plot ``png`` to ``docs/figures/<figure>`` and each section ``title`` of the report ``md`` to
    ``docs/snippets/<name>`` (``sections``: title -> name); ``how`` says how to produce missing results."""
    if not (md.is_file() and png.is_file()):
        raise SystemExit(f"missing {md} or {png}: run {how}")
    FIGURES.mkdir(parents=True, exist_ok=True)
    SNIPPETS.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(png, FIGURES / figure)
    written = [FIGURES / figure]
    report = md.read_text(encoding="utf-8")
    for title, name in sections.items():
        (SNIPPETS / name).write_text(report_section(report, title), encoding="utf-8")
        written.append(SNIPPETS / name)
    return written


def copy_benchmark() -> List[Path]:
    return copy_report(BENCH_MD, BENCH_PNG, "benchmark_quality_vs_nfe.png", SECTIONS,
                       "python benchmarks/run.py --quick --out benchmarks/results/cpu-quick.json") + copy_report(
        FEWSTEP_MD, FEWSTEP_PNG, FEWSTEP_FIGURE, FEWSTEP_SECTIONS,
        "python benchmarks/run.py --quick --sections fewstep --threads 1 --out benchmarks/results/cpu-fewstep.json")


def copy_families() -> List[Path]:
    return copy_report(FAMILIES_MD, FAMILIES_PNG, "families_cpu.png", FAMILIES_SECTIONS,
                       "python benchmarks/families.py --profile cpu")


def run_example(name: str, data_dir: str) -> Path:
    out = FIGURES / f"{name}.png"
    cmd = [sys.executable, str(ROOT / "examples" / f"{name}.py"), "--out", str(out)]
    if name.startswith("mnist") and data_dir:
        cmd += ["--data-dir", data_dir]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True, env=dict(os.environ, MPLBACKEND="Agg"))
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("targets", nargs="*", metavar="TARGET",
                   help=f"what to regenerate: {', '.join(TARGETS)} (default: all)")
    p.add_argument("--data-dir", default=os.environ.get("SCORESDE_DATA"),
                   help="MNIST folder for the mnist example (default: $SCORESDE_DATA)")
    args = p.parse_args(argv)
    targets = args.targets or list(TARGETS)
    unknown = [t for t in targets if t not in TARGETS]
    if unknown:
        p.error(f"unknown targets {unknown}; valid: {', '.join(TARGETS)}")
    copiers = {"benchmark": copy_benchmark, "families": copy_families}
    written: List[Path] = []
    for name in targets:
        written += copiers[name]() if name in copiers else [run_example(name, args.data_dir)]
    for path in written:
        print("wrote", path.relative_to(ROOT))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
