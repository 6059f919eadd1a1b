"""The training configuration: one dataclass holding every option, JSON round-trippable.

Options left at ``None`` are *automatic*: :meth:`TrainConfig.resolve` fills them from the data
(vector data gets an MLP and toy-sized hyper-parameters, images a U-Net and image-sized ones), so
``TrainConfig(data="moons")`` is a complete, sensible configuration. The resolved configuration
is what a checkpoint stores.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ._validation import boolean, choice, finite_float, integer, nonneg_int, positive_int, probability, seed_int
from .errors import ConfigError

SDE_NAMES = ("vp", "subvp", "ve")
NET_KINDS = ("auto", "mlp", "unet")
WEIGHTINGS = ("std2", "likelihood", "min_snr")
PRECISIONS = ("fp32", "bf16")
LR_SCHEDULES = ("constant", "cosine")
PARAMETERIZATIONS = ("eps", "score", "x0")
TIME_SAMPLINGS = ("uniform", "stratified")

#: Fields that define the model, the data stream or the objective. A run can only be resumed
#: with the same values (everything else, e.g. ``steps``, ``lr`` or ``device``, may change).
STRUCTURAL_FIELDS = (
    "data", "n_train", "sde", "sde_kwargs", "net", "net_kwargs", "parameterization", "weighting",
    "importance_sampling", "loss_eps", "batch_size", "seed", "event_shape", "conditional", "p_uncond", "image_size",
    "random_flip", "latent",
)

# Defaults for vector (toy) data and for images; see TrainConfig.resolve.
# The vector recipe is measured in benchmarks/toy_fidelity.py (docs/training.md, "The default recipe for vectors").
_VECTOR_DEFAULTS = dict(steps=5000, batch_size=1024, lr=2e-3, warmup=100, lr_schedule="cosine", ema_decay=0.999,
                        checkpoint_every=1000, time_sampling="stratified", weighting="likelihood", importance_sampling=True)
_IMAGE_DEFAULTS = dict(steps=20000, batch_size=128, lr=2e-4, warmup=1000, lr_schedule="constant", ema_decay=0.9999,
                       checkpoint_every=2000, time_sampling="uniform", weighting="std2", importance_sampling=False)
#: Network arguments of the MLP that vector data gets by default (a smaller, cheaper network than
#: the MLP's own defaults, so that a larger batch fits the same time).
_VECTOR_MLP_KWARGS = dict(hidden=128, depth=2)
#: Network arguments of the U-Net of a latent run: codes (4 x 7 x 7 for MNIST) are too small to halve.
_LATENT_UNET_KWARGS = dict(channels=64, channel_mults=(1,), num_res_blocks=2)
#: Values of options added after a run was stored, as that run used them (see TrainConfig.from_json).
_LEGACY_VALUES = dict(time_sampling="uniform", image_size=None, random_flip=False, latent=None)


@dataclass
class TrainConfig:
    """Every option of a training run.

    Attributes:
        data: a toy set name (``"moons"``, ``"swiss_roll"``, ``"checkerboard"``, ``"rings"``,
            ``"gmm"``), ``"mnist"``, ``"fashion-mnist"`` or a path to a ``.npy``/``.npz`` file of
            shape ``[N, *event]``.
        data_dir: directory holding the real datasets (``None``: the data module's default).
        n_train: number of training examples: toy sets draw this many points, images and arrays
            keep their first ``n_train`` examples (``None``: the data module's default / all).
        sde: ``"vp"``, ``"subvp"`` or ``"ve"``.
        sde_kwargs: keyword arguments of the SDE (``beta_min``/``beta_max`` or
            ``sigma_min``/``sigma_max``). For ``"ve"`` without ``sigma_max``, it is set to the
            largest pairwise distance in the training data (Song & Ermon 2020, technique 1).
        net: ``"auto"`` (MLP for vectors, U-Net for images), ``"mlp"`` or ``"unet"``.
        net_kwargs: keyword arguments of the network; resolved to the network's full ``config``.
        parameterization: what the network predicts: ``"eps"``, ``"score"`` or ``"x0"``.
        weighting: DSM weighting ``lambda(t)``: ``"std2"`` (``std(t)^2``), ``"likelihood"`` (``g(t)^2``) or
            ``"min_snr"`` (``std(t)^2 min(SNR, 5) / SNR``, Hang et al. 2023); ``None``: automatic
            (``"likelihood"`` for vectors, ``"std2"`` for images).
        importance_sampling: sample ``t`` proportionally to the likelihood weighting; ``None``: automatic
            (on for vectors with the likelihood weighting, off otherwise).
        loss_eps: smallest training time.
        time_sampling: ``"uniform"`` (independent training times) or ``"stratified"`` (one time in each
            of ``batch_size`` equal slices of ``[loss_eps, T]``: the same loss in expectation, with less
            noise in each step's gradient); ``None``: automatic.
        steps: number of optimizer steps in total (a resumed run continues up to it).
        batch_size: global batch size (split evenly across processes under DDP).
        lr: peak learning rate of AdamW.
        weight_decay: AdamW's decoupled weight decay (0: plain Adam).
        warmup: linear learning-rate warm-up steps.
        lr_schedule: ``"constant"`` after warm-up, or ``"cosine"`` decay to zero at ``steps``; ``None``:
            automatic (``"cosine"`` for vectors, ``"constant"`` for images).
        grad_clip: clip the global gradient norm to this value (``0``: no clipping).
        ema_decay: decay of the exponential moving average of the weights.
        seed: seed of initialisation, data order and training noise.
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        out: output directory (checkpoint, log, figures).
        checkpoint_every: write ``latest.pt`` every this many steps (and always at the end).
        sample_every: write a sample figure every this many steps (``0``: only at the end;
            ``-1``: never).
        log_every: append a line to ``log.jsonl`` every this many steps.
        precision: ``"fp32"`` or ``"bf16"`` (autocast of the forward pass).
        compile: run the training forward pass through ``torch.compile``.
        event_shape: shape of one example; filled in from the data.
        discrete_levels: number of quantisation levels of the data (256 for 8-bit images) or ``None``.
        data_range: for quantised data, ``[lo, hi]``: level ``k`` sits at ``lo + (hi - lo) k / (levels - 1)``.
        conditional: train a class-conditional network on the data's labels (MNIST digits, the toy
            sets' mixture components, the ``y`` array of an ``.npz``); ``net_kwargs["num_classes"]`` is
            set from the labels.
        p_uncond: with ``conditional``, the probability of replacing a label by the null label (label
            dropout), so that the network also learns the unconditional score for classifier-free guidance.
        image_size: for ``data="folder:PATH"``, centre-crop and resize every image to ``image_size`` squared.
        random_flip: flip each training image horizontally with probability 1/2 (what score_sde's configs do
            for CIFAR-10 and CelebA-HQ; images only).
        latent: the file of an autoencoder (``scoresde train-autoencoder``): the score SDE is then trained on
            the codes of ``data`` (a latent score SDE, :mod:`scoresde.latent`), and the run keeps a copy of it.
    """

    data: str = "moons"
    data_dir: Optional[str] = None
    n_train: Optional[int] = None
    sde: str = "vp"
    sde_kwargs: Dict[str, float] = field(default_factory=dict)
    net: str = "auto"
    net_kwargs: Dict[str, Any] = field(default_factory=dict)
    parameterization: str = "eps"
    weighting: Optional[str] = None
    importance_sampling: Optional[bool] = None
    loss_eps: float = 1e-5
    time_sampling: Optional[str] = None
    steps: Optional[int] = None
    batch_size: Optional[int] = None
    lr: Optional[float] = None
    weight_decay: float = 0.0
    warmup: Optional[int] = None
    lr_schedule: Optional[str] = None
    grad_clip: float = 1.0
    ema_decay: Optional[float] = None
    seed: int = 0
    device: str = "auto"
    out: str = "run"
    checkpoint_every: Optional[int] = None
    sample_every: Optional[int] = None
    log_every: int = 100
    precision: str = "fp32"
    compile: bool = False
    event_shape: Optional[List[int]] = None
    discrete_levels: Optional[int] = None
    data_range: Optional[List[float]] = None
    conditional: bool = False
    p_uncond: float = 0.1
    image_size: Optional[int] = None
    random_flip: bool = False
    latent: Optional[str] = None

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> Dict[str, Any]:
        """A JSON-able dict of every field."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def to_json(self) -> str:
        """The configuration as a JSON string (what a checkpoint stores)."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "TrainConfig":
        """Build a configuration from a dict; unknown keys raise :class:`ConfigError`."""
        if not isinstance(d, dict):
            raise ConfigError(f"a training configuration must be a dict, got {type(d).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"unknown training options {unknown}; valid options: {', '.join(sorted(names))}")
        return cls(**d)

    @classmethod
    def from_json(cls, s: str) -> "TrainConfig":
        """Inverse of :meth:`to_json`.

        A stored configuration written before an option existed gets the value its run trained with
        (``time_sampling="uniform"``).
        """
        try:
            d = json.loads(s)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"the stored training configuration is not valid JSON: {e}") from None
        if isinstance(d, dict):
            d = {**_LEGACY_VALUES, **d}
        return cls.from_dict(d)

    def replace(self, **changes: Any) -> "TrainConfig":
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------ validation
    def validate(self) -> "TrainConfig":
        """Check every given option through the shared validators; raise :class:`ConfigError` naming the field.

        Returns ``self``.
        """
        E = dict(error=ConfigError)
        for name, valid in (("sde", SDE_NAMES), ("net", NET_KINDS), ("precision", PRECISIONS),
                            ("parameterization", PARAMETERIZATIONS)):
            choice(getattr(self, name), name, valid, **E)
        for name, valid in (("weighting", WEIGHTINGS), ("lr_schedule", LR_SCHEDULES), ("time_sampling", TIME_SAMPLINGS)):
            choice(getattr(self, name), name, valid, allow_none=True, **E)
        if not isinstance(self.data, str) or not self.data:
            raise ConfigError("data must be a dataset name or a path to a .npy/.npz file")
        for name in ("steps", "batch_size", "n_train", "checkpoint_every"):
            positive_int(getattr(self, name), name, allow_none=True, need="a positive integer", **E)
        positive_int(self.log_every, "log_every", need="a positive integer", **E)
        nonneg_int(self.warmup, "warmup", allow_none=True, need="a non-negative integer", **E)
        if self.sample_every is not None and integer(self.sample_every, "sample_every", **E) < -1:
            raise ConfigError(f"sample_every must be a positive integer, 0 (only at the end) or -1 (never), got {self.sample_every!r}")
        seed_int(self.seed, "seed", **E)
        if self.lr is not None:
            try:
                finite_float(self.lr, "lr", positive=True, maximum=_FLOAT32_MAX, **E)
            except ConfigError:
                raise ConfigError(f"lr must be a positive number the float32 optimizer can hold (<= {_FLOAT32_MAX:.3g}), "
                                  f"got {self.lr!r}") from None
        finite_float(self.weight_decay, "weight_decay", minimum=0.0, maximum=_FLOAT32_MAX, **E)
        if self.lr is not None and self.lr * self.weight_decay > _FLOAT32_MAX:
            raise ConfigError(f"lr * weight_decay = {self.lr * self.weight_decay:.3g} overflows float32; lower one of them")
        finite_float(self.grad_clip, "grad_clip (0 disables clipping)", minimum=0.0, **E)
        if self.ema_decay is not None and not (finite_float(self.ema_decay, "ema_decay", **E) >= 0 and self.ema_decay < 1):
            raise ConfigError(f"ema_decay must lie in [0, 1), got {self.ema_decay!r}")
        if not (0 < finite_float(self.loss_eps, "loss_eps", **E) < 1):
            raise ConfigError(f"loss_eps must lie in (0, 1), got {self.loss_eps!r}")
        if not isinstance(self.sde_kwargs, dict) or not isinstance(self.net_kwargs, dict):
            raise ConfigError("sde_kwargs and net_kwargs must be dicts")
        boolean(self.conditional, "conditional", **E)
        probability(self.p_uncond, "p_uncond", **E)
        if "num_classes" in self.net_kwargs and not self.conditional:
            raise ConfigError("net_kwargs has num_classes but conditional is false; pass conditional=True (--conditional)")
        if not isinstance(self.out, str) or not self.out.strip():
            raise ConfigError(f"out must be a non-empty directory path, got {self.out!r}")
        if self.data_dir is not None and not isinstance(self.data_dir, str):
            raise ConfigError(f"data_dir must be a path (a string) or None, got {self.data_dir!r}")
        boolean(self.compile, "compile", **E)
        boolean(self.random_flip, "random_flip", **E)
        positive_int(self.image_size, "image_size", allow_none=True, need="a positive integer", **E)
        if self.latent is not None:
            if not isinstance(self.latent, str) or not self.latent.strip():
                raise ConfigError(f"latent must be the path of an autoencoder file, got {self.latent!r}")
            if self.random_flip or self.image_size is not None:
                raise ConfigError("random_flip and image_size act on pixels; a latent run trains on the autoencoder's "
                                  "codes: leave them out (or set them when training the autoencoder)")
        if self.image_size is not None and not str(self.data).startswith("folder:"):
            raise ConfigError("image_size applies to data='folder:PATH' (images of other sizes); leave it out for "
                              f"{self.data!r}")
        boolean(self.importance_sampling, "importance_sampling", allow_none=True, **E)
        for key, v in self.sde_kwargs.items():
            finite_float(v, f"sde_kwargs[{key!r}]", **E)
        if self.importance_sampling and self.weighting not in ("likelihood", None):
            raise ConfigError("importance_sampling=True needs weighting='likelihood'")
        if not isinstance(self.device, str) or not (
            self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")
        ):
            raise ConfigError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {self.device!r}")
        return self

    # ------------------------------------------------------------------ automatic values
    def resolve(
        self,
        event_shape: Sequence[int],
        discrete_levels: Optional[int] = None,
        data_range: Optional[Sequence[float]] = None,
    ) -> "TrainConfig":
        """Fill every automatic (``None``) option for data of ``event_shape``; returns a new config.

        Vector data (``event_shape = [D]``) gets an MLP (``hidden=128, depth=2`` unless ``net_kwargs``
        says otherwise) and ``steps=5000, batch_size=1024, lr=2e-3, warmup=100, lr_schedule="cosine",
        ema_decay=0.999``, the ``"likelihood"`` weighting with importance sampling and stratified times;
        images (``[C, H, W]``) get a U-Net and ``steps=20000, batch_size=128, lr=2e-4, warmup=1000,
        lr_schedule="constant", ema_decay=0.9999``, the ``"std2"`` weighting and uniform times.
        ``importance_sampling`` is on by default only with the likelihood weighting (and asking for it
        with the weighting left automatic picks that weighting). ``sample_every`` defaults to
        ``checkpoint_every``. Data paths become absolute.
        """
        self.validate()
        event_shape = [int(s) for s in event_shape]
        is_image = len(event_shape) == 3
        defaults = _IMAGE_DEFAULTS if is_image else _VECTOR_DEFAULTS
        changes: Dict[str, Any] = {
            "event_shape": event_shape,
            "discrete_levels": None if discrete_levels is None else int(discrete_levels),
            "data_range": None if data_range is None else [float(v) for v in data_range],
        }
        for name, value in defaults.items():
            if getattr(self, name) is None and name != "importance_sampling":
                changes[name] = value
        if self.weighting is None and self.importance_sampling:  # importance sampling is for the likelihood weighting
            changes["weighting"] = "likelihood"
        if self.importance_sampling is None:  # on by default only with the likelihood weighting, however it was chosen
            changes["importance_sampling"] = bool(defaults["importance_sampling"]) and changes.get("weighting", self.weighting) == "likelihood"
        if self.net == "auto":
            if len(event_shape) == 1:
                changes["net"] = "mlp"
            elif is_image:
                changes["net"] = "unet"
            else:
                raise ConfigError(
                    f"no default network for examples of shape {tuple(event_shape)}: use vectors [N, D] "
                    "or images [N, C, H, W] (pass net='mlp' or 'unet' explicitly otherwise)"
                )
        if len(event_shape) == 1 and changes.get("net", self.net) == "mlp":
            changes["net_kwargs"] = {**_VECTOR_MLP_KWARGS, **self.net_kwargs}
        if self.latent is not None and changes.get("net", self.net) == "unet":  # small codes: one resolution
            changes["net_kwargs"] = {**_LATENT_UNET_KWARGS, **self.net_kwargs}
        if self.latent is not None:
            changes["latent"] = os.path.abspath(os.path.expanduser(self.latent))
        if self.sample_every is None:
            changes["sample_every"] = changes.get("checkpoint_every", self.checkpoint_every)
        if is_data_path(self.data):
            changes["data"] = os.path.abspath(os.path.expanduser(self.data))
        if self.data_dir is not None:
            changes["data_dir"] = os.path.abspath(os.path.expanduser(self.data_dir))
        return dataclasses.replace(self, **changes)

    @property
    def is_resolved(self) -> bool:
        """Whether :meth:`resolve` has filled the automatic options."""
        return self.event_shape is not None and None not in (
            self.steps, self.batch_size, self.lr, self.warmup, self.ema_decay, self.checkpoint_every, self.sample_every,
            self.time_sampling, self.weighting, self.importance_sampling, self.lr_schedule,
        ) and self.net != "auto"

    def structural_differences(self, other: "TrainConfig") -> List[Tuple[str, Any, Any]]:
        """``(name, self_value, other_value)`` for every structural field that differs."""
        a, b = self.to_dict(), other.to_dict()
        return [(k, a[k], b[k]) for k in STRUCTURAL_FIELDS if a[k] != b[k]]


def is_data_path(spec: str) -> bool:
    """Whether a ``data`` option names a file rather than a built-in dataset."""
    return spec.endswith((".npy", ".npz")) or os.sep in spec


#: Largest finite float32: a learning rate above it cannot even be stored in the optimizer's update.
_FLOAT32_MAX = 3.4028234663852886e38
