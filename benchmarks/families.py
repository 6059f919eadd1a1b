"""Score SDEs beside the classic generative families, on the same data, metric, hardware and training budget.

For each data set (MNIST, Fashion-MNIST) and each family, train for the same budget of **process CPU seconds**
(one thread each; a busy shared machine stretches the wall clock, not this budget), then measure:

* test bits/dim with its standard error: exact for the pixel-space score SDE (probability-flow ODE,
  Hutchinson) and RealNVP (change of variables), an upper bound for the VAE (ELBO) and the latent score SDE
  (``scoresde.latent``), none for the GAN;
* the Fréchet LeNet distance, the share of samples classified with confidence >= 0.9 and the smallest class
  share of ``--samples`` samples, with the quality classifier of :mod:`scoresde.metrics` (trained once per
  data set and kept in the work folder);
* sampling seconds per image (one thread).

Families: ``score_sde`` (the ``cpu`` preset's U-Net, Min-SNR, cosine decay; steps sized to the budget;
sampled with DPM-Solver++(2M) SDE, 50 steps), ``score_sde_likelihood`` (the same with the likelihood
weighting and importance-sampled times, which trade sample quality for bits/dim), ``latent_score_sde``
(a VAE for a third of the budget, then a score SDE on its codes for the rest; same sampler), ``vae``,
``realnvp`` and ``gan`` (DCGAN) from :mod:`scoresde.baselines`.

    python benchmarks/families.py --profile quick          # minutes: the machinery, tiny budgets
    python benchmarks/families.py --profile cpu            # 15 CPU-minutes per model, two data sets
    python benchmarks/families.py --profile gpu            # when a GPU is lent

Writes ``benchmarks/results/families-<profile>.{json,md,png}``; the JSON is a list of rows with ``family``,
``dataset``, ``bpd``, ``bpd_kind``, ``bpd_stderr``, ``fld``, ``confident``, ``min_class_share``,
``train_seconds`` (CPU), ``train_wall_seconds`` and ``sample_seconds_per_image``. Data come from
``--data-dir`` or ``SCORESDE_DATA``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from functools import partial
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch

from scoresde.baselines import DCGAN, ConvVAE, RealNVP, fit
from scoresde.config import TrainConfig
from scoresde.data import Dataset, get_dataset, to_levels
from scoresde.evaluate import dataset_likelihood, draw_samples
from scoresde.latent import LatentSpace, fit_code_scale
from scoresde.losses import DSMLoss
from scoresde.metrics import (
    load_quality_classifier,
    mean_and_stderr,
    reference_statistics,
    sample_quality,
    train_quality_classifier,
)
from scoresde.nets import build_network
from scoresde.sde import VPSDE
from scoresde.training import Trainer
from scoresde.training.presets import PRESETS

FAMILIES = ("score_sde", "score_sde_likelihood", "latent_score_sde", "vae", "realnvp", "gan")
#: the pixel-space score SDEs (an exact likelihood; sampled like the latent one)
PIXEL_SDES = ("score_sde", "score_sde_likelihood")

PROFILES: Dict[str, Dict[str, Any]] = {
    "quick": dict(datasets=["mnist"], budget=20.0, n_train=4000, samples=200, bpd_num=4, bpd_num_cheap=200,
                  classifier_epochs=1, device="cpu", sampler_steps=10),
    "cpu": dict(datasets=["mnist", "fashion-mnist"], budget=900.0, n_train=None, samples=1000, bpd_num=48,
                bpd_num_cheap=2000, classifier_epochs=2, device="cpu", sampler_steps=50),
    "gpu": dict(datasets=["mnist", "fashion-mnist"], budget=900.0, n_train=None, samples=1000, bpd_num=512,
                bpd_num_cheap=10000, classifier_epochs=4, device="cuda", sampler_steps=50),
}


# ---------------------------------------------------------------------- budgets
def _cpu() -> float:
    return time.process_time()


def steps_for_budget(step: Callable[[], None], budget: float, spent: float = 0.0, probes: int = 4) -> int:
    """How many calls of ``step`` (one training step) fit in ``budget`` CPU seconds, ``spent`` already used."""
    step()  # warm-up
    c0 = _cpu()
    for _ in range(probes):
        step()
    per_step = (_cpu() - c0) / probes
    return max(1, int((budget - spent - (_cpu() - c0)) / max(per_step, 1e-6)))


def _score_step(net, sde, x, batch: int) -> Callable[[], None]:
    loss = DSMLoss(sde, weighting="min_snr")
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(123)

    def step() -> None:
        with torch.random.fork_rng(devices=[]):
            value = loss(_net_score(net, sde), x[:batch], generator=g)
            opt.zero_grad(set_to_none=True)
            value.backward()
            opt.zero_grad(set_to_none=True)

    return step


def _net_score(net, sde):
    from scoresde.checkpoint import build_score_model

    return build_score_model(net, sde, "eps")


# ---------------------------------------------------------------------- families
def train_score_sde(data: Dataset, budget: float, work: Path, seed: int, device: str, tag: str, *,
                    likelihood: bool = False) -> Dict[str, Any]:
    """The ``cpu`` preset on ``data`` with its step count sized to ``budget`` CPU seconds; with ``likelihood``,
    the likelihood weighting with importance sampling of the times (Song et al. 2021) instead of Min-SNR."""
    c0, w0 = _cpu(), time.perf_counter()
    preset = dict(PRESETS["cpu"], **(dict(weighting="likelihood", importance_sampling=True) if likelihood else {}))
    net = build_network("unet", data.event_shape, **preset["net_kwargs"])
    steps = steps_for_budget(_score_step(net, VPSDE(), data.data, preset["batch_size"]), budget, 0.0)
    steps = max(5, int(steps * 0.97))  # the optimizer and EMA updates the probe leaves out
    cfg = TrainConfig(**{**{k: v for k, v in preset.items() if k not in ("p_uncond",)}, "data": data.name,
                         "steps": steps, "warmup": min(100, steps // 10), "out": str(work / f"{tag}-run"),
                         "checkpoint_every": steps, "seed": seed, "device": device})
    trainer = Trainer(cfg, dataset=data, progress=False)
    trainer.train()
    return dict(model=(trainer.sde, trainer.ema_model), steps=steps, train_seconds=_cpu() - c0,
                train_wall_seconds=time.perf_counter() - w0)


def train_vae(data: Dataset, budget: float, seed: int) -> ConvVAE:
    """A :class:`~scoresde.baselines.ConvVAE` trained on ``data`` for ``budget`` CPU seconds."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = ConvVAE(data.event_shape)
    fit(vae, data.data, budget_seconds=budget, generator=torch.Generator().manual_seed(seed))
    return vae


