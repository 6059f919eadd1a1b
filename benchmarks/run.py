"""Run the scoresde benchmark suite and write one JSON file, a markdown report and a plot.

Usage::

    python benchmarks/run.py [--quick] [--device cpu|cuda] --out results.json

writes ``results.json``, ``results.md`` (the tables the docs include) and
``results-quality_vs_nfe.png`` next to it (and ``results-fewstep.png`` with the few-step section).
``--quick`` is sized for under ten minutes on two CPU cores with ``--threads 1`` (on cores busy with
other work, more threads than free cores slow it down many times). Top-level keys of the JSON:
``solver_overhead``, ``quality_vs_nfe``, ``likelihood``, ``likelihood_vs_scipy_roundtrip``,
``training``, ``peers``, ``fewstep`` and ``meta``. A section that cannot run
holds the string ``"unavailable: <reason>"`` (a module or dependency is missing) or
``"failed: <error>"`` instead of its results.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch

from common import Profile, check_device, environment, error_text, get_profile, rows_to_markdown

SECTIONS = (
    "solver_overhead",
    "quality_vs_nfe",
    "likelihood",
    "likelihood_vs_scipy_roundtrip",
    "training",
    "peers",
    "fewstep",
)


# --------------------------------------------------------------------------- running sections
def load_function(module: str, name: str) -> Callable[..., Any]:
    """``<name>`` of the benchmark module ``<module>`` (``benchmarks/<module>.py``, imported as a local module).

    Raises ``ImportError`` naming what is missing.
    """
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        raise ImportError(f"benchmarks/{module}.py does not import ({error_text(e)})") from e
    where = Path(getattr(mod, "__file__", None) or "").resolve().parent
    if where != Path(__file__).resolve().parent:
        raise ImportError(f"the module {module!r} was imported from {where}, not from benchmarks/")
    if not hasattr(mod, name):
        raise ImportError(f"benchmarks/{module}.py has no function {name!r}")
    return getattr(mod, name)


def run_section(fn: Callable[[], Any], log: Callable[[str], None] = print) -> Any:
    """Run one section: its result, ``"unavailable: <reason>"`` on ``ImportError``, ``"failed: <error>"`` otherwise."""
    try:
        return fn()
    except ImportError as e:
        return f"unavailable: {e}"
    except Exception as e:  # one broken section must not lose the others
        log(traceback.format_exc())
        return f"failed: {error_text(e)}"


def _training(device: str, quick: bool) -> Dict[str, Any]:
    throughput = load_function("training_bench", "training_throughput")(device=device, quick=quick)
    result = dict(throughput)
    try:
        quality_fn = load_function("training_bench", "training_quality")
    except ImportError as e:
        result["quality"] = f"unavailable: {e}"
    else:
        result["quality"] = run_section(lambda: quality_fn(device=device, quick=quick))
    return result


def section_functions(device: str, profile: Profile) -> Dict[str, Callable[[], Any]]:
    """The zero-argument callables that produce each section."""
    quick = profile.name != "full"

    def solvers(name: str) -> Callable[[], Any]:
        return lambda: load_function("solvers_bench", name)(device=device, profile=profile)

    return {
        "solver_overhead": solvers("solver_overhead"),
        "quality_vs_nfe": solvers("quality_vs_nfe"),
        "likelihood": lambda: load_function("likelihood_bench", "likelihood_table")(device=device, quick=quick),
        "likelihood_vs_scipy_roundtrip": lambda: load_function("likelihood_bench", "scipy_roundtrip_comparison")(
            device=device, quick=quick
        ),
        "training": lambda: _training(device, quick),
        "peers": lambda: load_function("peers", "peers")(device=device, profile=profile),
        "fewstep": lambda: load_function("fewstep_bench", "fewstep")(
            device=device, profile=profile, log=lambda m: print(m, file=sys.stderr, flush=True)
        ),
    }


def run_all(
    device: str = "cpu",
    profile: "str | Profile" = "quick",
    sections: Optional[Sequence[str]] = None,
    log: Callable[[str], None] = print,
) -> Dict[str, Any]:
    """Run the selected sections (all by default) and return the results dictionary.

    Sections left out hold ``"skipped: not selected"``; ``meta.section_seconds`` has the wall
    time of each section that ran.
    """
    prof = get_profile(profile)
    check_device(device)
    selected = list(SECTIONS) if sections is None else list(sections)
    unknown = [s for s in selected if s not in SECTIONS]
    if unknown:
        raise ValueError(f"unknown sections {unknown}; valid sections: {', '.join(SECTIONS)}")
    results: Dict[str, Any] = {}
    seconds: Dict[str, float] = {}
    fns = section_functions(device, prof)
    for name in SECTIONS:
        if name not in selected:
            results[name] = "skipped: not selected"
            continue
        log(f"[bench] {name} ...")
        t0 = time.perf_counter()
        results[name] = run_section(fns[name], log)
        seconds[name] = round(time.perf_counter() - t0, 2)
        log(f"[bench] {name} done in {seconds[name]:.1f} s")
    meta = environment(device, prof)
    meta["section_seconds"] = seconds
    meta["total_seconds"] = round(sum(seconds.values()), 2)
    results["meta"] = meta
    return results


# --------------------------------------------------------------------------- JSON
def clean_json(obj: Any) -> Any:
    """Make ``obj`` strict JSON: NaN and infinities become ``None``, tuples lists, tensors numbers."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): clean_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean_json(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return clean_json(obj.tolist())
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalars
        return clean_json(obj.item())
    return obj


