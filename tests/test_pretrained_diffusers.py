"""Importing diffusers pipeline folders: sampling equal to diffusers' own scheduler loops, and refusals.

Tiny ``UNet2DModel`` s with perturbed random weights are saved as pipeline folders in temporary
directories; diffusers' scheduler loops (written out as the pipelines' ``__call__`` runs them, without
the final clamp to the image range) and scoresde's samplers then start from the same noise and draw the
same noise: both draw from a ``torch.Generator`` seeded alike, in the same order, shapes and dtype, so
that equal results also show that the draws line up.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path

import pytest
import torch

diffusers = pytest.importorskip("diffusers")
from diffusers import (  # noqa: E402
    CMStochasticIterativeScheduler,
    DDIMPipeline,
    DDIMScheduler,
    DDPMPipeline,
    DDPMScheduler,
    ScoreSdeVePipeline,
    ScoreSdeVeScheduler,
    UNet2DModel,
)
from diffusers.utils.torch_utils import randn_tensor  # noqa: E402

import scoresde  # noqa: E402
from scoresde.errors import CheckpointError, OptionError, ScoreSDEError  # noqa: E402
from scoresde.noise import GeneratorNoise  # noqa: E402
from scoresde.pretrained import DiffusersScore, PretrainedModel, from_diffusers  # noqa: E402
from scoresde.sde import VESDE, DiscreteVPSDE  # noqa: E402
from scoresde.solvers.base import CountedScore, SolveContext  # noqa: E402
from scoresde.solvers.langevin import langevin_correct  # noqa: E402

B, SHAPE = 2, (2, 3, 8, 8)
TOL = 1e-5  # max |difference| relative to the max |value| of diffusers' samples


def _tiny_unet(seed: int, **overrides) -> UNet2DModel:
    kw = dict(sample_size=8, in_channels=3, out_channels=3, block_out_channels=(16, 32), layers_per_block=1,
              norm_num_groups=8, attention_head_dim=8, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
              up_block_types=("AttnUpBlock2D", "UpBlock2D"))
    kw.update(overrides)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DModel(**kw)
        with torch.no_grad():  # move every weight away from its initialisation (zero-initialised layers included)
            for p in unet.parameters():
                p.add_(0.05 * torch.randn_like(p))
    return unet.eval()


def _ve_unet(seed: int) -> UNet2DModel:
    return _tiny_unet(seed, block_out_channels=(32, 32), time_embedding_type="fourier", mid_block_scale_factor=math.sqrt(2),
                      norm_eps=1e-6, down_block_types=("SkipDownBlock2D", "AttnSkipDownBlock2D"),
                      up_block_types=("AttnSkipUpBlock2D", "SkipUpBlock2D"))


@pytest.fixture(scope="module")
def unet():
    return _tiny_unet(0)


@pytest.fixture(scope="module")
def ddim_folder(unet, tmp_path_factory):
    folder = tmp_path_factory.mktemp("ddim") / "pipe"
    DDIMPipeline(unet=unet, scheduler=DDIMScheduler(beta_schedule="linear", clip_sample=False)).save_pretrained(folder)
    return folder


def _rel(a: torch.Tensor, ref: torch.Tensor) -> float:
    return float((a.double() - ref.double()).abs().max() / ref.double().abs().max())


def _diffusers_ddim(unet, scheduler, x_T, steps=10):
    """``DDIMPipeline.__call__``'s loop (eta = 0) from ``x_T``, without the final ``(x / 2 + 0.5).clamp(0, 1)``."""
    x = x_T.clone()
    scheduler.set_timesteps(steps)
    with torch.no_grad():
        for t in scheduler.timesteps:
            x = scheduler.step(unet(x, t).sample, t, x, eta=0.0).prev_sample
    return x