def train_latent(data: Dataset, budget: float, work: Path, seed: int, device: str, tag: str, *, use: str = "mean",
                 scaled: bool = True, vae: Optional[ConvVAE] = None) -> Dict[str, Any]:
    """A VAE for a third of ``budget``, then a score SDE on its codes for the rest.

    The codes are the encoder's means (``use="mean"``) or one draw from ``q(z|x)`` per image (``"sample"``),
    scaled to unit standard deviation (``scaled``) or as they are. With ``vae`` given, that autoencoder is
    used and ``budget`` is all the score SDE's.
    """
    c0, w0 = _cpu(), time.perf_counter()
    if vae is None:
        vae = train_vae(data, budget / 3, seed)
    gen = torch.Generator().manual_seed(seed + 1)
    space = LatentSpace(vae, fit_code_scale(vae, data.data[:10_000], use, gen) if scaled else 1.0, use)
    codes = Dataset(f"codes of {data.name}", space.encode(data.data, gen).cpu(), labels=data.labels)
    spent = _cpu() - c0
    net = build_network("unet", space.event_shape, channels=64, channel_mults=[1], num_res_blocks=2)
    steps = max(5, int(0.97 * steps_for_budget(_score_step(net, VPSDE(), codes.data, 64), budget, spent)))
    cfg = TrainConfig(data=data.name, net="unet", net_kwargs=dict(channels=64, channel_mults=[1], num_res_blocks=2),
                      weighting="min_snr", steps=steps, batch_size=64, lr=2e-3, warmup=min(100, steps // 10),
                      lr_schedule="cosine", ema_decay=0.999, out=str(work / f"{tag}-latent-run"), checkpoint_every=steps,
                      sample_every=-1, seed=seed, device=device)
    trainer = Trainer(cfg, dataset=codes, progress=False)
    trainer.train()
    return dict(model=(trainer.sde, trainer.ema_model, space), steps=steps, train_seconds=_cpu() - c0,
                train_wall_seconds=time.perf_counter() - w0)


def train_baseline(kind: str) -> Callable[..., Dict[str, Any]]:
    """A trainer for one of :mod:`scoresde.baselines` under a CPU budget."""

    def train(data: Dataset, budget: float, work: Path, seed: int, device: str, tag: str) -> Dict[str, Any]:
        c0, w0 = _cpu(), time.perf_counter()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = {"vae": ConvVAE, "realnvp": RealNVP, "gan": DCGAN}[kind](data.event_shape).to(device)
        res = fit(model, data.data, budget_seconds=budget, generator=torch.Generator().manual_seed(seed))
        return dict(model=model, steps=res.steps, train_seconds=_cpu() - c0, train_wall_seconds=time.perf_counter() - w0)

    return train


TRAINERS = {"score_sde": train_score_sde, "score_sde_likelihood": partial(train_score_sde, likelihood=True),
            "latent_score_sde": train_latent, "vae": train_baseline("vae"),
            "realnvp": train_baseline("realnvp"), "gan": train_baseline("gan")}


# ---------------------------------------------------------------------- measuring
def draw(family: str, trained: Dict[str, Any], n: int, seed: int, steps: int) -> torch.Tensor:
    """``n`` images in [-1, 1] from a trained model (one generator, seeded)."""
    gen = torch.Generator().manual_seed(seed)
    if family in (*PIXEL_SDES, "latent_score_sde"):
        sde, score = trained["model"][:2]
        shape = trained["model"][2].event_shape if family == "latent_score_sde" else None
        event = shape or tuple(_event_of(score))
        x = draw_samples(sde, score, n, event, solver="dpmpp_2m_sde", steps=steps, batch_size=250, generator=gen,
                         progress=False).samples
        return trained["model"][2].decode(x).cpu() if family == "latent_score_sde" else x.clamp(-1, 1)
    with torch.no_grad():
        return torch.cat([trained["model"].sample(min(250, n - i), generator=gen).cpu() for i in range(0, n, 250)])


def _event_of(score) -> tuple:
    net = score.net
    return (net.config["in_channels"], net.config["image_size"], net.config["image_size"])


def bits_per_dim(family: str, trained: Dict[str, Any], test: Dataset, profile: Dict[str, Any], seed: int):
    """``(mean, stderr, kind)`` of test bits/dim (stderr over the test images)."""
    gen = torch.Generator().manual_seed(seed)
    if family == "gan":
        return None, None, "none"
    if family in PIXEL_SDES:
        sde, score = trained["model"]
        res = dataset_likelihood(sde, score, test.data[: profile["bpd_num"]], levels=256, data_range=(-1.0, 1.0),
                                 trace="hutchinson", batch_size=16, generator=gen, progress=False,
                                 **profile.get("likelihood", dict(rtol=1e-5, atol=1e-5)))
        return (*mean_and_stderr(res.bits_per_dim), "exact")
    if family == "latent_score_sde":
        sde, score, space = trained["model"]
        opts = profile.get("likelihood", dict(rtol=1e-5, atol=1e-5))
        parts = [space.bound(test.data[i:i + 16], sde, score, n_samples=2, generator=gen, trace="hutchinson",
                             **opts).bits_per_dim for i in range(0, profile["bpd_num"], 16)]
        return (*mean_and_stderr(torch.cat(parts)), "bound")
    x = to_levels(test.data[: profile["bpd_num_cheap"]], 256, (-1.0, 1.0))
    with torch.no_grad():
        bpd = torch.cat([trained["model"].bits_per_dim(x[i:i + 500], generator=gen) for i in range(0, x.shape[0], 500)])
    return (*mean_and_stderr(bpd.double()), "bound" if family == "vae" else "exact")


def classifier_for(dataset: str, data_dir: Optional[str], work: Path, epochs: int):
    """The quality classifier of ``dataset`` (trained once and kept in ``work``)."""
    path = work / f"classifier-{dataset}.pt"
    if path.is_file():
        return load_quality_classifier(path)
    clf = train_quality_classifier(dataset, data_dir=data_dir, epochs=epochs, progress=False)
    clf.save(path)
    return clf


def run_one(family: str, dataset: str, train: Dataset, test: Dataset, clf, ref, profile, work: Path, seed: int) -> Dict:
    """Train one family on one data set under the budget and measure it."""
    torch.set_num_threads(1)
    trained = TRAINERS[family](train, profile["budget"], work, seed, profile["device"], f"{dataset}-{family}")
    t0 = time.perf_counter()
    x = draw(family, trained, profile["samples"], seed, profile["sampler_steps"])
    per_image = (time.perf_counter() - t0) / profile["samples"]
    q = sample_quality(clf, x, ref)
    bpd, se, kind = bits_per_dim(family, trained, test, profile, seed)
    torch.save(x[:100].clone(), work / f"{dataset}-{family}-samples.pt")
    return dict(family=family, dataset=dataset, bpd=bpd, bpd_kind=kind, bpd_stderr=se, fld=q.fld,
                confident=q.confident_fraction, min_class_share=q.min_class_fraction, reject_share=q.reject_fraction,
                train_seconds=round(trained["train_seconds"], 1), train_wall_seconds=round(trained["train_wall_seconds"], 1),
                train_steps=trained["steps"], sample_seconds_per_image=per_image, budget_cpu_seconds=profile["budget"],
                samples=profile["samples"])


# ---------------------------------------------------------------------- report
def markdown(rows: List[Dict[str, Any]], profile: str) -> str:
    """The results table, one block per data set."""
    budget = rows[0]["budget_cpu_seconds"] if rows else 0
    out = [f"# Score SDEs and the other families ({profile} profile)", "",
           f"Each model trained for {budget / 60:.0f} CPU-minutes (process CPU time, one thread); "
           f"{rows[0]['samples'] if rows else 0} samples each. `python benchmarks/families.py --profile {profile}`.", ""]
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        out += [f"## {dataset}", "",
                "| family | test bits/dim | kind | FLD | confident >= 0.9 | smallest class | train CPU s (steps) | "
                "sampling time per image |", "|---|---|---|---|---|---|---|---|"]
        for r in (r for r in rows if r["dataset"] == dataset):
            bpd = "—" if r["bpd"] is None else f"{r['bpd']:.3f} ± {r['bpd_stderr']:.3f}"
            out.append(f"| {r['family']} | {bpd} | {r['bpd_kind']} | {r['fld']:.1f} | {100 * r['confident']:.1f}% | "
                       f"{100 * r['min_class_share']:.1f}% | {r['train_seconds']:.0f} ({r['train_steps']}) | "
                       f"{r['sample_seconds_per_image'] * 1e3:.2f} ms |")
        out.append("")
    return "\n".join(out)


def figure(rows: List[Dict[str, Any]], work: Path, path: Path) -> None:
    """A grid of 16 samples per family (rows) and data set (columns)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from scoresde.plotting import image_grid

    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    families = [f for f in FAMILIES if any(r["family"] == f for r in rows)]
    fig, axes = plt.subplots(len(families), len(datasets), figsize=(2.4 * len(datasets), 2.5 * len(families)),
                             squeeze=False, constrained_layout=True)
    for i, fam in enumerate(families):
        for j, ds in enumerate(datasets):
            ax = axes[i][j]
            ax.axis("off")
            f = work / f"{ds}-{fam}-samples.pt"
            if f.is_file():
                ax.imshow(image_grid(torch.load(f, weights_only=True)[:16], nrow=4), cmap="gray", vmin=0, vmax=1)
            ax.set_title(f"{fam}\n{ds}", fontsize=8)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--profile", choices=sorted(PROFILES), default="quick")
    p.add_argument("--datasets", nargs="*", help="a subset of the profile's data sets (run two processes, one each)")
    p.add_argument("--families", nargs="*", choices=FAMILIES, help="a subset of the families")
    p.add_argument("--data-dir", default=os.environ.get("SCORESDE_DATA"))
    p.add_argument("--work", default="runs/families", help="folder of the trained models, rows and samples")
    p.add_argument("--out", default="benchmarks/results", help="folder of families-<profile>.{json,md,png}")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--report", action="store_true", help="only collect the rows in --work into the report")
    args = p.parse_args(argv)
    profile = PROFILES[args.profile]
    work = Path(args.work) / args.profile
    work.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    if not args.report:
        if not args.data_dir:
            p.error("set SCORESDE_DATA or pass --data-dir (a folder holding mnist/ and fashion-mnist/)")
        for dataset in args.datasets or profile["datasets"]:
            train = get_dataset(dataset, data_dir=args.data_dir, split="train", n=profile["n_train"])
            test = get_dataset(dataset, data_dir=args.data_dir, split="test")
            clf = classifier_for(dataset, args.data_dir, work, profile["classifier_epochs"])
            ref = reference_statistics(clf, test.data)
            for family in args.families or FAMILIES:
                print(f"[{time.strftime('%H:%M:%S')}] {dataset} / {family}: training for {profile['budget']:.0f} CPU s",
                      flush=True)
                row = run_one(family, dataset, train, test, clf, ref, profile, work, args.seed)
                (work / f"{dataset}-{family}.json").write_text(json.dumps(row, indent=1))
                print(json.dumps(row), flush=True)
    rows = [json.loads(f.read_text()) for f in sorted(work.glob("*.json"))]
    order = {f: i for i, f in enumerate(FAMILIES)}
    rows.sort(key=lambda r: (r["dataset"], order[r["family"]]))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"families-{args.profile}"
    clean = [{k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in r.items()} for r in rows]
    stem.with_suffix(".json").write_text(json.dumps(clean, indent=1) + "\n")
    stem.with_suffix(".md").write_text(markdown(rows, args.profile) + "\n")
    if rows:
        figure(rows, work, stem.with_suffix(".png"))
    print(f"wrote {stem}.json, .md, .png ({len(rows)} rows)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