# --------------------------------------------------------------------------- markdown
def _fmt(v: Any, spec: str = ".3g") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    if isinstance(v, float):
        return format(v, spec)
    return str(v)


def _status(value: Any) -> Optional[str]:
    return value if isinstance(value, str) else None


def overhead_markdown(rows: List[Dict[str, Any]]) -> str:
    """One row per solver, one ratio column per network."""
    networks = list(dict.fromkeys(r["network"] for r in rows))
    solvers = list(dict.fromkeys(r["solver"] for r in rows))
    by = {(r["network"], r["solver"]): r for r in rows}
    header = ["solver"] + [f"{n}: NFE" for n in networks] + [f"{n}: ratio" for n in networks]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for s in solvers:
        cells = [s]
        for n in networks:
            r = by.get((n, s), {})
            cells.append(_fmt(r.get("nfe")) if "error" not in r else "error")
        for n in networks:
            r = by.get((n, s), {})
            if "error" in r:
                cells.append(f"error: {r['error'][:80]}")
            elif r:
                lo, hi = _fmt(r.get("ratio_min"), ".2f"), _fmt(r.get("ratio_max"), ".2f")
                cells.append(f"{_fmt(r.get('ratio'), '.3f')} [{lo}-{hi}]")
            else:
                cells.append("")
        lines.append("| " + " | ".join(cells) + " |")

    def bare(n: str) -> str:
        ms = next((r["bare_ms"] for r in rows if r["network"] == n and "bare_ms" in r), None)
        batch = next((r["batch"] for r in rows if r["network"] == n), "")
        return f"{n}: bare evaluation {_fmt(ms)} ms, batch {batch}"

    return "\n".join(lines) + (
        "\n\nRatio = solve wall time / (NFE x one bare score evaluation of the same batch): the fastest of the "
        f"repeated solves over the fastest of the repeated bare blocks of NFE evaluations [min-max of the per-repeat "
        f"ratios]. {'; '.join(bare(n) for n in networks)}."
    )