def _scoresde_ddim(model, scheduler, x_T):
    """scoresde's DDIM on the times of the scheduler's timesteps.

    diffusers' last step goes from timestep ``timesteps[-1]`` to ``final_alpha_cumprod``: with
    ``set_alpha_to_one=False`` that is ``alphas_cumprod[0]``, the level of ``timesteps[-1] = 0`` itself (a step
    that changes nothing), so the grid ends at ``timesteps[-1]``; with ``set_alpha_to_one=True`` it is
    ``abar = 1``, clean data, which is the final Tweedie denoising step ``x0_hat`` at that time.
    """
    times = model.sde.time_at_timestep(scheduler.timesteps)
    denoise = bool(scheduler.final_alpha_cumprod == 1.0)
    assert denoise or bool(scheduler.final_alpha_cumprod == scheduler.alphas_cumprod[int(scheduler.timesteps[-1])])
    return scoresde.solve(model.sde, model.score_fn, None, "ddim", grid=times, x_init=x_T, denoise=denoise).samples


# ---------------------------------------------------------------------------- DDIM / DDPM equivalence


@pytest.mark.parametrize("prediction_type,alpha_to_one", [
    ("epsilon", False), ("epsilon", True), ("v_prediction", False), ("sample", True),
])
def test_ddim_folder_matches_diffusers_ddim_loop(unet, tmp_path, prediction_type, alpha_to_one):
    """10 DDIM steps (eta = 0, linear betas, 1000 train steps) through diffusers and through scoresde agree."""
    scheduler = DDIMScheduler(beta_schedule="linear", clip_sample=False, set_alpha_to_one=alpha_to_one,
                              prediction_type=prediction_type)
    DDIMPipeline(unet=unet, scheduler=scheduler).save_pretrained(tmp_path / "pipe")
    model = from_diffusers(tmp_path / "pipe")
    assert isinstance(model.sde, DiscreteVPSDE) and model.info["prediction_type"] == prediction_type
    scheduler = DDIMScheduler.from_pretrained(tmp_path / "pipe" / "scheduler")
    x_T = randn_tensor(SHAPE, generator=torch.Generator().manual_seed(1))
    ref = _diffusers_ddim(model.network, scheduler, x_T)
    ours = _scoresde_ddim(model, scheduler, x_T)
    assert _rel(ours, ref) < TOL, _rel(ours, ref)


def test_ddpm_folder_deterministic_and_ancestral_match_diffusers(tmp_path):
    """A DDPMPipeline folder (cosine betas, epsilon): DDIM (eta = 0) through diffusers' DDIMScheduler built
    from the folder's config, and DDPM's ancestral loop (10 of the 1000 steps, ``fixed_small`` variance)
    against scoresde's ``ancestral`` sampler on the same times with the same generator draws.

    Both schedulers are run with ``clip_sample=False`` (the DDPM default clips ``x0_hat`` to [-1, 1], a
    sampler heuristic that is not part of the model and that scoresde's samplers do not apply). DDPM's last
    step, from timestep 0 to ``abar = 1``, returns ``x0_hat`` and draws no noise: scoresde's final denoising step.
    """
    unet = _tiny_unet(2)
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler(beta_schedule="squaredcos_cap_v2")).save_pretrained(tmp_path / "pipe")
    model = from_diffusers(tmp_path / "pipe")
    assert model.info["beta_schedule"] == "squaredcos_cap_v2" and model.info["clip_sample"] is True
    config = DDPMScheduler.load_config(tmp_path / "pipe" / "scheduler")
    x_T = randn_tensor(SHAPE, generator=torch.Generator().manual_seed(3))

    ddim = DDIMScheduler.from_config(config, clip_sample=False)
    ref = _diffusers_ddim(model.network, ddim, x_T)
    assert _rel(_scoresde_ddim(model, ddim, x_T), ref) < TOL

    ddpm = DDPMScheduler.from_config(config, clip_sample=False)
    ddpm.set_timesteps(10)
    g = torch.Generator().manual_seed(4)
    x = x_T.clone()
    with torch.no_grad():
        for t in ddpm.timesteps:
            x = ddpm.step(model.network(x, t).sample, t, x, generator=g).prev_sample
    times = model.sde.time_at_timestep(ddpm.timesteps)
    ours = scoresde.solve(model.sde, model.score_fn, None, "ancestral", grid=times, x_init=x_T, denoise=True,
                          generator=torch.Generator().manual_seed(4)).samples
    assert _rel(ours, x) < TOL, _rel(ours, x)


