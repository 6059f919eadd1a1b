"""Importing score_sde_pytorch checkpoints: equality with the reference's own score outputs, and refusals.

The fixtures in ``tests/fixtures/score_sde`` were written by ``make_fixtures.py`` there, which ran the
reference implementation (tiny networks with perturbed random weights, checkpoints in the reference's
own format, and the reference's ``get_score_fn`` outputs with EMA and raw weights).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import scoresde
from scoresde.errors import CheckpointError, ConfigError, OptionError, ScoreSDEError
from scoresde.nets.ncsnpp_layers import FIRConv2d, fir_downsample, fir_upsample
from scoresde.pretrained import (
    ALIASES,
    PUBLISHED_CONFIGS,
    PretrainedModel,
    build_score_sde_network,
    config_names,
    from_score_sde,
    published_config,
)

FIXTURES = Path(__file__).parent / "fixtures" / "score_sde"
MANIFEST = json.loads((FIXTURES / "manifest.json").read_text())

#: Every CIFAR-10 and CelebA-HQ config of the reference's configs/ folder.
CIFAR10_AND_CELEBAHQ = [
    "subvp/cifar10_ddpm_continuous", "subvp/cifar10_ddpmpp_continuous", "subvp/cifar10_ddpmpp_deep_continuous",
    "subvp/cifar10_ncsnpp_continuous", "subvp/cifar10_ncsnpp_deep_continuous",
    "ve/celebahq_256_ncsnpp_continuous", "ve/celebahq_ncsnpp_continuous",
    "ve/cifar10_ddpm", "ve/cifar10_ncsnpp", "ve/cifar10_ncsnpp_continuous", "ve/cifar10_ncsnpp_deep_continuous",
    "ve/ncsn/cifar10", "ve/ncsn/cifar10_124", "ve/ncsn/cifar10_1245", "ve/ncsn/cifar10_5", "ve/ncsnv2/cifar10",
    "vp/cifar10_ddpmpp", "vp/cifar10_ddpmpp_continuous", "vp/cifar10_ddpmpp_deep_continuous",
    "vp/cifar10_ncsnpp", "vp/cifar10_ncsnpp_continuous", "vp/cifar10_ncsnpp_deep_continuous",
    "vp/ddpm/celebahq", "vp/ddpm/cifar10", "vp/ddpm/cifar10_continuous", "vp/ddpm/cifar10_unconditional",
]

#: Parameter counts of the reference's own networks (models.ncsnpp.NCSNpp / models.ddpm.DDPM built from each
#: config); None where the reference cannot build the network (its DDPM needs conditional=True).
REFERENCE_PARAMETERS = {
    "subvp/cifar10_ddpm_continuous": 35218947, "subvp/cifar10_ddpmpp_continuous": 61804419,
    "subvp/cifar10_ddpmpp_deep_continuous": 106632579, "subvp/cifar10_ncsnpp_continuous": 62693251,
    "subvp/cifar10_ncsnpp_deep_continuous": 107521411, "ve/bedroom_ncsnpp_continuous": 65574549,
    "ve/celeba_ncsnpp": 62693251, "ve/celebahq_256_ncsnpp_continuous": 65574549,
    "ve/celebahq_ncsnpp_continuous": 105785896, "ve/church_ncsnpp_continuous": 65574549,
    "ve/cifar10_ddpm": 35218947, "ve/cifar10_ncsnpp": 62693251, "ve/cifar10_ncsnpp_continuous": 62758915,
    "ve/cifar10_ncsnpp_deep_continuous": 107587075, "ve/ffhq_256_ncsnpp_continuous": 65574549,
    "ve/ffhq_ncsnpp_continuous": 105785896, "vp/cifar10_ddpmpp": 61804419, "vp/cifar10_ddpmpp_continuous": 61804419,
    "vp/cifar10_ddpmpp_deep_continuous": 106632579, "vp/cifar10_ncsnpp": 62693251,
    "vp/cifar10_ncsnpp_continuous": 62693251, "vp/cifar10_ncsnpp_deep_continuous": 107521411,
    "vp/ddpm/bedroom": 111569923, "vp/ddpm/celebahq": 111569923, "vp/ddpm/church": 111569923,
    "vp/ddpm/cifar10": 35218947, "vp/ddpm/cifar10_continuous": 35218947, "vp/ddpm/cifar10_unconditional": None,
}


def _fixture(variant):
    f = MANIFEST[variant]
    return FIXTURES / f["checkpoint"], FIXTURES / f["config"], torch.load(FIXTURES / f["io"], weights_only=True)


# ---------------------------------------------------------------------------- equality with the reference


@pytest.mark.parametrize("use_ema", [True, False], ids=["ema", "raw"])
@pytest.mark.parametrize("variant", sorted(MANIFEST))
def test_score_equals_reference(variant, use_ema):
    ckpt, cfg, io = _fixture(variant)
    model = from_score_sde(ckpt, cfg, use_ema=use_ema)
    with torch.no_grad():
        score = model.score_fn(io["x"], io["t"])
    expected = io["score_ema" if use_ema else "score_model"]
    scale = expected.abs().max().item()
    torch.testing.assert_close(score, expected, rtol=1e-5, atol=1e-5 * scale)
    other = io["score_model" if use_ema else "score_ema"]
    assert (score - other).abs().max() > 1e-3 * scale  # the fixture tells EMA from raw weights


def test_fixtures_are_small_and_safe_to_load():
    files = sorted(FIXTURES.glob("*.pth")) + sorted(FIXTURES.glob("*.json"))
    assert sum(f.stat().st_size for f in files) < 3_000_000
    for f in FIXTURES.glob("*.pth"):
        torch.load(f, weights_only=True)


def test_published_model_fields():
    ckpt, cfg, io = _fixture("ncsnpp_ve")
    model = from_score_sde(ckpt, cfg)
    assert isinstance(model, PretrainedModel) and isinstance(model.sde, scoresde.VESDE)
    assert model.event_shape == (3, 16, 16) and model.centered is False and model.data_range == (0.0, 1.0)
    assert model.source == f"score_sde:{ckpt} ({cfg})" and model.num_classes is None
    assert model.config["model"]["name"] == "ncsnpp" and model.info["weights"] == "ema" and model.info["step"] == 1002
    assert isinstance(model.score_fn, torch.nn.Module) and model.score_fn.network is model.network
    assert not model.network.training and model.device == torch.device("cpu")
    vp = from_score_sde(*_fixture("ddpmpp_subvp")[:2])
    assert isinstance(vp.sde, scoresde.SubVPSDE) and vp.centered and vp.data_range == (-1.0, 1.0)


def test_score_is_differentiable_in_x_and_samples():
    ckpt, cfg, io = _fixture("ddpmpp_vp")
    model = from_score_sde(ckpt, cfg)
    x = io["x"].clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model.score_fn(x, io["t"]).sum(), x)
    assert grad is not None and grad.shape == x.shape and torch.isfinite(grad).all() and grad.abs().sum() > 0
    out = scoresde.sample(model.sde, model.score_fn, (2, 3, 8, 8), solver="ddim", steps=3,
                          generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 3, 8, 8) and torch.isfinite(out).all()


def test_float64_inputs_are_served_by_the_float32_network():
    ckpt, cfg, io = _fixture("ddpmpp_vp")
    model = from_score_sde(ckpt, cfg)
    with torch.no_grad():
        out = model.score_fn(io["x"].double(), io["t"].double())
    assert out.dtype == torch.float64
    torch.testing.assert_close(out.float(), io["score_ema"], rtol=1e-5, atol=1e-5 * io["score_ema"].abs().max().item())


def test_bare_state_dict_file(tmp_path):
    ckpt, cfg, io = _fixture("ddpmpp_deep_vp_discrete")
    state = torch.load(ckpt, weights_only=True)["model"]
    path = tmp_path / "weights.pth"
    torch.save({k[len("module."):]: v for k, v in state.items()}, path)
    with pytest.raises(CheckpointError, match="use_ema=False"):
        from_score_sde(path, cfg)
    model = from_score_sde(path, cfg, use_ema=False)
    with torch.no_grad():
        torch.testing.assert_close(model.score_fn(io["x"], io["t"]), io["score_model"], rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------- configs


def test_config_table_holds_every_cifar10_and_celebahq_config():
    missing = [n for n in CIFAR10_AND_CELEBAHQ if n not in PUBLISHED_CONFIGS]
    assert not missing
    for name, target in ALIASES.items():
        assert published_config(name) == PUBLISHED_CONFIGS[target]
    cfg = published_config("vp/cifar10_ddpmpp_continuous")
    assert cfg["training"]["sde"] == "vpsde" and cfg["model"]["nf"] == 128 and cfg["model"]["num_res_blocks"] == 4
    cfg["model"]["nf"] = 1  # a copy: the table is untouched
    assert PUBLISHED_CONFIGS["vp/cifar10_ddpmpp_continuous"]["model"]["nf"] == 128


@pytest.mark.parametrize("name", sorted(PUBLISHED_CONFIGS))
def test_every_published_config_builds_on_meta(name):
    if PUBLISHED_CONFIGS[name]["model"]["name"] not in ("ncsnpp", "ddpm"):
        with pytest.raises(ConfigError, match="not supported"):
            build_score_sde_network(name)
        return
    with torch.device("meta"):
        net = build_score_sde_network(name)
    n = sum(p.numel() for p in net.parameters())
    assert next(net.parameters()).device.type == "meta"
    assert n > 1_000_000
    if REFERENCE_PARAMETERS.get(name) is not None:
        assert n == REFERENCE_PARAMETERS[name]
    if name in CIFAR10_AND_CELEBAHQ:
        assert name in REFERENCE_PARAMETERS


def test_supported_names_are_listed():
    assert set(REFERENCE_PARAMETERS) == set(config_names(supported_only=True))


def test_unknown_config_name_lists_valid_names():
    ckpt = _fixture("ddpmpp_vp")[0]
    with pytest.raises(OptionError, match="unknown score_sde config") as e:
        from_score_sde(ckpt, "vp/cifar10_ddpmpp_continous")
    assert "vp/cifar10_ddpmpp_continuous" in str(e.value) and "ve/cifar10_ncsnpp_continuous" in str(e.value)


def test_json_config_errors(tmp_path):
    ckpt, cfg_path, _ = _fixture("ddpmpp_vp")
    cfg = json.loads(cfg_path.read_text())
    del cfg["model"]["nf"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match=r"model\.nf is missing"):
        from_score_sde(ckpt, bad)
    cfg["model"]["nf"] = 2.5
    with pytest.raises(ConfigError, match=r"model\.nf"):
        from_score_sde(ckpt, cfg)
    with pytest.raises(ConfigError, match="no config file"):
        from_score_sde(ckpt, tmp_path / "absent.json")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not readable JSON"):
        from_score_sde(ckpt, tmp_path / "broken.json")
    with pytest.raises(ConfigError, match="'training' section"):
        from_score_sde(ckpt, {"model": {}, "data": {}})


# ---------------------------------------------------------------------------- refusals


def test_mismatching_config_names_first_differing_parameter_and_both_shapes():
    ckpt, cfg_path, _ = _fixture("ddpmpp_vp")
    cfg = json.loads(cfg_path.read_text())
    cfg["model"]["nf"] = 16
    with pytest.raises(CheckpointError) as e:
        from_score_sde(ckpt, cfg)
    msg = str(e.value)
    assert "'all_modules.0.weight'" in msg and "(32, 8)" in msg and "(64, 16)" in msg and str(ckpt) in msg
    cfg["model"]["nf"], cfg["model"]["num_res_blocks"] = 8, 2
    with pytest.raises(CheckpointError, match="keys missing from the checkpoint: 'all_modules"):
        from_score_sde(ckpt, cfg)
    with pytest.raises(CheckpointError, match="does not fit"):
        from_score_sde(ckpt, "vp/cifar10_ddpmpp_continuous")


def test_truncated_and_missing_files(tmp_path):
    ckpt = _fixture("ddpmpp_vp")[0]
    cfg = MANIFEST["ddpmpp_vp"]["config"]
    data = ckpt.read_bytes()
    for cut in (len(data) // 2, 100):
        bad = tmp_path / f"cut{cut}.pth"
        bad.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match="truncated or corrupt") as e:
            from_score_sde(bad, FIXTURES / cfg)
        assert str(bad) in str(e.value)
    with pytest.raises(CheckpointError, match="no checkpoint file"):
        from_score_sde(tmp_path / "absent.pth", FIXTURES / cfg)
    with pytest.raises(CheckpointError, match="not a file"):
        from_score_sde(tmp_path, FIXTURES / cfg)
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="not a score_sde checkpoint"):
        from_score_sde(tmp_path / "list.pth", FIXTURES / cfg)


_SIDE_EFFECTS = []


def _record(msg):
    _SIDE_EFFECTS.append(msg)
    return msg


class _Payload:
    """An object whose unpickling would call :func:`_record` (a stand-in for arbitrary code)."""

    def __reduce__(self):
        return (_record, ("code ran",))


class _Plain:
    """An instance of a custom class."""

    def __init__(self):
        self.decay = 0.999


@pytest.mark.parametrize("payload", [_Payload, _Plain], ids=["reduce", "custom_class"])
def test_pickle_that_needs_code_is_refused(tmp_path, payload):
    ckpt, cfg, _ = _fixture("ddpmpp_vp")
    state = torch.load(ckpt, weights_only=True)
    state["ema"] = payload()
    path = tmp_path / "evil.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="refused") as e:
        from_score_sde(path, cfg)
    assert str(path) in str(e.value) and "weights_only=False" not in str(e.value)
    assert _SIDE_EFFECTS == []


def test_bad_ema_is_refused(tmp_path):
    ckpt, cfg, _ = _fixture("ddpmpp_vp")
    state = torch.load(ckpt, weights_only=True)
    state["ema"]["shadow_params"] = state["ema"]["shadow_params"][:-1]
    torch.save(state, tmp_path / "short.pth")
    with pytest.raises(CheckpointError, match="EMA holds"):
        from_score_sde(tmp_path / "short.pth", cfg)
    del state["ema"]
    torch.save(state, tmp_path / "noema.pth")
    with pytest.raises(CheckpointError, match="no 'ema' entry"):
        from_score_sde(tmp_path / "noema.pth", cfg)
    assert from_score_sde(tmp_path / "noema.pth", cfg, use_ema=False).info["weights"] == "model"


@pytest.mark.parametrize("kwargs", [dict(use_ema="yes"), dict(use_ema=1), dict(device="not-a-device"), dict(device=3.5)])
def test_bad_arguments(kwargs):
    ckpt, cfg, _ = _fixture("ddpmpp_vp")
    with pytest.raises(OptionError):
        from_score_sde(ckpt, cfg, **kwargs)


def test_bad_checkpoint_and_config_types():
    ckpt, cfg, _ = _fixture("ddpmpp_vp")
    with pytest.raises(OptionError, match="checkpoint must be a path"):
        from_score_sde(123, cfg)
    with pytest.raises(OptionError, match="config must be"):
        from_score_sde(ckpt, 7)
    for err in (OptionError, ConfigError, CheckpointError):
        assert issubclass(err, ScoreSDEError)


def test_unsupported_models_are_refused():
    ckpt = _fixture("ddpmpp_vp")[0]
    with pytest.raises(ConfigError, match="'ncsnv2_64' is not supported"):
        from_score_sde(ckpt, "ve/ncsnv2/cifar10")


# ---------------------------------------------------------------------------- FIR resampling


@pytest.mark.parametrize("kernel", [[1, 3, 3, 1], [1, 2, 1], [1, 1]])
def test_fused_fir_convolutions_equal_resample_then_convolve_inside(kernel):
    """The fused up/down convolutions equal FIR resampling followed (preceded) by a plain convolution,
    away from the border where the fused form pads once instead of twice."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 8, 8, generator=gen, dtype=torch.float64)
    up = FIRConv2d(3, 5, up=True, fir_kernel=kernel).double()
    down = FIRConv2d(3, 5, down=True, fir_kernel=kernel).double()
    with torch.no_grad():
        up.bias.normal_(generator=gen)
        down.bias.normal_(generator=gen)
        a, b = up(x), F.conv2d(fir_upsample(x, kernel), up.weight, up.bias, padding=1)
        torch.testing.assert_close(a[..., 2:-2, 2:-2], b[..., 2:-2, 2:-2])
        a, b = down(x), fir_downsample(F.conv2d(x, down.weight, padding=1), kernel) + down.bias[:, None, None]
        torch.testing.assert_close(a[..., 1:-1, 1:-1], b[..., 1:-1, 1:-1])
        ones = torch.ones(1, 2, 4, 4, dtype=torch.float64)
        torch.testing.assert_close(fir_upsample(ones, kernel)[..., 2:-2, 2:-2], torch.ones(1, 2, 4, 4, dtype=torch.float64))