def quality_markdown(rows: List[Dict[str, Any]]) -> str:
    """Per (problem, SDE): SW2 and dlogp of each solver at each NFE budget; adaptive runs listed."""
    out = []
    groups = list(dict.fromkeys((r["problem"], r["sde"]) for r in rows))
    for problem, sde in groups:
        grp = [r for r in rows if r["problem"] == problem and r["sde"] == sde]
        floor = next((r.get("sw2_floor") for r in grp if r.get("sw2_floor") is not None), None)
        floor_sd = next((r.get("sw2_floor_sd") for r in grp if r.get("sw2_floor_sd") is not None), None)
        se = next((r.get("dlogp_stderr") for r in grp if r.get("dlogp_stderr") is not None), None)
        budgets = sorted({r["target_nfe"] for r in grp if r.get("target_nfe") is not None})
        fixed = list(dict.fromkeys(r["solver"] for r in grp if r.get("target_nfe") is not None))
        by = {(r["solver"], r["target_nfe"]): r for r in grp}
        out.append(f"### {problem}, {sde.upper()} SDE\n")
        out.append(
            f"SW2 to true samples (dlogp in brackets). Exact samples score SW2 = {_fmt(floor)} "
            f"(sd {_fmt(floor_sd, '.2g')} from draw to draw); "
            f"the standard error of dlogp is {_fmt(se, '.2g')}. Cells are at the largest step count within "
            "the NFE budget.\n"
        )
        header = ["solver"] + [f"NFE <= {b}" for b in budgets]
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        for s in fixed:
            cells = [s]
            for b in budgets:
                r = by.get((s, b))
                if r is None:
                    cells.append("-")
                elif "error" in r:
                    cells.append("error")
                else:
                    cells.append(f"{_fmt(r.get('sw2'), '.3f')} ({_fmt(r.get('dlogp'), '+.2f')})")
            lines.append("| " + " | ".join(cells) + " |")
        out.append("\n".join(lines))
        adaptive = [r for r in grp if r.get("target_nfe") is None]
        if adaptive:
            out.append("\nAdaptive:\n")
            out.append(
                rows_to_markdown(
                    [dict(r, error=r.get("error", "")[:100]) for r in adaptive],
                    [
                        ("solver", "solver"),
                        ("nfe", "NFE"),
                        ("seconds", "seconds"),
                        ("sw2", "SW2"),
                        ("dlogp", "dlogp"),
                        ("error", "error"),
                    ],
                    {"sw2": ".3f", "dlogp": "+.2f", "seconds": ".2f"},
                )
            )
        errors = [r for r in grp if "error" in r and r.get("target_nfe") is not None]
        if errors:
            out.append(
                "\nErrors: "
                + "; ".join(f"{r['solver']} at NFE {r['target_nfe']}: {r['error'][:160]}" for r in errors[:5])
            )
        out.append("")
    return "\n".join(out)


def likelihood_markdown(value: Any) -> str:
    if _status(value):
        return value
    if isinstance(value, list) and value:
        keys = list(dict.fromkeys(k for r in value for k in r))
        return rows_to_markdown(value, [(k, k) for k in keys])
    return "no rows"


def dict_markdown(value: Any) -> str:
    if _status(value):
        return value
    if isinstance(value, dict):
        lines = ["| key | value |", "|---|---|"]
        for k, v in value.items():
            if isinstance(v, (dict, list)):
                v = json.dumps(clean_json(v))[:300]
            lines.append(f"| {k} | {_fmt(v, '.4g')} |")
        return "\n".join(lines)
    return str(value)


def peers_markdown(value: Any) -> str:
    if _status(value):
        return value
    out = ["Versions: " + ", ".join(f"{k} {v or 'not installed'}" for k, v in value.get("versions", {}).items()), ""]
    out += [f"- {k}: {v}" for k, v in value.get("status", {}).items()]
    rows = value.get("rows", [])
    if rows:
        out.append("")
        out.append(
            rows_to_markdown(
                rows,
                [
                    ("peer", "peer"),
                    ("peer_method", "peer method"),
                    ("ours", "ours"),
                    ("analog", "comparison"),
                    ("problem", "problem"),
                    ("sde", "SDE"),
                    ("peer_nfe", "NFE peer"),
                    ("ours_nfe", "NFE ours"),
                    ("peer_sw2", "SW2 peer"),
                    ("ours_sw2", "SW2 ours"),
                    ("peer_dlogp", "dlogp peer"),
                    ("ours_dlogp", "dlogp ours"),
                    ("peer_seconds", "s peer"),
                    ("ours_seconds", "s ours"),
                    ("verdict", "ours vs peer"),
                ],
                {
                    "peer_sw2": ".3f",
                    "ours_sw2": ".3f",
                    "peer_dlogp": "+.2f",
                    "ours_dlogp": "+.2f",
                    "peer_seconds": ".2f",
                    "ours_seconds": ".2f",
                },
            )
        )
        seeds = rows[0].get("seeds")
        out.append(
            f"\nMeans over {seeds} seed(s), the same seeds on both sides. 'equal within noise': the mean paired "
            "SW2 difference is within two of its standard errors or within 2 % of the peer's SW2. Rows marked "
            "'best of ours' compare a method we do not implement with our best deterministic solver at that NFE "
            "(its NFE may be a little lower when its steps cannot hit the budget exactly). 'same method' runs "
            "each library on its own default time grid; 'same method, same grid' runs ours on the noise levels "
            "the peer evaluated (k-diffusion is given our grid), which isolates the implementation."
        )
    lik = value.get("likelihood", [])
    if lik:
        out.append("")
        out.append(
            rows_to_markdown(
                lik,
                [
                    ("peer", "library"),
                    ("method", "method"),
                    ("nfe", "NFE"),
                    ("seconds", "seconds"),
                    ("abs_error", "mean |error|"),
                    ("mean_error", "mean error"),
                    ("tol", "tol"),
                ],
            )
        )
    return "\n".join(out)


