"""MNIST with the ``cpu`` preset: wall time, test bits/dim, and the sample quality of two solvers.

Reads a finished (or interrupted) training run of ``scoresde train --data mnist --preset cpu`` and a
classifier file (``scoresde classifier``), then measures:

* training: steps, wall seconds (from the run's log) and, when given, the CPU seconds of the
  training process (``--time-log``: the output of ``/usr/bin/time -v``), so that a run slowed by
  other processes on a shared machine can still be put in terms of an idle 2-core machine;
* the classifier's own figures on real test images (the ceiling of the confident fraction and the
  floor of the Fréchet LeNet distance at this sample size: 1,000 test images against the other 9,000);
* for each solver: ``--num`` samples (default 1,000), their Fréchet LeNet distance, the share
  classified with confidence >= 0.9, the smallest class share, NFE and seconds; ``NAME:STEPS:W``
  samples a class-conditional run (``--conditional``) with classifier-free guidance of weight ``W``,
  the ten digits in turn (:func:`scoresde.evaluate.draw_class_samples`);
* test bits/dim (Hutchinson, dopri5 at rtol = atol = 1e-5, uniform dequantization) with its standard error.

Writes ``OUT.json``, ``OUT.md`` and ``OUT-samples.png`` (the first 100 samples of the first solver).

    python benchmarks/mnist_cpu.py --run runs/mnist-cpu --classifier runs/mnist-cpu/classifier.pt \\
        --solvers ddim:50 ancestral:50 --out benchmarks/results/mnist-cpu
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path
from typing import Dict, List, Optional

import torch

from scoresde.checkpoint import load_checkpoint, load_model
from scoresde.data import get_dataset
from scoresde.evaluate import dataset_likelihood, draw_class_samples, draw_samples
from scoresde.guidance import classifier_free
from scoresde.metrics import feature_statistics, load_quality_classifier, reference_statistics, sample_quality
from scoresde.plotting import save_samples_figure


def cpu_seconds(time_log: Optional[str]) -> Optional[Dict[str, float]]:
    """User and system CPU seconds and wall time from a ``/usr/bin/time -v`` log, if given."""
    if not time_log or not Path(time_log).is_file():
        return None
    text = Path(time_log).read_text()
    out = {}
    for key, pat in (("user_s", r"User time \(seconds\): ([\d.]+)"), ("system_s", r"System time \(seconds\): ([\d.]+)")):
        m = re.search(pat, text)
        if m:
            out[key] = float(m.group(1))
    m = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", text)
    if m:
        parts = [float(p) for p in m.group(1).split(":")]
        out["wall_s"] = sum(p * 60**i for i, p in enumerate(reversed(parts)))
    return out or None


#: U-Net variants timed by ``--throughput`` (the first is the cpu preset's).
VARIANTS = [
    dict(channels=16, channel_mults=[1, 2, 2], num_res_blocks=1, dropout=0.0),
    dict(channels=24, channel_mults=[1, 2, 2], num_res_blocks=1, dropout=0.0),
    dict(channels=32, channel_mults=[1, 2, 2], num_res_blocks=1, dropout=0.0),
    dict(channels=32, channel_mults=[1, 2], num_res_blocks=1, dropout=0.0, attn_resolutions=[]),
]


def throughput(batches=(64, 128), repeats: int = 4) -> List[Dict]:
    """Seconds per training step (forward, backward, Adam) of each U-Net variant on random 1x28x28 images."""
    from scoresde.nets import UNet

    rows = []
    for kw in VARIANTS:
        net = UNet(**kw)
        opt = torch.optim.Adam(net.parameters(), 1e-3)
        for b in batches:
            x, t = torch.randn(b, 1, 28, 28), torch.rand(b)
            times = []
            for i in range(repeats + 2):
                t0 = time.perf_counter()
                loss = net(x, t).pow(2).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                if i >= 2:  # two warm-up steps
                    times.append(time.perf_counter() - t0)
            rows.append({"net": kw, "parameters": sum(q.numel() for q in net.parameters()), "batch": b,
                         "seconds_per_step": sum(times) / len(times)})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def judge(path: str, test, num: int) -> Dict:
    """A classifier, the feature statistics of the test set, and its own figures on real digits and on noise."""
    clf = load_quality_classifier(path)
    ref = reference_statistics(clf, test.data)
    # the classifier on real digits: `num` test images against the others
    real = sample_quality(clf, test.data[:num], feature_statistics(clf.features(test.data[num:])))
    # ... and on images that are not digits: uniform noise in [-1, 1] and Gaussian noise clipped to it
    g = torch.Generator().manual_seed(0)
    noise = {"uniform": torch.rand(num, 1, 28, 28, generator=g) * 2 - 1,
             "gaussian": torch.randn(num, 1, 28, 28, generator=g).clamp(-1, 1)}
    fooled = {k: sample_quality(clf, v, ref).confident_fraction for k, v in noise.items()}  # as a digit, reject class excluded
    figures = {"file": str(path), "epochs": clf.info.get("epochs"), "test_accuracy": clf.test_accuracy,
               "real_confident_fraction": real.confident_fraction, "real_min_class_fraction": real.min_class_fraction,
               "real_fld": real.fld, "noise_confident_fraction": fooled}
    return {"classifier": clf, "reference": ref, "figures": figures}


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--throughput", action="store_true", help="only time a training step of U-Net variants")
    p.add_argument("--run", help="the training run folder")
    p.add_argument("--classifier", nargs="+", help="the MNIST classifier file; further files are reported as second judges")
    p.add_argument("--data-dir", help="MNIST folder (default: the run's, then SCORESDE_DATA)")
    p.add_argument("--solvers", nargs="*", default=["ddim:50", "ancestral:50"],
                   help="NAME:STEPS of each solver (none: bits/dim only); NAME:STEPS:W for a class-conditional run: "
                   "classifier-free guidance of weight W, the ten digits in turn")
    p.add_argument("--num", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--likelihood-num", type=int, default=16)
    p.add_argument("--time-log", help="/usr/bin/time -v output of the training process")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="benchmarks/results/mnist-cpu")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.throughput:
        throughput()
        return 0
    if not (args.run and args.classifier):
        p.error("--run and --classifier are required (or --throughput)")

    sde, score, cfg = load_model(args.run)
    data_dir = args.data_dir or cfg.data_dir
    log = [json.loads(line) for line in Path(args.run, "log.jsonl").read_text().splitlines()]
    steps = load_checkpoint(args.run)["step"]
    train_log = [r for r in log if "loss" in r and "event" not in r]
    result: Dict = {
        "config": {k: getattr(cfg, k) for k in ("net_kwargs", "batch_size", "lr", "lr_schedule", "ema_decay", "weighting", "steps",
                                                "conditional", "p_uncond")},
        "parameters": sum(q.numel() for q in score.parameters()),
        "training": {"steps_done": steps, "steps_planned": cfg.steps,
                     "wall_s_logged": train_log[-1]["time"] if train_log else None,
                     "process": cpu_seconds(args.time_log)},
        "threads": args.threads,
    }
    test = get_dataset("mnist", data_dir=data_dir, split="test")
    judges = [judge(path, test, args.num) for path in args.classifier]
    clf, ref = judges[0]["classifier"], judges[0]["reference"]
    result["classifier"] = judges[0]["figures"]
    result["other_classifiers"] = [j["figures"] for j in judges[1:]]
    result["solvers"] = []
    first = None
    for spec in args.solvers:
        name, steps_s, *guide = spec.split(":")
        gen = torch.Generator().manual_seed(0)
        options = dict(solver=name, steps=int(steps_s), batch_size=args.batch_size, generator=gen, desc=f"sample ({spec})")
        if guide:  # NAME:STEPS:W, classifier-free guidance of weight W, the ten digits in turn
            if not score.is_conditional:
                p.error(f"{spec}: guidance needs a class-conditional run (train with --conditional)")
            w = float(guide[0])
            drawn = draw_class_samples(sde, lambda k: classifier_free(score, k, w), args.num, 10, cfg.event_shape, **options)
            batches = sum(-(-len(range(k, args.num, 10)) // args.batch_size) for k in range(10))
        else:
            w = None
            drawn = draw_samples(sde, score, args.num, cfg.event_shape, **options)
            batches = -(-args.num // args.batch_size)
        q = sample_quality(clf, drawn.samples, ref)
        row = {"solver": name, "steps": int(steps_s), "guidance": w, "nfe": drawn.nfe // batches,
               "seconds": round(drawn.seconds, 1), **q.to_dict()}
        if w is not None:  # do the samples show the digit they were drawn for? (sample i is of class i mod 10)
            with torch.no_grad():
                pred = clf.probabilities(drawn.samples).argmax(-1)
            row["label_agreement"] = float((pred == torch.arange(args.num) % 10).double().mean())
        row["other_classifiers"] = [sample_quality(j["classifier"], drawn.samples, j["reference"]).to_dict() for j in judges[1:]]
        print(json.dumps(row), flush=True)
        result["solvers"].append(row)
        first = drawn.samples if first is None else first
    if args.likelihood_num:
        t0 = time.perf_counter()
        lik = dataset_likelihood(sde, score, test.data[: args.likelihood_num], levels=256, data_range=(-1.0, 1.0),
                                 trace="hutchinson", rtol=1e-5, atol=1e-5, batch_size=args.likelihood_num,
                                 generator=torch.Generator().manual_seed(0), desc="test bits/dim")
        result["likelihood"] = {**lik.summary(), "seconds": round(time.perf_counter() - t0, 1), "rtol": 1e-5}
        print(json.dumps(result["likelihood"]), flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    if result["solvers"]:
        best = result["solvers"][0]
        save_samples_figure(first[:100], out.with_name(out.name + "-samples.png"),
                            title=f"cpu preset, {steps} steps: {best['solver']}, {best['nfe']} NFE"
                            + ("" if best.get("guidance") is None else f", guidance w = {best['guidance']:g}") + ", "
                            f"{100 * best['confident_fraction']:.0f}% recognised", data_range=(-1.0, 1.0))
    out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    return 0


def markdown(r: Dict) -> str:
    tr = r["training"]
    proc = tr.get("process") or {}
    lines = [
        f"Model: U-Net {r['config']['net_kwargs'].get('channels')} channels, {r['parameters'] / 1e6:.2f}M parameters, "
        f"batch {r['config']['batch_size']}, lr {r['config']['lr']} ({r['config'].get('lr_schedule', 'constant')}), EMA {r['config']['ema_decay']}, {r['config']['weighting']} weighting"
        + (f", class-conditional with label dropout {r['config']['p_uncond']:g}" if r['config'].get('conditional') else "") + ".",
        f"Training: {tr['steps_done']} of {tr['steps_planned']} steps, {tr['wall_s_logged'] or float('nan'):.0f} s wall"
        + (f", {proc.get('user_s', 0) + proc.get('system_s', 0):.0f} CPU s" if proc else "") + ".",
        _judge_line("Classifier", r["classifier"]),
        "",
    ]
    lines += _quality_table(r["solvers"])
    for i, other in enumerate(r.get("other_classifiers") or []):
        lines += ["", _judge_line("Second classifier", other), ""]
        lines += _quality_table([{**{k: v for k, v in s.items() if k != "label_agreement"}, **s["other_classifiers"][i]}
                                 for s in r["solvers"]])
    if "likelihood" in r:
        lk = r["likelihood"]
        lines += ["", f"Test bits/dim ({lk['num']} images, Hutchinson, dopri5 at rtol = atol = 1e-5): "
                  f"{lk['bits_per_dim']:.3f} +- {lk['bits_per_dim_stderr']:.3f} (NFE {lk['nfe']}, {lk['seconds']:.0f} s)."]
    return "\n".join(lines) + "\n"


def _judge_line(what: str, c: Dict) -> str:
    return (f"{what} ({c.get('epochs')} epochs): test accuracy {100 * c['test_accuracy']:.2f}%; on 1,000 real test images "
            f"{100 * c['real_confident_fraction']:.1f}% confident, smallest class "
            f"{100 * c['real_min_class_fraction']:.1f}%, FLD {c['real_fld']:.2f} (the floor); "
            f"confident on noise images: {100 * c['noise_confident_fraction']['uniform']:.1f}% (uniform), "
            f"{100 * c['noise_confident_fraction']['gaussian']:.1f}% (Gaussian).")


def _quality_table(rows: List[Dict]) -> List[str]:
    lines = ["| solver | steps | guidance | samples | NFE per sample | seconds | FLD | confident >= 0.9 | smallest class | rejected |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for s in rows:
        w = s.get("guidance")
        guide = "none" if w is None else f"w = {w:g} (2 network calls per NFE)"
        if "label_agreement" in s:
            guide += f", {100 * s['label_agreement']:.1f}% classified as their label"
        lines.append(f"| {s['solver']} | {s['steps']} | {guide} | {s['n']} | {s['nfe']} | {s['seconds']:.0f} | {s['fld']:.2f} | "
                     f"{100 * s['confident_fraction']:.1f}% | {100 * s['min_class_fraction']:.1f}% | "
                     f"{100 * s['reject_fraction']:.1f}% |")
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
