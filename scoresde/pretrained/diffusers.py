"""Import unconditional pixel-space pipelines of Hugging Face diffusers (DDPM, DDIM, score-SDE VE).

A pipeline folder, as ``DDPMPipeline`` / ``DDIMPipeline`` / ``ScoreSdeVePipeline.save_pretrained`` writes
it, holds ``model_index.json``, ``unet/`` (``config.json`` and ``diffusion_pytorch_model.safetensors`` or
``.bin``) and ``scheduler/scheduler_config.json``. :func:`from_diffusers` loads the ``UNet2DModel`` and
wraps it as a scoresde score function with the SDE its scheduler describes:

* **Discrete-time VP** (``DDPMScheduler``, ``DDIMScheduler``, ``PNDMScheduler`` and every scheduler whose
  config carries the DDPM training fields ``num_train_timesteps``, ``beta_schedule``, ``beta_start``,
  ``beta_end``, ``trained_betas``, ``prediction_type``): the UNet was trained at integer timesteps
  ``n = 0 .. N-1`` with diffusers' own table ``alphas_cumprod`` (read from the scheduler diffusers builds
  from the config, so every beta schedule is reproduced bit for bit). The SDE is
  :class:`~scoresde.sde.discrete.DiscreteVPSDE`: its kernel passes through the table at ``t_n = (n + 1) / N``
  and interpolates ``log sigma`` (``sigma = sqrt((1 - abar) / abar)``) linearly in between, as
  k-diffusion's discrete wrappers do (``k_diffusion/external.py``: ``DiscreteSchedule`` maps a noise level
  to a fractional timestep by linear interpolation in ``log sigma``; ``DiscreteEpsDDPMDenoiser`` calls the
  model there). Under this SDE the noise level of time ``t`` is that of the fractional timestep
  ``n(t) = t N - 1``, so the UNet is called at ``n(t)`` (clamped to ``[0, N - 1]``: below the first
  timestep it sees ``n = 0``, as k-diffusion clamps too); a UNet with a learned (embedding-table) time
  embedding gets ``round(n(t))``. The score is ``-eps_hat / std(t)``, with ``eps_hat`` the network's
  output for ``prediction_type="epsilon"``, ``(x - scale x0_hat) / std`` for ``"sample"`` and
  ``scale v + std x`` for ``"v_prediction"``.

  Why not the continuous ``VPSDE(beta_min=N beta_start, beta_max=N beta_end)``: it matches a linear table
  only approximately (``exp(-integral of beta)`` against ``prod (1 - beta)``: for the default 1e-4 .. 0.02
  schedule at ``t_n = (n + 1) / N``, ``abar`` is 7% off at the last timestep and ``std`` 5% off at the first)
  and does not describe the other schedules at all; with the table's own kernel, DDIM and ancestral sampling
  on the table's timesteps are exactly diffusers'.
  A terminal zero-SNR table (``rescale_betas_zero_snr``, ``abar_{N-1} = 0``, an infinite noise level) gets the
  finite ``abar_{N-1}`` that continues ``log sigma`` linearly from the two entries before it (about 1e-9 for
  the linear schedule; diffusers' Euler scheduler uses ``2^-24`` instead, which there lies above ``abar_{N-2}``
  and would make the noise levels non-monotone).

* **Score-SDE VE** (``ScoreSdeVeScheduler``): ``VESDE(sigma_min, sigma_max)`` from the scheduler config;
  the UNet is called with ``sigma(t) = sigma_min (sigma_max / sigma_min)^t``, as ``ScoreSdeVePipeline``
  does, and its output (divided by ``sigma`` inside a Fourier-embedding ``UNet2DModel``) is the score.
  scoresde's VE kernel has ``std(t)^2 = sigma(t)^2 - sigma_min^2``, so ``std(0) = 0``; diffusers'
  pipeline instead treats ``sigma_min`` as the last noise level and ends with a jump from it to noise-free
  samples (the data is then in ``[0, 1]``).

Weights: ``.safetensors`` (preferred) through ``UNet2DModel.from_pretrained`` with ``use_safetensors=True``
(no pickle involved); a ``.bin`` file is never handed to diffusers' loader (whose ``torch.load`` is safe only
in recent versions) but read with :func:`scoresde.pretrained.base.load_weights_file`, which rebuilds tensors
only and runs no code from the file. Nothing is downloaded.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import torch
from torch import Tensor, nn

from .._utils import append_dims, as_time, check_memory
from .._validation import integer
from ..errors import CheckpointError, OptionError
from ..sde import SDE, VESDE
from ..sde.discrete import DiscreteVPSDE
from .base import PathLike, PretrainedModel, check_device, load_weights_file
from .score_sde import _fit_message

#: Config fields of a scheduler for a DDPM-trained (discrete-time VP) model.
DDPM_FIELDS = ("num_train_timesteps", "beta_schedule", "beta_start", "beta_end", "trained_betas", "prediction_type")
#: Schedulers of sigma-conditioned score models.
VE_SCHEDULERS = ("ScoreSdeVeScheduler",)
#: What a DDPM-family UNet may predict.
PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")
INSTALL_HINT = "install the diffusers extra: pip install 'scoresde[diffusers]'"
_WEIGHTS = "diffusion_pytorch_model"
_MAX_TIMESTEPS = 10**6


def _import_diffusers() -> Any:
    try:
        import diffusers
    except ImportError:
        raise OptionError(f"from_diffusers needs the diffusers package; {INSTALL_HINT}") from None
    return diffusers


# ---------------------------------------------------------------------------- score function


class DiffusersScore(nn.Module):
    """A diffusers ``UNet2DModel`` as a score function ``score(x, t)``.

    Shapes: ``x`` ``[B, C, H, W]`` (on the model's data scale), ``t`` ``[B]`` (or a number) in ``[0, 1]``
    -> ``[B, C, H, W]``. Differentiable in ``x``. The input is cast to the network's dtype and the score
    back to ``x``'s dtype.

    Args:
        unet: the ``UNet2DModel``.
        sde: :class:`~scoresde.sde.discrete.DiscreteVPSDE` (``kind="vp"``) or :class:`~scoresde.sde.VESDE` (``kind="ve"``).
        kind: ``"vp"`` (a DDPM-trained model called at fractional timesteps) or ``"ve"`` (called with ``sigma(t)``).
        prediction_type: for ``"vp"``: ``"epsilon"``, ``"sample"`` or ``"v_prediction"``.
        quantize: for ``"vp"``: round the timestep to an integer (a UNet with a learned time-embedding table).
    """

    def __init__(self, unet: nn.Module, sde: SDE, kind: str, prediction_type: str = "epsilon", quantize: bool = False):
        super().__init__()
        if kind not in ("vp", "ve"):
            raise OptionError(f"kind must be 'vp' or 've', got {kind!r}")
        if kind == "vp" and prediction_type not in PREDICTION_TYPES:
            raise OptionError(f"prediction_type must be one of {', '.join(PREDICTION_TYPES)}, got {prediction_type!r}")
        if kind == "vp" and not hasattr(sde, "timestep"):
            raise OptionError(f"kind='vp' needs a DiscreteVPSDE (an SDE with timestep(t)), got {type(sde).__name__}")
        if kind == "ve" and not hasattr(sde, "sigma"):
            raise OptionError(f"kind='ve' needs a VESDE (an SDE with sigma(t)), got {type(sde).__name__}")
        self.unet, self.sde, self.kind = unet, sde, kind
        self.prediction_type, self.quantize = prediction_type, bool(quantize)

    def timesteps(self, t: Tensor) -> Tensor:
        """What the UNet is called with at times ``t`` ``[B]``: ``sigma(t)`` (VE) or the timestep ``n(t)`` (VP), ``[B]``."""
        work = t if t.dtype == torch.float64 else t.float()
        if self.kind == "ve":
            return self.sde.sigma(work)
        n = self.sde.timestep(work).clamp(0, self.sde.num_timesteps - 1)
        return n.round().long() if self.quantize else n

    def forward(self, x: Tensor, t: Union[Tensor, float]) -> Tensor:
        """Score ``grad_x log p_t(x)``: ``x`` ``[B, C, H, W]``, ``t`` ``[B]`` -> ``[B, C, H, W]``."""
        t = as_time(t, x, self.sde.T, check_range=False)
        param = next(self.unet.parameters())
        xin = x.to(param.dtype) if x.dtype != param.dtype else x
        out = self.unet(xin, self.timesteps(t)).sample
        if self.kind == "ve":
            return out.to(x.dtype)
        scale, std = (append_dims(c, out.ndim).to(out.dtype) for c in self.sde.marginal_coeffs(t))
        if self.prediction_type == "epsilon":
            eps = out
        elif self.prediction_type == "sample":
            eps = (xin - scale * out) / std
        else:  # v = scale eps - std x0, x = scale x0 + std eps  =>  eps = scale v + std x
            eps = scale * out + std * xin
        return (-eps / std).to(x.dtype)


# ---------------------------------------------------------------------------- folder, JSON, scheduler


def _check_folder(folder: Any) -> Path:
    if isinstance(folder, (bytes, bool)) or not isinstance(folder, (str, os.PathLike)):
        raise OptionError(f"folder must be a path (str or os.PathLike), got {type(folder).__name__} {folder!r}")
    root = Path(folder).expanduser()
    if not root.exists():
        raise CheckpointError(f"no diffusers pipeline folder at {root}")
    if not root.is_dir():
        raise CheckpointError(f"{root} is not a folder (expected a diffusers pipeline folder with model_index.json)")
    return root


def _read_json(path: Path, what: str) -> Dict[str, Any]:
    """The JSON object in ``path``, or a one-line :class:`CheckpointError` naming the file."""
    if not path.is_file():
        raise CheckpointError(f"no {what} file at {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise CheckpointError(f"{what} file {path} is not readable JSON: {_one_line(e)}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{what} file {path} must hold a JSON object, got {type(data).__name__}")
    return data


def _check_components(root: Path, index: Dict[str, Any]) -> str:
    """Refuse pipelines with more than a UNet2DModel and a scheduler; return the pipeline's class name."""
    path = root / "model_index.json"
    extra = sorted(k for k, v in index.items() if not k.startswith("_") and k not in ("unet", "scheduler") and v not in (None, [None, None]))
    pipeline = str(index.get("_class_name", "pipeline"))
    if extra:
        raise CheckpointError(
            f"{path}: {pipeline} has components {', '.join(extra)} besides unet and scheduler (a latent or conditional "
            "pipeline); from_diffusers imports unconditional pixel-space pipelines (DDPMPipeline, DDIMPipeline, ScoreSdeVePipeline)"
        )
    entry = index.get("unet")
    if not (isinstance(entry, (list, tuple)) and len(entry) == 2 and entry[1] == "UNet2DModel"):
        raise CheckpointError(f"{path}: the pipeline's unet must be a diffusers UNet2DModel, got {entry!r}")
    return pipeline


@dataclass
class _Schedule:
    name: str
    kind: str
    sde: SDE
    prediction_type: Optional[str]
    config: Dict[str, Any]
    info: Dict[str, Any] = field(default_factory=dict)


def _scheduler_class(diffusers: Any, name: Any, path: Path) -> type:
    cls = getattr(diffusers, name, None) if isinstance(name, str) and re.fullmatch(r"[A-Za-z_]\w*", name) else None
    if not (isinstance(cls, type) and issubclass(cls, diffusers.SchedulerMixin)):
        raise CheckpointError(f"{path}: {name!r} is not a scheduler class of diffusers {diffusers.__version__}")
    return cls


def _read_scheduler(root: Path, index: Dict[str, Any], diffusers: Any) -> _Schedule:
    """The SDE (and prediction type) a pipeline's scheduler describes; refuses schedulers of other model kinds."""
    path = root / "scheduler" / "scheduler_config.json"
    raw = _read_json(path, "scheduler config")
    entry = index.get("scheduler")
    name = raw.get("_class_name") or (entry[1] if isinstance(entry, (list, tuple)) and len(entry) == 2 else None)
    cls = _scheduler_class(diffusers, name, path)
    if "num_train_timesteps" in raw:  # bounded before diffusers builds tables of that length
        integer(raw["num_train_timesteps"], f"{path}: num_train_timesteps", minimum=2, maximum=_MAX_TIMESTEPS, error=CheckpointError)
    try:
        sched = cls.from_config(raw)
    except (ValueError, TypeError, KeyError, NotImplementedError, RuntimeError) as e:
        raise CheckpointError(f"{path}: diffusers cannot build {name} from this config: {_one_line(e)}") from None
    cfg = dict(sched.config)
    try:
        if name in VE_SCHEDULERS:
            sde = VESDE(cfg["sigma_min"], cfg["sigma_max"])
            info = {k: cfg.get(k) for k in ("sigma_min", "sigma_max", "snr", "correct_steps", "sampling_eps")}
            return _Schedule(name, "ve", sde, None, raw, info)
        if not all(k in cfg for k in DDPM_FIELDS):
            raise CheckpointError(
                f"{root}: scheduler {name} is not supported: from_diffusers imports DDPM-trained models (a scheduler whose "
                f"config has the fields {', '.join(DDPM_FIELDS)}, e.g. DDPMScheduler, DDIMScheduler, PNDMScheduler) and "
                f"score-SDE VE models ({', '.join(VE_SCHEDULERS)})"
            )
        prediction_type = cfg["prediction_type"]
        if prediction_type not in PREDICTION_TYPES:
            raise CheckpointError(f"{path}: prediction_type {prediction_type!r} is not one of {', '.join(PREDICTION_TYPES)}")
        if cfg.get("timestep_type", "discrete") != "discrete":
            raise CheckpointError(f"{path}: timestep_type {cfg['timestep_type']!r} is not supported (only discrete timesteps)")
        abar = getattr(sched, "alphas_cumprod", None)
        if not (isinstance(abar, Tensor) and abar.ndim == 1 and abar.shape[0] == cfg["num_train_timesteps"]):
            raise CheckpointError(f"{path}: {name} did not build an alphas_cumprod table of {cfg['num_train_timesteps']} entries")
        abar = abar.detach().to(torch.float64).clone()
        zero_snr = bool(abar[-1] <= 0) and abar.shape[0] >= 3 and bool(abar[-2] > 0)
        if zero_snr:  # zero terminal SNR: continue log sigma linearly from the two entries before the last
            log_sigma = 0.5 * (torch.log1p(-abar[-3:-1]) - torch.log(abar[-3:-1]))
            abar[-1] = torch.sigmoid(-2 * (2 * log_sigma[1] - log_sigma[0]))
        sde = DiscreteVPSDE(abar)
    except OptionError as e:
        raise CheckpointError(f"{path}: {e}") from None
    info = {k: cfg.get(k) for k in ("num_train_timesteps", "beta_schedule", "beta_start", "beta_end", "clip_sample", "thresholding")}
    info["zero_terminal_snr_replaced"] = zero_snr
    return _Schedule(name, "vp", sde, prediction_type, raw, info)


# ---------------------------------------------------------------------------- the UNet


def _unet_config(unet_dir: Path) -> Dict[str, Any]:
    """The UNet's ``config.json``, checked to describe an unconditional ``UNet2DModel`` whose output is shaped like its input."""
    path = unet_dir / "config.json"
    if not unet_dir.is_dir():
        raise CheckpointError(f"no unet folder at {unet_dir}")
    cfg = _read_json(path, "unet config")
    name = cfg.get("_class_name", "UNet2DModel")
    if name != "UNet2DModel":
        raise CheckpointError(f"{path}: only UNet2DModel (an unconditional pixel-space UNet) is supported, got {name}")
    if cfg.get("num_class_embeds") is not None or cfg.get("class_embed_type") is not None:
        raise CheckpointError(f"{path}: class-conditional UNets (num_class_embeds / class_embed_type) are not supported")
    c_in, c_out = cfg.get("in_channels", 3), cfg.get("out_channels", 3)
    if c_in != c_out:
        raise CheckpointError(
            f"{path}: out_channels {c_out} != in_channels {c_in} (a UNet that also predicts a variance is not supported)"
        )
    return cfg


def _event_shape(cfg: Dict[str, Any], path: Path) -> Tuple[int, int, int]:
    size, c = cfg.get("sample_size"), cfg.get("in_channels", 3)
    hw = [size, size] if isinstance(size, int) and not isinstance(size, bool) else size
    if not (isinstance(hw, (list, tuple)) and len(hw) == 2 and all(isinstance(s, int) and s > 0 for s in hw)):
        raise CheckpointError(f"{path}: sample_size must be an image size (an integer or [H, W]), got {size!r}")
    if not (isinstance(c, int) and c > 0):
        raise CheckpointError(f"{path}: in_channels must be a positive integer, got {c!r}")
    return (c, int(hw[0]), int(hw[1]))


def _one_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _check_size(unet_dir: Path, cfg: Dict[str, Any], diffusers: Any) -> None:
    """Build the UNet the config describes on the meta device (nothing allocated) and refuse one too big for memory."""
    try:
        with torch.random.fork_rng(devices=[]), torch.device("meta"):
            meta = diffusers.UNet2DModel.from_config(cfg)
    except (ValueError, TypeError, KeyError, AttributeError, RuntimeError) as e:
        raise CheckpointError(f"{unet_dir / 'config.json'}: diffusers cannot build the UNet2DModel: {_one_line(e)}") from None
    nbytes = sum(v.numel() * v.element_size() for v in meta.state_dict().values())
    check_memory(nbytes, f"the UNet2DModel of {unet_dir / 'config.json'}")


_OLD_ATTENTION_NAMES = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


def _rename_old_keys(unet: nn.Module, state: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """``state`` with the names of earlier diffusers versions mapped to today's: attention weights
    ``query``/``key``/``value``/``proj_attn`` become ``to_q``/``to_k``/``to_v``/``to_out.0`` (as ``from_pretrained``
    renames them) and the Fourier projection's ``W`` (saved beside its alias ``weight``) becomes ``weight``."""
    ours = unet.state_dict()
    for prefix in {k[: -len("W")] for k in (*ours, *state) if k.endswith(".W")}:
        have = [n for n in ("W", "weight") if prefix + n in state]
        want = [n for n in ("W", "weight") if prefix + n in ours]  # the names this version's module has
        if not have or not want or have == want:
            continue
        value = state[prefix + have[-1]]
        for name in have:
            del state[prefix + name]
        for name in want:
            state[prefix + name] = value
    for path, module in unet.named_modules():
        if not getattr(module, "_from_deprecated_attn_block", False):
            continue
        for old, new in _OLD_ATTENTION_NAMES.items():
            for kind in ("weight", "bias"):
                old_key, new_key = f"{path}.{old}.{kind}", f"{path}.{new}.{kind}"
                if old_key in state and new_key not in state:
                    state[new_key] = state.pop(old_key)
    return state


def _load_unet(unet_dir: Path, cfg: Dict[str, Any], diffusers: Any) -> Tuple[nn.Module, Path, str]:
    """``(UNet2DModel with the weights, weights file, format)``; safetensors through diffusers, ``.bin`` through the safe loader."""
    st, st_index, binary = (unet_dir / f"{_WEIGHTS}{ext}" for ext in (".safetensors", ".safetensors.index.json", ".bin"))
    if st.is_file() or st_index.is_file():
        path = st if st.is_file() else st_index
        try:
            with torch.random.fork_rng(devices=[]):
                unet, loading = diffusers.UNet2DModel.from_pretrained(
                    unet_dir, use_safetensors=True, local_files_only=True, output_loading_info=True,
                    low_cpu_mem_usage=diffusers.utils.is_accelerate_available(),
                )
        except (OSError, ValueError, RuntimeError, KeyError, TypeError) as e:
            raise CheckpointError(f"unet weights {path} could not be loaded: {_one_line(e)}") from None
        problems = [f"{len(v)} keys {what}: {', '.join(map(repr, v[:5]))}" for what, v in
                    (("missing from the file", loading.get("missing_keys", [])),
                     ("unexpected in the file", loading.get("unexpected_keys", [])),
                     ("of the wrong shape", loading.get("mismatched_keys", []))) if v]
        if problems:
            raise CheckpointError(f"unet weights {path} do not fit {unet_dir / 'config.json'}: {'; '.join(problems)}")
        return unet, path, "safetensors"
    if not binary.is_file():
        raise CheckpointError(f"no unet weights in {unet_dir}: expected {_WEIGHTS}.safetensors or {_WEIGHTS}.bin")
    state = load_weights_file(binary, "unet weights")  # tensors only: no code from the file runs
    if not (isinstance(state, dict) and state and all(isinstance(k, str) and isinstance(v, Tensor) for k, v in state.items())):
        raise CheckpointError(f"unet weights {binary} must hold a state dict (parameter names -> tensors)")
    try:
        with torch.random.fork_rng(devices=[]):
            unet = diffusers.UNet2DModel.from_config(cfg)
    except (ValueError, TypeError, KeyError, RuntimeError) as e:
        raise CheckpointError(f"{unet_dir / 'config.json'}: diffusers cannot build the UNet2DModel: {_one_line(e)}") from None
    state = _rename_old_keys(unet, dict(state))
    problem = _fit_message(unet.state_dict(), state)
    if problem:
        raise CheckpointError(f"unet weights {binary} do not fit {unet_dir / 'config.json'}: {problem}")
    unet.load_state_dict(state, strict=True)
    return unet, binary, "bin"


# ---------------------------------------------------------------------------- entry point


def from_diffusers(folder: PathLike, *, device: Union[str, torch.device] = "cpu") -> PretrainedModel:
    """Load a diffusers pipeline folder (DDPM, DDIM, PNDM, ..., score-SDE VE) as a scoresde model.

    Args:
        folder: a folder as ``DDPMPipeline`` / ``DDIMPipeline`` / ``ScoreSdeVePipeline.save_pretrained`` writes it:
            ``model_index.json``, ``unet/`` (``config.json`` + ``diffusion_pytorch_model.safetensors`` or ``.bin``)
            and ``scheduler/scheduler_config.json``. Nothing is downloaded.
        device: where to put the network.

    Returns:
        A :class:`PretrainedModel`: ``sde`` a :class:`~scoresde.sde.discrete.DiscreteVPSDE` (DDPM-trained models) or a
        :class:`~scoresde.sde.VESDE` (``ScoreSdeVeScheduler``); ``score_fn(x, t)`` (a :class:`DiffusersScore`) takes
        ``x`` ``[B, C, H, W]`` on the data scale (``[-1, 1]`` for DDPM-trained models, ``[0, 1]`` for score-SDE VE,
        as the pipelines output) and ``t`` ``[B]``; ``network`` the ``UNet2DModel`` in eval mode with frozen
        parameters (the score stays differentiable in ``x``); ``event_shape`` ``(C, H, W)``. To run on a DDPM
        model's own timesteps ``n``, use the times ``model.sde.time_at_timestep(n)``.

    Raises:
        OptionError: diffusers is not installed, ``folder`` is not a path, or a bad ``device``.
        CheckpointError: a missing folder, ``model_index.json``, ``unet/`` folder, config or weights file; an
            unreadable or corrupt file; weights that do not fit the UNet's config or would need code execution
            to load (refused); a latent or conditional pipeline; a scheduler that is neither DDPM-trained nor
            ``ScoreSdeVeScheduler`` (the message names the folder and the scheduler class). Each message names the file.
    """
    dev = check_device(device)
    root = _check_folder(folder)
    diffusers = _import_diffusers()
    index = _read_json(root / "model_index.json", "model index")
    pipeline = _check_components(root, index)
    schedule = _read_scheduler(root, index, diffusers)
    unet_cfg = _unet_config(root / "unet")
    event_shape = _event_shape(unet_cfg, root / "unet" / "config.json")
    learned = unet_cfg.get("time_embedding_type") == "learned"
    if learned and schedule.kind == "ve":
        raise CheckpointError(f"{root / 'unet' / 'config.json'}: a learned time embedding cannot take the noise levels of {schedule.name}")
    _check_size(root / "unet", unet_cfg, diffusers)
    unet, weights, fmt = _load_unet(root / "unet", unet_cfg, diffusers)
    unet.requires_grad_(False)  # an inference model: scores stay differentiable in x
    unet.to(dev).eval()
    score = DiffusersScore(unet, schedule.sde, schedule.kind, schedule.prediction_type or "epsilon", quantize=learned).to(dev).eval()
    vp = schedule.kind == "vp"
    info = dict(
        pipeline=pipeline, scheduler=schedule.name, kind=schedule.kind, prediction_type=schedule.prediction_type,
        weights=str(weights), format=fmt, diffusers_version=diffusers.__version__,
        saved_with_diffusers=index.get("_diffusers_version"),
        unet_input=("timestep n(t) = t N - 1" + (", rounded" if learned else "")) if vp else "sigma(t)", **schedule.info,
    )
    label = f"{pipeline}, {schedule.name}" + (f", {schedule.prediction_type}" if vp else "")
    config = {"model_index": index, "unet": unet_cfg, "scheduler": schedule.config}
    return PretrainedModel(
        sde=schedule.sde, score_fn=score, network=unet, event_shape=event_shape, centered=vp,
        data_range=(-1.0, 1.0) if vp else (0.0, 1.0), source=f"diffusers:{root} ({label})", num_classes=None,
        config=config, info=info,
    )


__all__ = ["from_diffusers", "DiffusersScore", "DDPM_FIELDS", "PREDICTION_TYPES", "VE_SCHEDULERS"]