def _pm(row: Dict[str, Any], key: str, spec: str = ".3f") -> str:
    """``"mean +- se"`` of ``row[key]`` and ``row[key + "_se"]``."""
    m, se = row.get(key), row.get(f"{key}_se")
    if m is None:
        return "n/a"
    return f"{_fmt(m, spec)} ± {_fmt(se, spec.replace('+', ''))}" if se is not None else _fmt(m, spec)


def _md_table(header: List[str], rows: List[Dict[str, Any]], cells: Callable[[Dict[str, Any]], List[str]]) -> str:
    """A markdown table: ``header``, then ``cells(row)`` for each row."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cells(r)) + " |" for r in rows]
    return "\n".join(lines)


def _ours_vs_peer_cells(r: Dict[str, Any]) -> List[str]:
    """Cells of a few-step row: problem, SDE, NFE, then our and the peer's label, SW2 and dlogp, and the verdict."""
    return [
        r["problem"], r["sde"].upper(), str(r["nfe"]), f"`{r.get('ours_label', 'n/a')}`",
        _pm(r, "ours_sw2"), _pm(r, "ours_dlogp", "+.2f"), f"`{r.get('peer_label', 'n/a')}`",
        _pm(r, "peer_sw2"), _pm(r, "peer_dlogp", "+.2f"), str(r.get("verdict", "n/a")),
    ]


def fewstep_markdown(value: Any) -> str:
    """Tables of the few-step section: best of each side per (problem, SDE, NFE), and the schedule rows."""
    if _status(value):
        return value
    rows, settings = value.get("rows", []), value.get("settings", {})
    out = [
        f"Means ± standard errors over {settings.get('seeds')} seeds of {settings.get('samples')} samples (the same prior "
        "draws on both sides). Each side's best is the configuration with the lowest SW2 on seed 0 among all it offers "
        "(ours: solvers x grids; peers: diffusers' multistep schedulers x settings on VP, and the transcriptions of "
        "DPM-Solver++(2M) and EDM's Heun sampler on Karras and log-SNR levels). NFE counts every score evaluation, "
        "the final denoising step included. Verdict on the paired per-seed SW2 differences (equal: within two "
        "standard errors or 2 %).",
        "",
    ]
    if settings.get("our_grids"):
        search = settings.get("peer_search")
        peers_tried = "every spacing x lower_order_final x Karras sigmas" if search == "all" else "their defaults"
        out += [f"Our grids in this run: {', '.join(settings['our_grids'])}; diffusers' settings: {peers_tried}.", ""]
    if settings.get("missing_solvers"):
        out += [f"Solvers not in `scoresde.SOLVERS` in this run: {', '.join(settings['missing_solvers'])}.", ""]
    out.append(_md_table(["problem", "SDE", "NFE", "scoresde best", "SW2", "dlogp", "best peer", "SW2 peer", "dlogp peer", "verdict"],
                         rows, _ours_vs_peer_cells))
    floors = {r["problem"]: (r.get("sw2_floor"), r.get("sw2_floor_sd"), r.get("dlogp_stderr")) for r in rows}
    out.append(
        "\nExact samples of the same size score SW2 "
        + "; ".join(f"{p}: {_fmt(f, '.3f')} (sd {_fmt(sd, '.2g')}), dlogp stderr {_fmt(se, '.2g')}"
                    for p, (f, sd, se) in floors.items())
        + "."
    )
    out += ["", "Our best on the built-in grids only (no fitted GITS grid), and our best deterministic solver:", ""]
    header = ["problem", "SDE", "NFE", "built-in grids", "SW2", "dlogp", "vs best peer",
              "deterministic", "SW2 det.", "vs best peer (det.)"]
    out.append(_md_table(header, rows, lambda r: [
        r["problem"], r["sde"].upper(), str(r["nfe"]), f"`{r.get('ours_nogits_label', 'n/a')}`",
        _pm(r, "ours_nogits_sw2"), _pm(r, "ours_nogits_dlogp", "+.2f"), str(r.get("ours_nogits_verdict", "n/a")),
        f"`{r.get('ours_det_label', 'n/a')}`", _pm(r, "ours_det_sw2"), str(r.get("ours_det_verdict", "n/a")),
    ]))
    sched = value.get("schedule", [])
    if sched:
        out += [
            "",
            "The schedule is open to the peers too: the transcriptions of DDIM and DPM-Solver++(2M) on the same "
            "GITS noise levels (best of the two), against our best on the GITS grid:",
            "",
        ]
        out.append(_md_table(["problem", "SDE", "NFE", "ours @ gits", "SW2", "dlogp", "peer @ gits", "SW2 peer", "dlogp peer",
                              "verdict"], sched, _ours_vs_peer_cells))
    return "\n".join(out)


