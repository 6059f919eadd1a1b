"""Import checkpoints of score_sde_pytorch (Song et al. 2021): NCSN++, DDPM++ and DDPM networks.

A score_sde checkpoint (``checkpoint_N.pth``) is a dict ``{'model', 'ema', 'optimizer', 'step'}``:
``model`` is the state dict of ``torch.nn.DataParallel(ScoreModel)`` (keys prefixed ``module.``),
``ema`` is ``{'decay', 'num_updates', 'shadow_params'}`` with ``shadow_params`` the exponential moving
averages of the model's trainable parameters, listed in the model's parameter order.

:func:`from_score_sde` rebuilds the network from the training config, loads the EMA weights (or the
raw ones) and wraps the network as a score function with score_sde's own conventions:

* VP / sub-VP, continuous training (and sub-VP always): the network sees ``999 t`` and predicts
  ``std(t) eps``-scaled noise, so ``score = -net(x, 999 t) / std(t)`` with the SDE's marginal ``std``;
* VP, discrete training: the network sees ``t (N - 1)``; ``std`` is read from the discrete DDPM table
  ``sqrt(1 - prod_{i <= n} (1 - beta_i))`` at ``n = floor(t (N - 1))``, ``beta`` linear from
  ``beta_min / N`` to ``beta_max / N``;
* VE, continuous: the network sees ``sigma(t) = sigma_min (sigma_max / sigma_min)^t`` and its output is the score;
* VE, discrete: the network sees the index ``round((1 - t) (N - 1))`` of the noise level ``sigmas[i]``.

Checkpoints are read only with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import torch
from torch import Tensor, nn

from .._utils import append_dims, as_time, check_memory
from .._validation import finite_float, integer
from ..errors import CheckpointError, ConfigError, OptionError
from ..nets.ddpm_unet import DDPMUNet
from ..nets.ncsnpp import NCSNpp
from ..sde import SDE, VESDE, VPSDE, SubVPSDE
from .base import PathLike, PretrainedModel, check_device, check_path, load_weights_file
from .score_sde_configs import ALIASES, PUBLISHED_CONFIGS, SUPPORTED_MODELS, config_names, published_config

ConfigLike = Union[str, "os.PathLike[str]", Mapping[str, Any]]
_REQUIRED = object()
SDE_NAMES = {"vpsde": "vp", "subvpsde": "subvp", "vesde": "ve"}


# ---------------------------------------------------------------------------- configs


def resolve_config(config: ConfigLike) -> Tuple[Dict[str, Dict[str, Any]], str]:
    """``(config dict, label)`` from a published name, a JSON file or a mapping with ``model``/``data``/``training``.

    Raises:
        OptionError: ``config`` is neither a known name nor an existing file nor a mapping (the
            message lists the valid names).
        ConfigError: the JSON file cannot be read or lacks a section.
    """
    if isinstance(config, Mapping):
        return _check_sections(json.loads(json.dumps(config, default=list)), "the config mapping"), "config dict"
    if not isinstance(config, (str, os.PathLike)) or isinstance(config, bool):
        raise OptionError(f"config must be a published config name, a path to a JSON file or a dict, got {type(config).__name__}")
    name = os.fspath(config)
    if name in PUBLISHED_CONFIGS or name in ALIASES:
        return published_config(name), ALIASES.get(name, name)
    path = Path(name).expanduser()
    if path.is_file():
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise ConfigError(f"config file {path} is not readable JSON: {e}") from None
        return _check_sections(data, f"config file {path}"), str(path)
    if name.endswith(".json"):
        raise ConfigError(f"no config file at {path}")
    raise OptionError(
        f"unknown score_sde config {name!r}: give the path of a JSON config file or one of the published names: "
        + ", ".join(config_names(supported_only=True) + sorted(ALIASES))
    )


def _check_sections(data: Any, what: str) -> Dict[str, Dict[str, Any]]:
    if not isinstance(data, dict):
        raise ConfigError(f"{what} must hold an object with 'model', 'data' and 'training' sections")
    for section in ("model", "data", "training"):
        if not isinstance(data.get(section), dict):
            raise ConfigError(f"{what} has no '{section}' section (an object of score_sde's config.{section} fields)")
    return data


def _field(cfg: Mapping[str, Mapping[str, Any]], key: str, kind: str, default: Any = _REQUIRED, choices=None) -> Any:
    """The validated value of ``cfg[section][name]`` for ``key = 'section.name'``, or :class:`ConfigError`."""
    section, name = key.split(".")
    if name not in cfg[section]:
        if default is _REQUIRED:
            raise ConfigError(f"config field {key} is missing")
        return default
    v = cfg[section][name]
    try:
        if kind == "bool":
            if not isinstance(v, bool):
                raise ConfigError(f"config field {key} must be true or false, got {v!r}")
            return v
        if kind == "int":
            return integer(v, f"config field {key}", minimum=1)
        if kind == "float":
            return finite_float(v, f"config field {key}")
        if kind == "ints":
            if not isinstance(v, (list, tuple)):
                raise ConfigError(f"config field {key} must be a list of integers, got {v!r}")
            return tuple(integer(c, f"config field {key} entries", minimum=1) for c in v)
        if kind == "floats":
            if not isinstance(v, (list, tuple)) or not v:
                raise ConfigError(f"config field {key} must be a non-empty list of numbers, got {v!r}")
            return tuple(finite_float(c, f"config field {key} entries") for c in v)
        if not isinstance(v, str) or (choices and v.lower() not in choices):
            raise ConfigError(f"config field {key} must be one of {tuple(choices)}, got {v!r}")
        return v.lower()
    except OptionError as e:
        raise ConfigError(str(e)) from None


def _network_kwargs(cfg: Mapping[str, Mapping[str, Any]]) -> Tuple[str, Dict[str, Any]]:
    """``(model name, constructor arguments)`` of the network a config describes."""
    name = _field(cfg, "model.name", "str")
    if name not in SUPPORTED_MODELS:
        raise ConfigError(
            f"config model.name {name!r} is not supported; this importer builds {', '.join(SUPPORTED_MODELS)} "
            "(NCSN++/DDPM++ and DDPM), not the NCSN/NCSNv2 RefineNets"
        )
    kw: Dict[str, Any] = dict(
        image_size=_field(cfg, "data.image_size", "int"), num_channels=_field(cfg, "data.num_channels", "int", 3),
        centered=_field(cfg, "data.centered", "bool", False), nf=_field(cfg, "model.nf", "int"),
        ch_mult=_field(cfg, "model.ch_mult", "ints"), num_res_blocks=_field(cfg, "model.num_res_blocks", "int"),
        attn_resolutions=_field(cfg, "model.attn_resolutions", "ints"),
        dropout=_field(cfg, "model.dropout", "float", 0.1), resamp_with_conv=_field(cfg, "model.resamp_with_conv", "bool"),
        conditional=_field(cfg, "model.conditional", "bool"), scale_by_sigma=_field(cfg, "model.scale_by_sigma", "bool"),
        nonlinearity=_field(cfg, "model.nonlinearity", "str", "swish", ("swish", "relu", "elu", "lrelu")),
        sigma_min=_field(cfg, "model.sigma_min", "float", 0.01), sigma_max=_field(cfg, "model.sigma_max", "float", 50.0),
        num_scales=_field(cfg, "model.num_scales", "int", 1000),
    )
    if not 0.0 <= kw["dropout"] < 1.0:
        raise ConfigError(f"config field model.dropout must lie in [0, 1), got {kw['dropout']}")
    if not 0 < kw["sigma_min"] < kw["sigma_max"]:
        raise ConfigError(f"config fields model.sigma_min/sigma_max need 0 < sigma_min < sigma_max, got {kw['sigma_min']}, {kw['sigma_max']}")
    if len(kw["ch_mult"]) < 1 or kw["image_size"] % (2 ** (len(kw["ch_mult"]) - 1)):
        raise ConfigError(f"config field data.image_size {kw['image_size']} must be divisible by 2^(len(model.ch_mult) - 1)")
    if name == "ddpm":
        if kw["nf"] % 32:
            raise ConfigError(f"config field model.nf must be a multiple of 32 for the ddpm model (GroupNorm with 32 groups), got {kw['nf']}")
        return name, kw
    kw.update(
        fir=_field(cfg, "model.fir", "bool"), fir_kernel=_field(cfg, "model.fir_kernel", "floats", (1, 3, 3, 1)),
        skip_rescale=_field(cfg, "model.skip_rescale", "bool"),
        resblock_type=_field(cfg, "model.resblock_type", "str", choices=("biggan", "ddpm")),
        progressive=_field(cfg, "model.progressive", "str", choices=("none", "output_skip", "residual")),
        progressive_input=_field(cfg, "model.progressive_input", "str", choices=("none", "input_skip", "residual")),
        progressive_combine=_field(cfg, "model.progressive_combine", "str", choices=("sum", "cat")),
        embedding_type=_field(cfg, "model.embedding_type", "str", "fourier", ("fourier", "positional")),
        fourier_scale=_field(cfg, "model.fourier_scale", "float", 16.0), init_scale=_field(cfg, "model.init_scale", "float"),
    )
    if not sum(kw["fir_kernel"]) > 0:
        raise ConfigError(f"config field model.fir_kernel must have a positive sum (it is normalised by it), got {list(kw['fir_kernel'])}")
    if kw["nf"] < 4:
        raise ConfigError(f"config field model.nf must be at least 4 (GroupNorm uses nf // 4 groups), got {kw['nf']}")
    if kw["embedding_type"] == "fourier" and not _field(cfg, "training.continuous", "bool", True):
        raise ConfigError("config: model.embedding_type 'fourier' needs training.continuous true (Fourier features embed continuous noise levels)")
    return name, kw


def build_score_sde_network(config: ConfigLike) -> nn.Module:
    """Build (freshly initialised) the network a score_sde config describes.

    Args:
        config: a published config name, a JSON file path or a config mapping (see :func:`resolve_config`).

    Returns:
        :class:`~scoresde.nets.ncsnpp.NCSNpp` or :class:`~scoresde.nets.ddpm_unet.DDPMUNet`. Build it
        under ``with torch.device("meta"):`` to count parameters without allocating them.
    """
    cfg, _ = resolve_config(config)
    name, kw = _network_kwargs(cfg)
    return DDPMUNet(**kw) if name == "ddpm" else NCSNpp(**kw)


def sde_from_config(config: ConfigLike) -> Tuple[SDE, str, bool]:
    """``(sde, kind, continuous)`` of a score_sde config: ``kind`` is ``'vp'``, ``'subvp'`` or ``'ve'``."""
    cfg, _ = resolve_config(config)
    sde_name = _field(cfg, "training.sde", "str", choices=tuple(SDE_NAMES))
    continuous = _field(cfg, "training.continuous", "bool", True)
    kind = SDE_NAMES[sde_name]
    try:
        if kind == "ve":
            sde = VESDE(_field(cfg, "model.sigma_min", "float", 0.01), _field(cfg, "model.sigma_max", "float", 50.0))
        else:
            betas = _field(cfg, "model.beta_min", "float", 0.1), _field(cfg, "model.beta_max", "float", 20.0)
            sde = VPSDE(*betas) if kind == "vp" else SubVPSDE(*betas)
    except OptionError as e:
        raise ConfigError(f"config: {e}") from None
    return sde, kind, continuous


# ---------------------------------------------------------------------------- score function


class ScoreSDEScore(nn.Module):
    """A score_sde network as a score function ``score(x, t)``, with score_sde's time labels and scaling.

    Shapes: ``x`` ``[B, C, H, W]`` (on the model's data scale), ``t`` ``[B]`` (or a number) in
    ``[0, 1]`` -> ``[B, C, H, W]``. Differentiable in ``x``. The input is cast to the network's
    dtype and the score back to ``x``'s dtype.

    Args:
        network: the score_sde network ``net(x, labels)``.
        sde: the scoresde SDE (its marginal ``std`` scales the VP/sub-VP continuous outputs).
        kind: ``'vp'``, ``'subvp'`` or ``'ve'``.
        continuous: whether the network was trained with continuous time labels.
        num_scales: ``N``, the number of discrete steps of discrete training.
    """

    def __init__(self, network: nn.Module, sde: SDE, kind: str, continuous: bool, num_scales: int = 1000):
        super().__init__()
        if kind not in ("vp", "subvp", "ve"):
            raise OptionError(f"kind must be 'vp', 'subvp' or 've', got {kind!r}")
        self.network, self.sde, self.kind = network, sde, kind
        self.continuous, self.num_scales = bool(continuous), int(num_scales)
        # continuous labels for sub-VP whatever the training (as score_sde does)
        self.discrete_vp = kind == "vp" and not continuous
        if self.discrete_vp:
            self.register_buffer("discrete_std", self.discrete_vp_std(sde.beta_min, sde.beta_max, num_scales), persistent=False)

    @staticmethod
    def discrete_vp_std(beta_min: float, beta_max: float, N: int) -> Tensor:
        """score_sde's DDPM table ``sqrt(1 - alphas_cumprod)`` ``[N]`` (float32, computed as the reference does)."""
        betas = torch.linspace(beta_min / N, beta_max / N, N, dtype=torch.float32)
        return torch.sqrt(1.0 - torch.cumprod(1.0 - betas, dim=0))

    def labels(self, t: Tensor) -> Tensor:
        """The network's conditioning input for times ``t`` ``[B]`` (float, or integer indices for discrete VE)."""
        N = self.num_scales
        if self.kind == "ve":
            if self.continuous:
                return self.sde.sigma_min * (self.sde.sigma_max / self.sde.sigma_min) ** t
            return torch.round((self.sde.T - t) * (N - 1)).long()
        return t * (N - 1) if self.discrete_vp else t * 999

    def forward(self, x: Tensor, t: Union[Tensor, float]) -> Tensor:
        """Score ``grad_x log p_t(x)``: ``x`` ``[B, C, H, W]``, ``t`` ``[B]`` -> ``[B, C, H, W]``."""
        t = as_time(t, x, self.sde.T, check_range=False)
        param = next(self.network.parameters())
        xin = x.to(param.dtype) if x.dtype != param.dtype else x
        t_in = t.to(param.dtype) if t.dtype != param.dtype else t
        labels = self.labels(t_in)
        out = self.network(xin, labels)
        if self.kind == "ve":
            return out.to(x.dtype)
        if self.discrete_vp:
            std = self.discrete_std.to(labels.device)[labels.long()]
        else:
            std = self.sde.marginal_coeffs(t_in)[1]
        return (-out / append_dims(std.to(out.dtype), out.ndim)).to(x.dtype)


# ---------------------------------------------------------------------------- checkpoints


def _strip_prefix(state: Mapping[str, Any]) -> Dict[str, Any]:
    keys = list(state)
    if keys and all(isinstance(k, str) and k.startswith("module.") for k in keys):
        return {k[len("module."):]: v for k, v in state.items()}
    return dict(state)


def _read_checkpoint(path: Path, use_ema: bool) -> Tuple[Dict[str, Tensor], Optional[Dict[str, Any]], Dict[str, Any]]:
    """``(model state dict without 'module.', ema dict or None, info)`` from a checkpoint or bare state-dict file."""
    blob = load_weights_file(path, "checkpoint")
    if isinstance(blob, dict) and isinstance(blob.get("model"), Mapping):
        state, ema = blob["model"], blob.get("ema")
        info = {"format": "score_sde checkpoint", "step": _as_int(blob.get("step"))}
        if use_ema and not isinstance(ema, Mapping):
            raise CheckpointError(f"checkpoint {path} has no 'ema' entry; pass use_ema=False to load its raw 'model' weights")
    elif isinstance(blob, dict) and blob and all(isinstance(v, Tensor) for v in blob.values()):
        if use_ema:
            raise CheckpointError(
                f"{path} is a bare state dict (the model's weights only, no EMA); pass use_ema=False to load these weights as they are"
            )
        state, ema, info = blob, None, {"format": "state dict", "step": None}
    else:
        raise CheckpointError(
            f"{path} is not a score_sde checkpoint: expected a dict with 'model' (a state dict) and 'ema' entries, "
            "or a bare state dict of tensors"
        )
    bad = [k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if bad:
        raise CheckpointError(f"checkpoint {path}: the model state dict holds a non-tensor entry {bad[0]!r}")
    return _strip_prefix(state), (dict(ema) if use_ema else None), info


def _as_int(v: Any) -> Optional[int]:
    if isinstance(v, Tensor) and v.numel() == 1:
        v = v.item()
    return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def _fit_message(ours: Dict[str, Tensor], theirs: Mapping[str, Tensor]) -> Optional[str]:
    """Why a checkpoint's state dict does not fit the network (first differing shape, missing, unexpected), or None."""
    parts: List[str] = []
    differing = [k for k in theirs if k in ours and tuple(theirs[k].shape) != tuple(ours[k].shape)]
    if differing:
        k = differing[0]
        parts.append(
            f"parameter {k!r} has shape {tuple(theirs[k].shape)} in the checkpoint but {tuple(ours[k].shape)} in the network "
            f"the config builds" + (f" ({len(differing) - 1} more shapes differ)" if len(differing) > 1 else "")
        )
    for what, names in (("missing from the checkpoint", [k for k in ours if k not in theirs]),
                        ("unexpected in the checkpoint", [k for k in theirs if k not in ours])):
        if names:
            more = f" and {len(names) - 5} more" if len(names) > 5 else ""
            parts.append(f"{len(names)} keys {what}: {', '.join(repr(n) for n in names[:5])}{more}")
    return "; ".join(parts) or None


def _apply_ema(state: Dict[str, Tensor], ema: Mapping[str, Any], trainable: List[str], path: Path) -> Dict[str, Tensor]:
    """``state`` with its trainable parameters replaced by ``ema['shadow_params']`` (in the checkpoint's key order)."""
    shadow = ema.get("shadow_params")
    if not isinstance(shadow, (list, tuple)) or not all(isinstance(s, Tensor) for s in shadow):
        raise CheckpointError(f"checkpoint {path}: ema['shadow_params'] must be a list of tensors")
    if len(shadow) != len(trainable):
        raise CheckpointError(
            f"checkpoint {path}: the EMA holds {len(shadow)} tensors but the model has {len(trainable)} trainable parameters"
        )
    out = dict(state)
    for name, s in zip(trainable, shadow):
        if tuple(s.shape) != tuple(state[name].shape):
            raise CheckpointError(
                f"checkpoint {path}: EMA tensor for parameter {name!r} has shape {tuple(s.shape)}, expected {tuple(state[name].shape)}"
            )
        out[name] = s
    return out


def from_score_sde(checkpoint: PathLike, config: ConfigLike, *, use_ema: bool = True,
                   device: Union[str, torch.device] = "cpu") -> PretrainedModel:
    """Load a score_sde_pytorch checkpoint as a scoresde model.

    Args:
        checkpoint: path of ``checkpoint_N.pth`` (``{'model', 'ema', 'optimizer', 'step'}``) or of a bare
            state dict of the model's weights (then ``use_ema=False``).
        config: the name of a published config (``"vp/cifar10_ddpmpp_continuous"``, ``"ve/cifar10_ncsnpp_continuous"``,
            ... see :data:`~scoresde.pretrained.score_sde_configs.PUBLISHED_CONFIGS`; the released folder names
            ``vp/cifar10_ddpm`` etc. work too), a path to a JSON file with score_sde's ``model``, ``data`` and
            ``training`` fields, or such a dict.
        use_ema: load the EMA weights (default; the ones the paper evaluates) instead of the raw ``model`` ones.
        device: where to put the network.

    Returns:
        A :class:`PretrainedModel` whose ``score_fn(x, t)`` takes ``x`` ``[B, C, H, W]`` on the data scale
        (``[-1, 1]`` if ``centered`` else ``[0, 1]``) and ``t`` ``[B]``. The network is in eval mode with
        frozen parameters (``requires_grad`` False; call ``model.network.requires_grad_(True)`` to fine-tune);
        the score stays differentiable in ``x``.

    Raises:
        OptionError: a bad argument (non-bool ``use_ema``, bad ``device``, unknown config name: the message
            lists the valid names).
        ConfigError: a config field that is missing or invalid, or an unsupported model (NCSN, NCSNv2).
        CheckpointError: the file is missing, truncated or corrupt, needs code execution to load (refused),
            or does not fit the config (the message names the first parameter whose shape differs, with both
            shapes, and any missing or unexpected keys).
    """
    if not isinstance(use_ema, bool):
        raise OptionError(f"use_ema must be True or False, got {use_ema!r}")
    dev = check_device(device)
    cfg, label = resolve_config(config)
    name, kw = _network_kwargs(cfg)
    sde, kind, continuous = sde_from_config(cfg)
    path = check_path(checkpoint, "checkpoint")
    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        network = DDPMUNet(**kw) if name == "ddpm" else NCSNpp(**kw)
    ours = network.state_dict()
    nbytes = sum(t.numel() * t.element_size() for t in ours.values())
    check_memory(nbytes, f"the {name} network of config {label}")
    state, ema, info = _read_checkpoint(path, use_ema)
    problem = _fit_message(ours, state)
    if problem:
        raise CheckpointError(f"checkpoint {path} does not fit the config ({label}): {problem}")
    if use_ema:
        trainable = {n for n, p in network.named_parameters() if p.requires_grad}
        state = _apply_ema(state, ema, [k for k in state if k in trainable], path)
        info["ema_decay"], info["ema_num_updates"] = ema.get("decay"), ema.get("num_updates")
    network.to_empty(device=torch.device("cpu"))
    network.load_state_dict(state, strict=True)
    network.requires_grad_(False)  # an inference model: scores stay differentiable in x
    network.to(dev).eval()
    score = ScoreSDEScore(network, sde, kind, continuous, kw["num_scales"]).to(dev).eval()
    info.update(weights="ema" if use_ema else "model", model=name, sde=kind, continuous=continuous)
    return PretrainedModel(
        sde=sde, score_fn=score, network=network, event_shape=(kw["num_channels"], kw["image_size"], kw["image_size"]),
        centered=kw["centered"], data_range=(-1.0, 1.0) if kw["centered"] else (0.0, 1.0),
        source=f"score_sde:{path} ({label})", num_classes=None, config=cfg, info=info,
        data=_DATASETS.get(str(cfg["data"].get("dataset", "")).lower(), cfg["data"].get("dataset")), discrete_levels=256,
        dequantization=(-1.0, 1.0) if kw["centered"] else (0.0, 1.0),  # their likelihood: (255 k + u) / 256, scaled
    )


#: score_sde's data set names -> scoresde's (``--data``); others are kept as they are.
_DATASETS = {"cifar10": "cifar10"}


__all__ = ["from_score_sde", "build_score_sde_network", "sde_from_config", "resolve_config", "ScoreSDEScore"]