# ---------------------------------------------------------------------------- score-SDE VE equivalence


def test_score_sde_ve_folder_matches_diffusers_predictor_corrector(tmp_path):
    """ScoreSdeVePipeline (sigma_max 10, 5 steps, one corrector step, snr 0.15) against scoresde's ``pc``
    (reverse-diffusion predictor, Langevin corrector) on the scheduler's times, with the same draws.

    What is matched: each of diffusers' iterations is a Langevin correction at ``sigma(t_i)`` (step size from
    batch-mean norms, as scoresde's corrector takes them with a generator) followed by a reverse-diffusion
    step whose variance is ``sigma_i^2 - sigma_{i+1}^2``; scoresde's ``pc`` also corrects first, then
    predicts. Two documented differences are handled explicitly:

    * diffusers' predictor takes its ``sigma_i`` on the grid ``j / (n - 1)`` while the model sees
      ``sigma(t_i)`` with ``t_i = linspace(1, sampling_eps, n)``; the two coincide as ``sampling_eps -> 0``, so the
      folder uses ``sampling_eps = 1e-9`` (with the default 1e-5 the states differ by ~4e-6 here);
    * diffusers' last iteration corrects at ``sigma_min`` and then jumps from noise level ``sigma_min`` to
      noise-free samples, ``x + sigma_min^2 score``: scoresde's VE kernel has ``std(0) = 0`` (``sigma_min`` is
      the clean data), so that jump is not a step of its SDE and is written out here with scoresde's
      ``langevin_correct`` and the imported score. Every earlier state is compared as scoresde's trajectory.
    """
    n = 5
    scheduler = ScoreSdeVeScheduler(sigma_min=0.01, sigma_max=10.0, sampling_eps=1e-9, correct_steps=1, snr=0.15)
    ScoreSdeVePipeline(unet=_ve_unet(5), scheduler=scheduler).save_pretrained(tmp_path / "pipe")
    model = from_diffusers(tmp_path / "pipe")
    assert isinstance(model.sde, VESDE) and (model.sde.sigma_min, model.sde.sigma_max) == (0.01, 10.0)
    scheduler = ScoreSdeVeScheduler.from_pretrained(tmp_path / "pipe" / "scheduler")

    g = torch.Generator().manual_seed(0)  # ScoreSdeVePipeline.__call__, without the final clamp(0, 1)
    x = randn_tensor(SHAPE, generator=g) * scheduler.init_noise_sigma
    scheduler.set_timesteps(n)
    scheduler.set_sigmas(n)
    states = [x]
    with torch.no_grad():
        for i, t in enumerate(scheduler.timesteps):
            sigma_t = scheduler.sigmas[i] * torch.ones(B)
            for _ in range(scheduler.config.correct_steps):
                x = scheduler.step_correct(model.network(x, sigma_t).sample, x, generator=g).prev_sample
            out = scheduler.step_pred(model.network(x, sigma_t).sample, t, x, generator=g)
            x, x_mean = out.prev_sample, out.prev_sample_mean
            states.append(x)

    gen = torch.Generator().manual_seed(0)
    res = scoresde.solve(model.sde, model.score_fn, SHAPE, "pc", grid=scheduler.timesteps.double(), generator=gen,
                         denoise=False, snr=scheduler.config.snr, corrector_steps=1, record_trajectory=True)
    for k in range(n):
        assert _rel(res.trajectory[k], states[k]) < TOL, (k, _rel(res.trajectory[k], states[k]))
    t_last = res.times[-1].expand(B)
    ctx = SolveContext(model.sde, CountedScore(model.score_fn), GeneratorNoise(gen))
    with torch.no_grad():
        y = langevin_correct(ctx, res.samples, t_last, torch.ones(B), scheduler.config.snr, 1)
        y = y + model.sde.sigma_min**2 * model.score_fn(y, t_last)
    assert _rel(y, x_mean) < TOL, _rel(y, x_mean)
    assert model.centered is False and model.data_range == (0.0, 1.0)