def targets(results: Dict[str, Any]) -> List[Dict[str, str]]:
    """Assess the issue's targets from the results: ``[{"target", "measured", "status"}]``."""
    out = []
    device = results.get("meta", {}).get("device", "cpu")
    ov = results.get("solver_overhead")
    if isinstance(ov, list):
        unet = [r for r in ov if r.get("network", "").startswith("unet") and "ratio" in r]
        if unet:
            worst = max(unet, key=lambda r: r["ratio"])
            over = [r for r in unet if r["ratio"] > 1.10]
            measured = (
                f"{device}: median over solvers {sorted(r['ratio'] for r in unet)[len(unet) // 2]:.3f}, "
                f"worst {worst['ratio']:.3f} ({worst['solver']}); above 1.10: "
                + (", ".join(f"{r['solver']} {r['ratio']:.2f}" for r in over) or "none")
            )
            if device.startswith("cuda"):
                status = "met" if not over else f"missed by up to {100 * (worst['ratio'] - 1.10):.0f} points"
            else:
                status = "CUDA not measured (no GPU in this run); CPU figure reported"
            out.append(
                {
                    "target": "solver overhead <= 1.10 on the U-Net-sized network (CUDA)",
                    "measured": measured,
                    "status": status,
                }
            )
    sc = results.get("likelihood_vs_scipy_roundtrip")
    if isinstance(sc, dict) and "speedup" in sc:
        ours, theirs = sc.get("our_error"), sc.get("their_error")
        acc_ok = ours is not None and theirs is not None and ours <= theirs * 1.0000001
        speed_ok = (sc.get("speedup") or 0) >= 10
        measured = f"speedup {_fmt(sc.get('speedup'))}x; error ours {_fmt(ours)} vs scipy loop {_fmt(theirs)}"
        status = (
            "met"
            if (speed_ok and acc_ok)
            else (
                ("speedup short of 10x by " + f"{10 - (sc.get('speedup') or 0):.1f}x" if not speed_ok else "")
                + ("; " if not speed_ok and not acc_ok else "")
                + ("accuracy worse than the scipy loop" if not acc_ok else "")
            )
        )
        out.append(
            {
                "target": "likelihood >= 10x faster than the scipy round trip at equal or better accuracy",
                "measured": measured,
                "status": status,
            }
        )
    else:
        out.append(
            {
                "target": "likelihood >= 10x faster than the scipy round trip",
                "measured": str(sc)[:200],
                "status": "not measured",
            }
        )
    pe = results.get("peers")
    if isinstance(pe, dict):
        same = [r for r in pe.get("rows", []) if str(r.get("analog", "")).startswith("same method")]
        worse = [r for r in same if r.get("verdict") == "worse"]

        def on_peer_grid(r: Dict[str, Any]) -> str:
            """The verdict of the same comparison on the peer's own grid, when there is one."""
            twin = next(
                (
                    o
                    for o in same
                    if o.get("analog") == "same method, same grid"
                    and o is not r
                    and all(o.get(k) == r.get(k) for k in ("peer", "peer_method", "ours", "problem", "nfe"))
                ),
                None,
            )
            return f"; on the peer's grid: {twin['verdict']}" if twin and r.get("analog") == "same method" else ""

        measured = f"{len(same)} same-method comparisons: " + ", ".join(
            f"{v} {sum(r.get('verdict') == v for r in same)}" for v in ("better", "equal within noise", "worse")
        )
        status = (
            "met"
            if same and not worse
            else (
                "not measured"
                if not same
                else "missed: "
                + "; ".join(
                    f"{r['peer']} {r['peer_method']} vs {r['ours']} ({r['analog']}; {r['problem']}, "
                    f"NFE {r['nfe']}): SW2 {r['ours_sw2']:.3f} vs {r['peer_sw2']:.3f} "
                    f"(+{100 * (r['ours_sw2'] / r['peer_sw2'] - 1):.0f}%{on_peer_grid(r)})"
                    for r in worse
                )
            )
        )
        out.append(
            {
                "target": "at equal NFE our samplers match the peer implementing the same method",
                "measured": measured,
                "status": status,
            }
        )
    fs = results.get("fewstep")
    if isinstance(fs, dict) and fs.get("rows"):
        out.append(fewstep_target(fs["rows"]))
    return out


