"""Which codes should a latent score SDE model? Means or draws of the encoder, scaled or as they are.

One VAE is trained on the data set for ``--vae-budget`` CPU seconds; then a score SDE is trained on its codes
four times, for ``--budget`` CPU seconds each (one thread), with the codes

* ``mean``: the encoder's means ``mu(x)``, or ``sample``: one draw ``z ~ q(z|x)`` per image;
* ``scaled``: multiplied by the ``s`` that gives them unit standard deviation (the scale the SDE's ``N(0, I)``
  prior expects), or ``unscaled``: as they are.

Each run is measured as in ``families.py``: the Fréchet LeNet distance, the share classified with confidence
>= 0.9 and the smallest class share of ``--samples`` decoded samples (DPM-Solver++(2M) SDE, 50 steps), and the
bits/dim bound of ``scoresde.latent`` on ``--bpd-num`` test images (with its standard error over images).

    python benchmarks/latent_codes.py --data-dir $SCORESDE_DATA --out benchmarks/results/latent-codes
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import List, Optional

import torch

from scoresde.data import get_dataset
from scoresde.metrics import reference_statistics, sample_quality

from families import bits_per_dim, classifier_for, draw, train_latent, train_vae

CHOICES = (("mean", True), ("sample", True), ("mean", False), ("sample", False))


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="mnist", choices=["mnist", "fashion-mnist"])
    p.add_argument("--data-dir", default=os.environ.get("SCORESDE_DATA"))
    p.add_argument("--vae-budget", type=float, default=300.0, help="CPU seconds of the VAE (default: 300)")
    p.add_argument("--budget", type=float, default=600.0, help="CPU seconds of each score SDE (default: 600)")
    p.add_argument("--n-train", type=int, help="training images (default: all)")
    p.add_argument("--samples", type=int, default=1000)
    p.add_argument("--bpd-num", type=int, default=32)
    p.add_argument("--steps", type=int, default=50, help="sampler steps (default: 50)")
    p.add_argument("--work", default="runs/latent-codes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="write OUT.json and OUT.md")
    args = p.parse_args(argv)
    if not args.data_dir:
        p.error("set SCORESDE_DATA or pass --data-dir (a folder holding mnist/ and fashion-mnist/)")
    torch.set_num_threads(1)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    train = get_dataset(args.dataset, data_dir=args.data_dir, split="train", n=args.n_train)
    test = get_dataset(args.dataset, data_dir=args.data_dir, split="test")
    clf = classifier_for(args.dataset, args.data_dir, work, epochs=2)
    ref = reference_statistics(clf, test.data)
    vae = train_vae(train, args.vae_budget, args.seed)
    profile = {"bpd_num": args.bpd_num}
    rows = []
    for use, scaled in CHOICES:
        tag = f"{args.dataset}-{use}-{'scaled' if scaled else 'unscaled'}"
        trained = train_latent(train, args.budget, work, args.seed, "cpu", tag, use=use, scaled=scaled, vae=vae)
        t0 = time.perf_counter()
        x = draw("latent_score_sde", trained, args.samples, args.seed, args.steps)
        per_image = (time.perf_counter() - t0) / args.samples
        q = sample_quality(clf, x, ref)
        bpd, se, _ = bits_per_dim("latent_score_sde", trained, test, profile, args.seed)
        rows.append(dict(dataset=args.dataset, codes=use, scaled=scaled, scale=trained["model"][2].scale, bpd_bound=bpd,
                         bpd_stderr=se, fld=q.fld, confident=q.confident_fraction, min_class_share=q.min_class_fraction,
                         train_steps=trained["steps"], train_seconds=round(trained["train_seconds"], 1),
                         sample_seconds_per_image=per_image))
        print(json.dumps(rows[-1]), flush=True)
    lines = [f"# Codes of a latent score SDE ({args.dataset}; VAE {args.vae_budget:.0f} CPU s, each score SDE "
             f"{args.budget:.0f} CPU s, one thread)", "",
             "| codes | scale | steps | bits/dim bound | FLD | confident >= 0.9 | smallest class |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['codes']} | {'1/std = %.3g' % r['scale'] if r['scaled'] else '1 (as they are)'} | "
                     f"{r['train_steps']} | {r['bpd_bound']:.3f} ± {r['bpd_stderr']:.3f} | {r['fld']:.2f} | "
                     f"{100 * r['confident']:.1f}% | {100 * r['min_class_share']:.1f}% |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).with_suffix(".json").write_text(json.dumps(rows, indent=1) + "\n")
        Path(args.out).with_suffix(".md").write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