# ---------------------------------------------------------------------------- the model's fields and score


def test_fields_score_and_gradient(ddim_folder):
    model = from_diffusers(ddim_folder)
    assert isinstance(model, PretrainedModel) and isinstance(model.score_fn, DiffusersScore)
    assert model.event_shape == (3, 8, 8) and model.centered is True and model.data_range == (-1.0, 1.0)
    assert isinstance(model.sde, DiscreteVPSDE) and model.sde.num_timesteps == 1000
    assert model.source == f"diffusers:{ddim_folder} (DDIMPipeline, DDIMScheduler, epsilon)"
    assert model.info["format"] == "safetensors" and model.info["diffusers_version"] == diffusers.__version__
    assert model.config["scheduler"]["_class_name"] == "DDIMScheduler" and model.config["unet"]["sample_size"] == 8
    assert not any(p.requires_grad for p in model.network.parameters()) and not model.network.training
    json.dumps(model.config)

    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))
    abar = DDIMScheduler.from_pretrained(ddim_folder / "scheduler").alphas_cumprod
    with torch.no_grad():  # at a table time the UNet sees the integer timestep and the score is -eps / sqrt(1 - abar)
        expected = -model.network(x, torch.tensor([417, 417])).sample / (1 - abar[417]).sqrt()
        got = model.score_fn(x, model.sde.time_at_timestep(417).float())
    assert _rel(got, expected) < 1e-6

    net = model.network.double()  # the score is differentiable in x: autograd against central differences
    x = x.double().requires_grad_(True)
    t = torch.tensor([0.3, 0.7], dtype=torch.float64)
    u, v = torch.randn_like(x), torch.randn_like(x)
    (grad,) = torch.autograd.grad((model.score_fn(x, t) * u).sum(), x)
    h = 1e-5
    with torch.no_grad():
        fd = ((model.score_fn(x + h * v, t) - model.score_fn(x - h * v, t)) * u).sum() / (2 * h)
    assert abs(float((grad * v).sum()) - float(fd)) < 1e-6 * max(1.0, abs(float(fd)))
    assert net is model.network


@pytest.mark.parametrize("scheduler", [
    diffusers.PNDMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012),
    DDIMScheduler(rescale_betas_zero_snr=True, prediction_type="v_prediction"),
], ids=["pndm_scaled_linear", "ddim_zero_snr"])
def test_other_ddpm_trained_schedulers_are_accepted_with_their_own_table(unet, tmp_path, scheduler):
    DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(tmp_path / "pipe")
    model = from_diffusers(tmp_path / "pipe")
    abar = scheduler.alphas_cumprod.double()
    zero_snr = bool(abar[-1] == 0)
    assert model.info["zero_terminal_snr_replaced"] is zero_snr and model.info["scheduler"] == type(scheduler).__name__
    assert torch.equal(model.sde.alphas_cumprod[:-1], abar[:-1])
    if zero_snr:  # log sigma continued linearly to the last timestep
        ls = model.sde.log_sigmas
        assert 0 < float(model.sde.alphas_cumprod[-1]) < float(abar[-2]) and torch.isclose(ls[-1] - ls[-2], ls[-2] - ls[-3])
    else:
        assert float(model.sde.alphas_cumprod[-1]) == float(abar[-1])
    with torch.no_grad():
        assert torch.isfinite(model.score_fn(torch.randn(SHAPE), torch.tensor([1.0, 0.5]))).all()