def fewstep_target(rows: List[Dict[str, Any]]) -> Dict[str, str]:
    """Issue 9's target: our best at least as close to the data as the peers' best at every NFE, closer at 5-10."""
    rated = [r for r in rows if r.get("verdict") in ("better", "equal within noise", "worse")]
    short = [
        r for r in rated if r["verdict"] == "worse" or (r["nfe"] <= 10 and r["verdict"] != "better")
    ]
    measured = f"{len(rated)} (problem, SDE, NFE) cells: " + ", ".join(
        f"{v} {sum(r['verdict'] == v for r in rated)}" for v in ("better", "equal within noise", "worse")
    )
    status = (
        "met"
        if rated and not short
        else (
            "not measured"
            if not rated
            else "short in: "
            + "; ".join(
                f"{r['problem']}/{r['sde']} NFE {r['nfe']} ({r['verdict']}: SW2 {r['ours_sw2']:.3f} vs {r['peer_sw2']:.3f})"
                for r in short
            )
        )
    )
    return {
        "target": "few-step: our best as close to the data as the best peer at NFE 5-20, closer at 5-10",
        "measured": measured,
        "status": status,
    }


def to_markdown(
    results: Dict[str, Any], plot_name: Optional[str] = None, fewstep_plot_name: Optional[str] = None
) -> str:
    """The markdown report of a results dictionary."""
    meta = results.get("meta", {})
    out = ["# scoresde benchmark results", ""]
    out.append(
        f"Device: {meta.get('device_description', meta.get('device'))}; torch {meta.get('torch')}, "
        f"scoresde {meta.get('scoresde')}, numpy {meta.get('numpy')}, python {meta.get('python')}; "
        f"profile {meta.get('profile')}; {meta.get('date')}; total {meta.get('total_seconds')} s."
    )
    out += ["", "## Targets", ""]
    out.append(
        rows_to_markdown(targets(results), [("target", "target"), ("measured", "measured"), ("status", "status")])
    )
    out += ["", "## Solver overhead", ""]
    ov = results.get("solver_overhead")
    out.append(_status(ov) or overhead_markdown(ov))
    out += ["", "## Quality against NFE", ""]
    q = results.get("quality_vs_nfe")
    if plot_name and isinstance(q, list):
        out += [f"![quality against NFE]({plot_name})", ""]
    out.append(_status(q) or quality_markdown(q))
    out += ["", "## Likelihood", ""]
    out.append(likelihood_markdown(results.get("likelihood")))
    out += ["", "## Likelihood against the scipy round-trip loop", ""]
    out.append(dict_markdown(results.get("likelihood_vs_scipy_roundtrip")))
    out += ["", "## Training", ""]
    out.append(dict_markdown(results.get("training")))
    out += ["", "## Peers", ""]
    out.append(peers_markdown(results.get("peers")))
    out += ["", "## Few-step quality", ""]
    fs = results.get("fewstep")
    if fewstep_plot_name and isinstance(fs, dict):
        out += [f"![few-step quality]({fewstep_plot_name})", ""]
    out.append(_status(fs) or fewstep_markdown(fs))
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- plot
#: Plot limits; values beyond them are drawn on the edge (a diverged run would flatten the rest).
SW2_MAX, DLOGP_MIN, DLOGP_MAX = 3.0, -300.0, 30.0


