"""Cost of per-sample seeds against one shared generator, on a U-Net.

For each stochastic solver, one run draws all noise from a ``torch.Generator`` and one from per-sample
seeds (:class:`scoresde.noise.SeededNoise`: a counter-based hash per element, plus one
``torchsde.BrownianInterval`` per sample for ``torchsde``). The two are timed alternately in the same
process, ``repeats`` times; the ratio is the median (and the range) over repeats of
``time(seeds) / time(generator)``. The target is <= 1.10.

    python benchmarks/seeds_bench.py --device cpu --out benchmarks/results/cpu-seeds.json
    python benchmarks/seeds_bench.py --device cuda --batch 64 --channels 64 --out benchmarks/results/gpu-seeds.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

import scoresde
from scoresde.nets import UNet
from scoresde.noise import SeededNoise

from common import synchronize

SOLVERS = {
    "euler_maruyama": dict(),
    "ancestral": dict(),
    "pc": dict(),
    "ddim_eta1": dict(solver="ddim", eta=1.0),
    "torchsde": dict(),
}


def run(device: str = "cpu", batch: int = 16, image: int = 32, channels: int = 32, steps: int = 10, repeats: int = 5,
        solvers=tuple(SOLVERS)) -> dict:
    dev = torch.device(device)
    torch.manual_seed(0)
    net = UNet(in_channels=3, image_size=image, channels=channels, channel_mults=(1, 2, 2), num_res_blocks=1, dropout=0.0)
    with torch.no_grad():
        net.conv_out.weight.normal_(0, 0.05)
    net = net.to(dev).eval()
    sde = scoresde.VPSDE()
    score = scoresde.NetworkScore(net, sde, "eps")
    shape = (batch, 3, image, image)
    rows = []
    for name in solvers:
        opts = dict(SOLVERS[name])
        solver = opts.pop("solver", name)

        def once(seeded: bool) -> float:
            kw = dict(seeds=range(batch)) if seeded else dict(generator=torch.Generator(device=dev).manual_seed(0))
            synchronize(dev)
            t0 = time.perf_counter()
            scoresde.solve(sde, score, shape, solver, steps=steps, device=dev, **kw, **opts)
            synchronize(dev)
            return time.perf_counter() - t0

        once(False), once(True)  # warm-up
        ratios, t_gen, t_seed = [], [], []
        for _ in range(repeats):
            g, s = once(False), once(True)
            t_gen.append(g)
            t_seed.append(s)
            ratios.append(s / g)
        row = dict(solver=name, ratio_median=statistics.median(ratios), ratio_min=min(ratios), ratio_max=max(ratios),
                   seconds_generator=statistics.median(t_gen), seconds_seeds=statistics.median(t_seed),
                   batch=batch, image=image, channels=channels, steps=steps, repeats=repeats, device=str(dev))
        rows.append(row)
        print(f"{name:16s} seeds/generator = {row['ratio_median']:.3f} (range {row['ratio_min']:.3f}-{row['ratio_max']:.3f}); "
              f"{row['seconds_generator']:.2f} s vs {row['seconds_seeds']:.2f} s", flush=True)
    return dict(rows=rows, torch=torch.__version__, device=str(dev),
                device_name=torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
                threads=torch.get_num_threads())


def micro(device: str = "cpu", batch: int = 16, image: int = 32, channels: int = 32, repeats: int = 20) -> dict:
    """Robust to machine load: the fastest of ``repeats`` timings of one noise draw (seeded, generator) and of
    one bare U-Net evaluation, and the implied upper bound on the seeds' overhead per step."""
    dev = torch.device(device)
    torch.manual_seed(0)
    net = UNet(in_channels=3, image_size=image, channels=channels, channel_mults=(1, 2, 2), num_res_blocks=1, dropout=0.0)
    net = net.to(dev).eval()
    score = scoresde.NetworkScore(net, scoresde.VPSDE(), "eps")
    x = torch.zeros(batch, 3, image, image, device=dev)
    t = torch.full((batch,), 0.5, device=dev)
    gen = torch.Generator(device=dev).manual_seed(0)

    def best(fn) -> float:
        times = []
        for _ in range(repeats):
            synchronize(dev)
            t0 = time.perf_counter()
            fn()
            synchronize(dev)
            times.append(time.perf_counter() - t0)
        return min(times)

    with torch.no_grad():
        seeded = SeededNoise(range(batch))
        ms_seeds = best(lambda: seeded.randn_like(x)) * 1e3
        ms_gen = best(lambda: torch.randn(x.shape, generator=gen, device=dev)) * 1e3
        ms_eval = best(lambda: score(x, t)) * 1e3
    return dict(noise_ms_seeds=ms_seeds, noise_ms_generator=ms_gen, eval_ms=ms_eval,
                bound_per_step=(ms_eval + ms_seeds) / (ms_eval + ms_gen), batch=batch, image=image, channels=channels)


def markdown(res: dict) -> str:
    """The result as a markdown table."""
    lines = [f"# Per-sample seeds against a shared generator ({res['device_name']}, torch {res['torch']}, "
             f"{res['threads']} thread(s))", "",
             "| solver | seeds / generator (median) | range | generator s | seeds s | batch | image | channels | steps | repeats |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        lines.append(f"| {r['solver']} | {r['ratio_median']:.3f} | {r['ratio_min']:.3f}-{r['ratio_max']:.3f} | "
                     f"{r['seconds_generator']:.2f} | {r['seconds_seeds']:.2f} | {r['batch']} | 3x{r['image']}x{r['image']} | "
                     f"{r['channels']} | {r['steps']} | {r['repeats']} |")
    if "micro" in res:
        m = res["micro"]
        lines += ["", f"Fastest of 20 (robust to load): one noise draw {m['noise_ms_seeds']:.2f} ms seeded vs "
                  f"{m['noise_ms_generator']:.2f} ms generator; one bare U-Net evaluation {m['eval_ms']:.1f} ms "
                  f"(batch {m['batch']}); per step of a one-draw solver: {m['bound_per_step']:.3f}x."]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--image", type=int, default=32)
    p.add_argument("--channels", type=int, default=32)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--solvers", default=",".join(SOLVERS))
    p.add_argument("--out", help="FILE.json (and FILE.md beside it)")
    p.add_argument("--report", help="only rewrite the markdown of this JSON result")
    p.add_argument("--micro", action="store_true", help="with --report: add the load-robust per-draw timings")
    args = p.parse_args()
    if args.report:
        res = json.loads(Path(args.report).read_text())
        if args.micro:
            torch.set_num_threads(args.threads)
            res["micro"] = micro(args.device, args.batch, args.image, args.channels)
            Path(args.report).write_text(json.dumps(res, indent=1))
        Path(args.report).with_suffix(".md").write_text(markdown(res))
        return
    torch.set_num_threads(args.threads)
    res = run(args.device, args.batch, args.image, args.channels, args.steps, args.repeats, tuple(args.solvers.split(",")))
    res["micro"] = micro(args.device, args.batch, args.image, args.channels)
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=1))
        Path(args.out).with_suffix(".md").write_text(markdown(res))


if __name__ == "__main__":
    main()