def test_learned_time_embedding_gets_integer_timesteps(tmp_path):
    unet = _tiny_unet(6, time_embedding_type="learned", num_train_timesteps=1000)
    DDIMPipeline(unet=unet, scheduler=DDIMScheduler()).save_pretrained(tmp_path / "pipe")
    model = from_diffusers(tmp_path / "pipe")
    t = model.sde.time_at_timestep(torch.tensor([10.4, 998.6])).float()
    assert model.score_fn.timesteps(t).tolist() == [10, 999]
    x = torch.randn(SHAPE)
    with torch.no_grad():
        assert model.score_fn(x, t).shape == SHAPE


# ---------------------------------------------------------------------------- the discrete-time VP SDE


def test_discrete_vp_sde_reproduces_the_table_and_interpolates_log_sigma():
    """Kernel = table at t_n = (n + 1) / N; drift and diffusion consistent with the kernel; the fractional timestep
    of a noise level is k-diffusion's ``DiscreteSchedule.sigma_to_t`` (linear interpolation in log sigma)."""
    abar = DDPMScheduler(beta_schedule="linear").alphas_cumprod.double()
    sde = DiscreteVPSDE(abar)
    scale, std = sde.marginal_coeffs(sde.time_at_timestep(torch.arange(1000)))
    assert torch.allclose(scale**2, abar, rtol=1e-12, atol=0) and torch.allclose(std**2, 1 - abar, rtol=1e-12, atol=0)
    a, v = sde.transition_coeffs(sde.time_at_timestep([99, 99]), sde.time_at_timestep([100, 900]))
    assert torch.allclose(a**2, abar[[100, 900]] / abar[99], rtol=1e-12) and torch.allclose(v**2 + a**2, torch.ones(2, dtype=torch.float64))

    t = torch.cat([torch.rand(64, dtype=torch.float64), torch.tensor([1e-4, 5e-4, 9e-4, 0.5003])])  # away from the kinks at t_n
    h = 1e-7
    (s1, d1), (s0, d0) = sde.marginal_coeffs(t + h), sde.marginal_coeffs(t - h)
    dlog_scale = (s1.log() - s0.log()) / (2 * h)
    g2 = sde.diffusion(t) ** 2
    assert torch.allclose(sde.drift(torch.ones(len(t), 1, dtype=torch.float64), t)[:, 0], dlog_scale, rtol=1e-6)
    assert torch.allclose(g2, (d1**2 - d0**2) / (2 * h) - 2 * dlog_scale * sde.marginal_coeffs(t)[1] ** 2, rtol=1e-6)

    log_sigmas = 0.5 * ((1 - abar) / abar).log()  # k-diffusion's sigma_to_t
    sigma = torch.exp(torch.empty(50, dtype=torch.float64).uniform_(float(log_sigmas[0]), float(log_sigmas[-1])))
    low = (sigma.log()[None] >= log_sigmas[:, None]).cumsum(0).argmax(0).clamp(max=998)
    w = (log_sigmas[low] - sigma.log()) / (log_sigmas[low] - log_sigmas[low + 1])
    k_t = (1 - w) * low + w * (low + 1)
    assert torch.allclose(sde.timestep(sde.time_at_noise_to_signal(sigma)), k_t, atol=1e-8)
    assert torch.allclose(sde.noise_to_signal(sde.time_at_timestep(k_t)), sigma, rtol=1e-10)
    assert float(sde.marginal_coeffs(torch.zeros(1))[1]) < 1e-10 and sde.prior_std == 1.0
    for bad in ([0.9], [0.9, 0.95], [0.9, 0.0], [[0.9, 0.5]]):
        with pytest.raises(OptionError):
            DiscreteVPSDE(bad)


# ---------------------------------------------------------------------------- weights files