def plot_quality(rows: List[Dict[str, Any]], path: Path) -> bool:
    """SW2 and dlogp against NFE, one column per (problem, SDE); returns False without matplotlib.

    Adaptive runs (dopri5 at several tolerances) form one line per panel. SW2 above
    :data:`SW2_MAX` and dlogp outside ``[DLOGP_MIN, DLOGP_MAX]`` are drawn on the axis edge.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rows = [r for r in rows if r.get("sw2") is not None and "error" not in r and r.get("nfe")]
    groups = list(dict.fromkeys((r["problem"], r["sde"]) for r in rows))
    if not groups:
        return False
    solvers = list(dict.fromkeys(r["solver"].split("(")[0] for r in rows))
    cmap = plt.get_cmap("tab20")
    colors = {s: cmap(i % 20) for i, s in enumerate(solvers)}
    markers = "os^vD<>pPX*h"
    fig, axes = plt.subplots(2, len(groups), figsize=(5.2 * len(groups), 8), squeeze=False)
    legend: Dict[str, Any] = {}
    for j, (problem, sde) in enumerate(groups):
        grp = [r for r in rows if r["problem"] == problem and r["sde"] == sde]
        ax_w, ax_l = axes[0, j], axes[1, j]
        for i, s in enumerate(solvers):
            pts = sorted((r["nfe"], r["sw2"], r["dlogp"]) for r in grp if r["solver"].split("(")[0] == s)
            if not pts:
                continue
            n, w, d = zip(*pts)
            w = [min(v, SW2_MAX) for v in w]
            d = [min(max(v, DLOGP_MIN), DLOGP_MAX) for v in d]
            style = dict(color=colors[s], marker=markers[i % len(markers)], ms=4, lw=1.2, label=s)
            legend[s] = ax_w.plot(n, w, **style)[0]
            ax_l.plot(n, d, **style)
        floor = next((r["sw2_floor"] for r in grp if r.get("sw2_floor")), None)
        if floor:
            legend["exact samples (SW2 floor)"] = ax_w.axhline(floor, color="k", ls="--", lw=0.8)
        ax_l.axhline(0.0, color="k", ls="--", lw=0.8)
        ax_w.set(xscale="log", yscale="log", title=f"{problem}, {sde.upper()} SDE", xlabel="NFE", ylabel="sliced W2")
        ax_w.set_ylim(top=SW2_MAX * 1.2)
        ax_l.set_yscale("symlog", linthresh=0.1)
        ax_l.set(xscale="log", xlabel="NFE", ylabel="dlogp = mean log p(x) - E log p")
        ax_l.set_ylim(DLOGP_MIN * 1.5, DLOGP_MAX * 1.5)
        for ax in (ax_w, ax_l):
            ax.grid(True, which="both", alpha=0.3)
    fig.legend(
        list(legend.values()), list(legend), loc="lower center", ncol=min(7, len(legend)), fontsize=8, frameon=False
    )
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_fewstep(rows: List[Dict[str, Any]], path: Path) -> bool:
    """SW2 (top) and dlogp (bottom) against NFE of our best and the peers' best, one column per (problem, SDE).

    Error bars are standard errors over seeds; returns False without matplotlib or rows.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rows = [r for r in rows if r.get("ours_sw2") is not None]
    groups = list(dict.fromkeys((r["problem"], r["sde"]) for r in rows))
    if not groups:
        return False
    lines = (
        ("ours", "scoresde best", "C0", "o", "-"),
        ("ours_nogits", "scoresde best, built-in grids only", "C2", "s", ":"),
        ("peer", "best peer (diffusers / paper transcriptions)", "C3", "^", "--"),
    )
    fig, axes = plt.subplots(2, len(groups), figsize=(3.6 * len(groups), 6.4), squeeze=False)
    handles: Dict[str, Any] = {}
    for j, (problem, sde) in enumerate(groups):
        grp = sorted((r for r in rows if r["problem"] == problem and r["sde"] == sde), key=lambda r: r["nfe"])
        ax_w, ax_l = axes[0, j], axes[1, j]
        for key, label, color, marker, ls in lines:
            pts = [r for r in grp if r.get(f"{key}_sw2") is not None]
            if not pts:
                continue
            n = [r["nfe"] for r in pts]
            style = dict(color=color, marker=marker, ms=4, lw=1.2, ls=ls, capsize=2)
            handles[label] = ax_w.errorbar(
                n, [r[f"{key}_sw2"] for r in pts], yerr=[r.get(f"{key}_sw2_se") or 0 for r in pts], **style
            )
            d = [min(max(r[f"{key}_dlogp"], DLOGP_MIN), DLOGP_MAX) for r in pts]
            ax_l.errorbar(n, d, yerr=[r.get(f"{key}_dlogp_se") or 0 for r in pts], **style)
        floor = next((r["sw2_floor"] for r in grp if r.get("sw2_floor")), None)
        if floor:
            handles["exact samples (SW2 floor)"] = ax_w.axhline(floor, color="k", ls="--", lw=0.8)
        ax_l.axhline(0.0, color="k", ls="--", lw=0.8)
        ax_w.set(yscale="log", title=f"{problem}, {sde.upper()}", xlabel="NFE", ylabel="sliced W2")
        ax_l.set_yscale("symlog", linthresh=1.0)
        ax_l.set(xlabel="NFE", ylabel="dlogp")
        for ax in (ax_w, ax_l):
            ax.set_xticks(sorted({r["nfe"] for r in grp}))
            ax.grid(True, which="both", alpha=0.3)
    fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=2, fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0.09, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


