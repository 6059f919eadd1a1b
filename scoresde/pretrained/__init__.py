"""Importers of published score models.

Each importer rebuilds a foreign network, loads its published weights (safely: tensors only, never
code from the file) and returns a :class:`PretrainedModel`: the network wrapped as a scoresde score
function ``score_fn(x, t)`` together with its SDE and data conventions, ready for
:func:`scoresde.sample` and the likelihood.

* :func:`from_score_sde`: checkpoints of score_sde_pytorch (NCSN++, DDPM++ and DDPM; VE, VP and sub-VP).
* :func:`from_diffusers`: diffusers pipeline folders (DDPM, DDIM and other DDPM-trained schedulers; score-SDE VE);
  needs the ``diffusers`` extra, imported only when called.

Example::

    from scoresde.pretrained import from_score_sde
    model = from_score_sde("checkpoint_8.pth", "vp/cifar10_ddpmpp_continuous")
    x = scoresde.sample(model.sde, model.score_fn, (16, *model.event_shape), solver="ddim", steps=50)
"""

from .base import PretrainedModel, load_weights_file
from .diffusers import DiffusersScore, from_diffusers
from .score_sde import ScoreSDEScore, build_score_sde_network, from_score_sde, resolve_config, sde_from_config
from .score_sde_configs import ALIASES, PUBLISHED_CONFIGS, config_names, published_config

__all__ = [
    "PretrainedModel", "load_weights_file", "from_score_sde", "build_score_sde_network", "sde_from_config",
    "resolve_config", "ScoreSDEScore", "PUBLISHED_CONFIGS", "ALIASES", "config_names", "published_config",
    "from_diffusers", "DiffusersScore",
]