def test_bin_weights_are_read_by_the_safe_loader(unet, ddim_folder, tmp_path, monkeypatch):
    DDIMPipeline(unet=unet, scheduler=DDIMScheduler(clip_sample=False)).save_pretrained(tmp_path / "bin", safe_serialization=False)
    assert (tmp_path / "bin" / "unet" / "diffusion_pytorch_model.bin").is_file()

    def refuse(*args, **kwargs):
        raise AssertionError("a .bin file must not go through diffusers' loader")

    monkeypatch.setattr(UNet2DModel, "from_pretrained", refuse)
    model = from_diffusers(tmp_path / "bin")
    monkeypatch.undo()
    assert model.info["format"] == "bin"
    x, t = torch.randn(SHAPE), torch.tensor([0.2, 0.9])
    with torch.no_grad():
        reference = from_diffusers(ddim_folder).score_fn(x, t)
        assert torch.equal(model.score_fn(x, t), reference)

    # attention weights under their old names (query/key/value/proj_attn, as in early published DDPM folders)
    path = tmp_path / "bin" / "unet" / "diffusion_pytorch_model.bin"
    old_names = {".to_q.": ".query.", ".to_k.": ".key.", ".to_v.": ".value.", ".to_out.0.": ".proj_attn."}
    state = {}
    for k, v in torch.load(path, weights_only=True).items():
        for new, old in old_names.items():
            k = k.replace(new, old)
        state[k] = v
    assert any(".query." in k for k in state)
    torch.save(state, path)
    with torch.no_grad():
        assert torch.equal(from_diffusers(tmp_path / "bin").score_fn(x, t), reference)


def test_bin_weights_of_a_fourier_unet_with_the_old_W_name(tmp_path):
    """Earlier diffusers versions saved the Fourier projection's weight twice, as ``W`` and ``weight``."""
    scheduler = ScoreSdeVeScheduler(sigma_min=0.01, sigma_max=10.0)
    ScoreSdeVePipeline(unet=_ve_unet(7), scheduler=scheduler).save_pretrained(tmp_path / "pipe", safe_serialization=False)
    x, t = torch.rand(SHAPE), torch.tensor([0.1, 0.8])
    with torch.no_grad():
        reference = from_diffusers(tmp_path / "pipe").score_fn(x, t)
        path = tmp_path / "pipe" / "unet" / "diffusion_pytorch_model.bin"
        state = torch.load(path, weights_only=True)
        torch.save({**state, "time_proj.W": state["time_proj.weight"]}, path)
        assert torch.equal(from_diffusers(tmp_path / "pipe").score_fn(x, t), reference)
        torch.save({("time_proj.W" if k == "time_proj.weight" else k): v for k, v in state.items()}, path)
        assert torch.equal(from_diffusers(tmp_path / "pipe").score_fn(x, t), reference)