# --------------------------------------------------------------------------- CLI
def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description="Run the scoresde benchmark suite.")
    parser.add_argument(
        "--quick", action="store_true", help="the quick profile (under 10 minutes on 2 CPU cores with --threads 1)"
    )
    parser.add_argument(
        "--profile",
        choices=("smoke", "quick", "full"),
        default=None,
        help="explicit size profile (overrides --quick; 'smoke' is for tests)",
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--out", default="results.json", help="JSON output path; .md and .png go next to it")
    parser.add_argument("--sections", default=None, help=f"comma-separated subset of: {', '.join(SECTIONS)}")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: torch's default; 1 on a machine shared with other work)",
    )
    args = parser.parse_args(argv)

    try:
        check_device(args.device)
    except ValueError as e:
        parser.error(str(e))
    if args.threads is not None:
        if args.threads < 1:
            parser.error("--threads must be >= 1")
        torch.set_num_threads(args.threads)
    profile = args.profile or ("quick" if args.quick else "full")
    sections = [s.strip() for s in args.sections.split(",") if s.strip()] if args.sections else None
    if sections is not None:
        unknown = [s for s in sections if s not in SECTIONS]
        if unknown:
            parser.error(f"unknown sections {unknown}; valid sections: {', '.join(SECTIONS)}")

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    results = clean_json(run_all(args.device, profile, sections, log=lambda m: print(m, file=sys.stderr)))
    out.write_text(json.dumps(results, indent=1) + "\n")
    plot_path = out.parent / f"{out.stem}-quality_vs_nfe.png"
    has_plot = isinstance(results.get("quality_vs_nfe"), list) and plot_quality(results["quality_vs_nfe"], plot_path)
    fs_path = out.parent / f"{out.stem}-fewstep.png"
    has_fs = isinstance(results.get("fewstep"), dict) and plot_fewstep(results["fewstep"].get("rows", []), fs_path)
    out.with_suffix(".md").write_text(
        to_markdown(results, plot_path.name if has_plot else None, fs_path.name if has_fs else None)
    )
    plots = [str(p) for p, ok in ((plot_path, has_plot), (fs_path, has_fs)) if ok]
    print(f"wrote {out}, {out.with_suffix('.md')}" + "".join(f", {p}" for p in plots))
    return 0


if __name__ == "__main__":
    sys.exit(main())