class _RunsCode:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_bin_with_a_pickled_callable_is_refused_without_running_it(ddim_folder, tmp_path):
    folder = tmp_path / "pipe"
    shutil.copytree(ddim_folder, folder)
    (folder / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    marker = tmp_path / "executed"
    torch.save({"conv_in.weight": torch.zeros(1), "payload": _RunsCode(str(marker))}, folder / "unet" / "diffusion_pytorch_model.bin")
    with pytest.raises(CheckpointError, match="diffusion_pytorch_model.bin"):
        from_diffusers(folder)
    assert not marker.exists()


# ---------------------------------------------------------------------------- refusals


def _broken_copy(ddim_folder: Path, tmp_path: Path, action) -> Path:
    folder = tmp_path / "pipe"
    shutil.copytree(ddim_folder, folder)
    action(folder)
    return folder


def _write(path: Path, data) -> None:
    path.write_text(data if isinstance(data, str) else json.dumps(data))


def _save_state(path: Path, drop: bool):
    from safetensors.torch import load_file, save_file

    state = load_file(path)
    if drop:
        state.pop(sorted(state)[0])
    else:
        state["conv_in.weight"] = torch.zeros(2, 2)
    save_file(state, path)


BROKEN = {
    "no model_index.json": (lambda f: (f / "model_index.json").unlink(), "model_index.json"),
    "model_index.json not JSON": (lambda f: _write(f / "model_index.json", "{oops"), "model_index.json"),
    "no unet folder": (lambda f: shutil.rmtree(f / "unet"), "unet"),
    "no unet config": (lambda f: (f / "unet" / "config.json").unlink(), "config.json"),
    "no weights": (lambda f: (f / "unet" / "diffusion_pytorch_model.safetensors").unlink(), "diffusion_pytorch_model"),
    "corrupt safetensors": (lambda f: _write(f / "unet" / "diffusion_pytorch_model.safetensors", "garbage" * 20),
                            "diffusion_pytorch_model.safetensors"),
    "corrupt bin": (lambda f: ((f / "unet" / "diffusion_pytorch_model.safetensors").unlink(),
                               _write(f / "unet" / "diffusion_pytorch_model.bin", "not a torch file")), "diffusion_pytorch_model.bin"),
    "missing key": (lambda f: _save_state(f / "unet" / "diffusion_pytorch_model.safetensors", True), "missing"),
    "wrong shape": (lambda f: _save_state(f / "unet" / "diffusion_pytorch_model.safetensors", False),
                    "diffusion_pytorch_model.safetensors"),
    "no scheduler config": (lambda f: (f / "scheduler" / "scheduler_config.json").unlink(), "scheduler_config.json"),
    "latent pipeline": (lambda f: _write(f / "model_index.json", {"_class_name": "LDMPipeline", "unet": ["diffusers", "UNet2DModel"],
                                                                   "scheduler": ["diffusers", "DDIMScheduler"],
                                                                   "vqvae": ["diffusers", "VQModel"]}), "vqvae"),
    "conditional unet": (lambda f: _write(f / "unet" / "config.json", {**json.loads((f / "unet" / "config.json").read_text()),
                                                                        "num_class_embeds": 10}), "class-conditional"),
    "huge schedule": (lambda f: _write(f / "scheduler" / "scheduler_config.json",
                                       {"_class_name": "DDIMScheduler", "num_train_timesteps": 10**9}), "num_train_timesteps"),
    "unknown prediction": (lambda f: _write(f / "scheduler" / "scheduler_config.json",
                                            {"_class_name": "DDIMScheduler", "prediction_type": "flow"}), "prediction_type"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_broken_folders_are_refused_naming_the_file(ddim_folder, tmp_path, case):
    action, named = BROKEN[case]
    folder = _broken_copy(ddim_folder, tmp_path, action)
    with pytest.raises(CheckpointError) as info:
        from_diffusers(folder)
    assert named in str(info.value) and "\n" not in str(info.value)


def test_unsupported_scheduler_is_refused_by_name(ddim_folder, tmp_path):
    folder = _broken_copy(ddim_folder, tmp_path, lambda f: CMStochasticIterativeScheduler().save_pretrained(f / "scheduler"))
    with pytest.raises(CheckpointError, match="CMStochasticIterativeScheduler") as info:
        from_diffusers(folder)
    assert str(folder) in str(info.value)
    _write(folder / "scheduler" / "scheduler_config.json", {"_class_name": "os.system"})
    with pytest.raises(CheckpointError, match="os.system"):
        from_diffusers(folder)


def test_bad_arguments_and_missing_diffusers(ddim_folder, tmp_path, monkeypatch):
    with pytest.raises(OptionError):
        from_diffusers(123)
    with pytest.raises(OptionError):
        from_diffusers(ddim_folder, device="no-such-device")
    with pytest.raises(CheckpointError, match="no diffusers pipeline folder"):
        from_diffusers(tmp_path / "absent")
    with pytest.raises(CheckpointError, match="not a folder"):
        from_diffusers(ddim_folder / "model_index.json")
    monkeypatch.setitem(sys.modules, "diffusers", None)
    with pytest.raises(OptionError, match=r"pip install 'scoresde\[diffusers\]'") as info:
        from_diffusers(ddim_folder)
    assert isinstance(info.value, ScoreSDEError)
